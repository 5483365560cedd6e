"""Word-level corpus (WikiText-2 or a user's plain text): vocabulary, token ids, BPTT batches.

Two text formats:

* ``wikitext``: already tokenized text (WikiText-2). Every line is split on whitespace plus
  ``<eos>`` per line (``<unk>`` is already in the text), so perplexities compare with
  published results.
* ``plain``: ordinary text (one paragraph or sentence per line). Every line is cut into words
  by the very rules of the served ``tokenizer.json`` (punctuation split off, ``don't`` ->
  ``don 't``...: ``training.lm.tokenizer.pretokenize``) plus ``<eos>``, so the model is
  trained on exactly the tokens serving will feed it.

``detect_text_format`` tells them apart. Ids are sorted by descending training frequency
because the adaptive softmax cutoffs assume that the first ids are the most frequent words.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from training.lm.tokenizer import pretokenize
from training.lm.tokens import EOS, TEXT_FORMATS, UNK

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "wikitext2"
# auto-detection: text is taken as already tokenized when splitting it the plain way changes
# fewer than this share of its whitespace-separated words (WikiText-2: 0.2 %; prose: 10-30 %)
PRETOKENIZED_MAX_CHANGED = 0.05
DETECT_LINES = 2000


def _splitter(text_format: str) -> Callable[[str], list[str]]:
    if text_format == "wikitext":
        return str.split
    if text_format == "plain":
        return pretokenize
    raise ValueError(f"unknown text format {text_format!r} (choose from {TEXT_FORMATS})")


def line_tokens(line: str, text_format: str = "wikitext") -> list[str]:
    """Tokens of one line plus the end-of-line token."""
    return _splitter(text_format)(line.rstrip("\r\n")) + [EOS]


def read_tokens(
    path: str | Path, max_lines: int | None = None, text_format: str = "wikitext"
) -> list[str]:
    split = _splitter(text_format)
    tokens: list[str] = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if max_lines is not None and i >= max_lines:
                break
            tokens.extend(split(line.rstrip("\r\n")))
            tokens.append(EOS)
    return tokens


def count_lines(path: str | Path) -> int:
    with open(path, encoding="utf-8") as fh:
        return sum(1 for _ in fh)


def detect_text_format(path: str | Path, max_lines: int = DETECT_LINES) -> str:
    """``wikitext`` when the file reads as already tokenized (splitting its words the plain
    way changes almost none of them), else ``plain``."""
    words = changed = 0
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= max_lines:
                break
            split = line.split()
            words += len(split)
            if pretokenize(line) != split:  # only then look word by word
                changed += sum(pretokenize(word) != [word] for word in split)
    return "wikitext" if words and changed / words < PRETOKENIZED_MAX_CHANGED else "plain"


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
