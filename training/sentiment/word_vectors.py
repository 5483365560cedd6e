"""Word vectors for the student's vocabulary, read off a pretrained transformer.

Each vocabulary word is run through the transformer on its own (word pieces, mean-pooled
last layer) and the vectors are reduced to the student's embedding size with PCA. The
student's embedding table then starts from what the transformer knows about every word,
including the many IMDB words that occur too rarely to be learnt from the labels alone.
Written in word2vec text format, read by ``sentiment train --pretrained-embeddings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm


@torch.no_grad()
def embed_words(
    encoder: Any, tokenizer: Any, words: list[str], batch_size: int = 512
) -> np.ndarray:
    """[len(words), hidden] mean-pooled last-layer vectors of each word alone."""
    encoder.eval()
    out = []
    for i in tqdm(range(0, len(words), batch_size), desc="word vectors", mininterval=5):
        enc = tokenizer(
            words[i : i + batch_size],
            padding=True,
            truncation=True,
            max_length=16,
            return_tensors="pt",
        )
        hidden = encoder(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(((hidden * m).sum(1) / m.sum(1)).numpy())
    return np.concatenate(out)


def pca(x: np.ndarray, dim: int) -> np.ndarray:
    """Project onto the top ``dim`` principal components (centred), unit overall std."""
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    y = centred @ vt[:dim].T
    return (y / y.std()).astype(np.float32)


def write_word2vec(path: Path, words: list[str], vectors: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{len(words)} {vectors.shape[1]}\n")
        for w, v in zip(words, vectors, strict=True):
            fh.write(w + " " + " ".join(f"{x:.5f}" for x in v) + "\n")
