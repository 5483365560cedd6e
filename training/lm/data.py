"""WikiText-2 word-level corpus: vocabulary, token ids, BPTT batches.

The vocabulary is WikiText-2's own: every line split on whitespace plus ``<eos>`` per line
(``<unk>`` is already in the text), so perplexities compare with published results. Ids are
sorted by descending training frequency because the adaptive softmax cutoffs assume that the
first ids are the most frequent words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

EOS = "<eos>"
UNK = "<unk>"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "wikitext2"


def line_tokens(line: str) -> list[str]:
    """WikiText tokens of one line plus the end-of-line token."""
    return line.split() + [EOS]


def read_tokens(path: str | Path, max_lines: int | None = None) -> list[str]:
    tokens: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if max_lines is not None and i >= max_lines:
                break
            tokens.extend(line_tokens(line))
    return tokens


def build_vocab(tokens: Iterable[str]) -> list[str]:
    """Words by descending frequency, ties by first appearance (Counter keeps insertion order)."""
    counts = Counter(tokens)
    counts.setdefault(UNK, 0)
    counts.setdefault(EOS, 0)
    order = {w: i for i, w in enumerate(counts)}
    return sorted(counts, key=lambda w: (-counts[w], order[w]))


def encode(tokens: Sequence[str], vocab: Sequence[str]) -> torch.Tensor:
    index = {w: i for i, w in enumerate(vocab)}
    unk = index[UNK]
    return torch.tensor([index.get(t, unk) for t in tokens], dtype=torch.long)


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a 1-D id stream into ``batch_size`` contiguous streams: shape [batch, steps]."""
    steps = ids.numel() // batch_size
    if steps < 2:
        raise ValueError(f"corpus of {ids.numel()} tokens is too small for batch size {batch_size}")
    return ids[: steps * batch_size].view(batch_size, steps).contiguous()


def bptt_chunks(data: torch.Tensor, bptt: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) windows of at most ``bptt`` steps over [batch, steps] streams."""
    for i in range(0, data.size(1) - 1, bptt):
        n = min(bptt, data.size(1) - 1 - i)
        yield data[:, i : i + n], data[:, i + 1 : i + 1 + n]
