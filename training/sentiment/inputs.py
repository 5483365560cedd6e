"""The labelled files a sentiment command reads: read, label-mapped and checked up front, so a
bad file stops with one line naming the problem before any training starts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from training.sentiment.config import DataConfig
from training.sentiment.data import (
    TextDataset,
    apply_label_map,
    check_label_map,
    label_map,
    load_dataset,
    root_sentences,
)

DATA_FIELDS = tuple(DataConfig.__dataclass_fields__)


def _read(data: DataConfig, path: Path) -> TextDataset:
    """One file with its raw labels; a bad file stops with a message naming the problem."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such file")
    try:
        return load_dataset(path, data.text_column, data.label_column, data.format, None)
    except (ValueError, KeyError) as exc:
        raise SystemExit(str(exc)) from None


def read_files(
    data: DataConfig,
    paths: list[Path],
    mapping: dict[str, str] | None,
    *,
    exact: bool = True,
) -> list[TextDataset]:
    """The files with ``mapping`` checked against the raw labels of all of them (before
    ``--limit``, so a short read cannot hide a label) and applied."""
    raw = [_read(data, p) for p in paths]
    if mapping:
        found = {lab for ds in raw for lab in ds.labels}
        try:
            check_label_map(mapping, found, exact=exact)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
    out = [apply_label_map(ds, mapping) for ds in raw]
    if data.limit:
        out = [TextDataset(ds.texts[: data.limit], ds.labels[: data.limit]) for ds in out]
    return out


def label_mapping(spec: str | None, first: Path) -> dict[str, str] | None:
    """``--label-names`` parsed against the first file; a bad spec stops with its message."""
    try:
        return label_map(spec, first)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def read_texts(data: DataConfig, paths: list[Path]) -> list[str]:
    """Just the texts of the files (the teacher labels them itself), ``--limit`` per file."""
    return [t for path in paths for t in _read(data, path).texts[: data.limit or None]]


def check_labels(train: TextDataset, min_per_class: int = 5) -> dict[str, int]:
    """Refuse data a classifier cannot learn from, before any training starts."""
    counts = dict(sorted(Counter(train.labels).items()))
    if len(counts) < 2:
        raise SystemExit(
            f"the label column has only one class ({', '.join(counts) or 'none'}); "
            "a classifier needs at least two"
        )
    rare = {k: n for k, n in counts.items() if n < min_per_class}
    if rare:
        raise SystemExit(
            f"classes with fewer than {min_per_class} training examples: {rare}; "
            "add examples or merge/drop those classes"
        )
    return counts


def concat(parts: list[TextDataset]) -> TextDataset:
    """Several files' rows as one dataset, in file order."""
    return TextDataset(
        [t for p in parts for t in p.texts], [lab for p in parts for lab in p.labels]
    )


def file_groups(paths: list[Path], parts: list[TextDataset]) -> dict[str, np.ndarray] | None:
    """Dev row ranges per file, named after the file's folder (sst2, imdb...), if several."""
    if len(parts) < 2:
        return None
    out: dict[str, np.ndarray] = {}
    start = 0
    for path, part in zip(paths, parts, strict=True):
        name = path.parent.name or path.stem
        out[name if name not in out else f"{name}-{path.stem}"] = np.arange(
            start, start + len(part)
        )
        start += len(part)
    return out


def holdout(ds: TextDataset, fraction: float, seed: int = 0) -> tuple[TextDataset, TextDataset]:
    """A random ``fraction`` of the rows as a validation set, the rest for training."""
    if not 0 < fraction < 1:
        raise SystemExit(f"--val-split must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(len(ds))
    cut = int(round(len(ds) * fraction))

    def rows(idx: np.ndarray) -> TextDataset:
        return TextDataset([ds.texts[i] for i in idx], [ds.labels[i] for i in idx])

    return rows(perm[cut:]), rows(perm[:cut])


def upweight(ds: TextDataset, copies: int) -> TextDataset:
    """Repeat whole sentences among the phrases (SST-2's training file holds both)."""
    roots = root_sentences(ds)
    extra = roots * copies
    out = TextDataset(
        ds.texts + [ds.texts[i] for i in extra], ds.labels + [ds.labels[i] for i in extra]
    )
    print(json.dumps({"root_sentences": len(roots), "train_rows": len(out)}))
    return out
