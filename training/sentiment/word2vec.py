"""Skip-gram word vectors with negative sampling, for initialising classifier embeddings.

SST-2 is small (67k phrases, 15k words): many dev words are rare in training, and a
from-scratch embedding learns little about them. Vectors trained on unlabelled text (by
default WikiText-2 train plus the SST-2 training sentences, both lower-cased; never dev/test)
give those words a sensible starting point. Output: word2vec text format, one word per line.

    python -m training.sentiment.word2vec --out runs/sentiment/w2v128.txt --dim 128
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.sentiment.data import DEFAULT_DATA_DIR
from training.sentiment.tokenizer import new_tokenizer

DEFAULT_WIKITEXT = DEFAULT_DATA_DIR.parent / "wikitext2" / "train.txt"


def corpus_tokens(paths: Iterable[Path]) -> list[list[str]]:
    """Lines → tokens with the classifier's own normaliser/pre-tokenizer (so words match)."""
    tok = new_tokenizer()
    normalizer, pre = tok.normalizer, tok.pre_tokenizer
    assert normalizer is not None and pre is not None
    lines: list[list[str]] = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                text = line.split("\t")[0] if path.suffix == ".tsv" else line
                text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
                words = [w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text))]
                if len(words) > 1:
                    lines.append(words)
    return lines


def train_vectors(
    lines: Sequence[list[str]],
    dim: int = 128,
    window: int = 5,
    negatives: int = 5,
    min_count: int = 3,
    epochs: int = 3,
    batch: int = 8192,
    lr: float = 0.003,
    seed: int = 0,
) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    counts = Counter(w for line in lines for w in line)
    vocab = [w for w, c in counts.most_common() if c >= min_count]
    index = {w: i for i, w in enumerate(vocab)}
    freq = np.array([counts[w] for w in vocab], dtype=np.float64)
    ids = [np.array([index[w] for w in line if w in index], dtype=np.int64) for line in lines]
    stream = np.concatenate([x for x in ids if len(x) > 1])
    # Mikolov subsampling of frequent words, and the unigram^0.75 noise distribution.
    p_keep = np.minimum(1.0, np.sqrt(1e-4 / (freq / freq.sum())) + 1e-4 / (freq / freq.sum()))
    noise = torch.from_numpy((freq**0.75) / (freq**0.75).sum())
    centre = nn.Embedding(len(vocab), dim, sparse=True)
    context = nn.Embedding(len(vocab), dim, sparse=True)
    nn.init.uniform_(centre.weight, -0.5 / dim, 0.5 / dim)
    nn.init.zeros_(context.weight)
    opt = torch.optim.SparseAdam(list(centre.parameters()) + list(context.parameters()), lr=lr)
    for epoch in range(epochs):
        kept = stream[rng.random(len(stream)) < p_keep[stream]]
        offsets = rng.integers(1, window + 1, len(kept)) * rng.choice([-1, 1], len(kept))
        pos = np.arange(len(kept)) + offsets
        ok = (pos >= 0) & (pos < len(kept))
        pairs = np.stack([kept[ok], kept[pos[ok]]], 1)
        rng.shuffle(pairs)
        total, t0 = 0.0, time.perf_counter()
        for i in tqdm(range(0, len(pairs), batch), desc=f"w2v epoch {epoch + 1}", mininterval=5):
            b = torch.from_numpy(pairs[i : i + batch])
            neg = torch.multinomial(noise, len(b) * negatives, replacement=True).view(
                len(b), negatives
            )
            c = centre(b[:, 0])
            pos_score = (c * context(b[:, 1])).sum(-1)
            neg_score = torch.bmm(context(neg), c.unsqueeze(-1)).squeeze(-1)
            loss = -(
                nn.functional.logsigmoid(pos_score).mean()
                + nn.functional.logsigmoid(-neg_score).sum(-1).mean()
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        print(
            f"epoch {epoch + 1}: {len(pairs)} pairs, loss {total / len(pairs):.4f}, "
            f"{time.perf_counter() - t0:.0f}s",
            flush=True,
        )
    return vocab, centre.weight.detach().numpy()


def save_vectors(path: Path, vocab: list[str], vectors: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{len(vocab)} {vectors.shape[1]}\n")
        for w, v in zip(vocab, vectors, strict=True):
            fh.write(w + " " + " ".join(f"{x:.5f}" for x in v) + "\n")


def load_vectors(path: Path) -> dict[str, np.ndarray]:
    """word2vec/GloVe text format (a 'count dim' header line is optional)."""
    out: dict[str, np.ndarray] = {}
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            parts = line.rstrip("\n").split(" ")
            if i == 0 and len(parts) == 2:
                continue
            out[parts[0]] = np.asarray(parts[1:], dtype=np.float32)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--text",
        type=Path,
        nargs="+",
        default=[DEFAULT_WIKITEXT, DEFAULT_DATA_DIR / "train.tsv"],
        help="unlabelled text files (.tsv: first column); never dev or test data",
    )
    ap.add_argument("--out", type=Path, required=True, help="vectors file to write (word2vec text)")
    ap.add_argument(
        "--dim", type=int, default=128, help="vector size (= the classifier's --emb-dim)"
    )
    ap.add_argument("--epochs", type=int, default=3, help="passes over the text")
    ap.add_argument("--min-count", type=int, default=3, help="ignore rarer words")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = corpus_tokens(args.text)
    vocab, vectors = train_vectors(
        lines, dim=args.dim, epochs=args.epochs, min_count=args.min_count
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_vectors(args.out, vocab, vectors)
    print(f"{len(vocab)} words x {args.dim} -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
