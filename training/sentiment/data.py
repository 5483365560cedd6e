"""Text-classification datasets: GLUE/SST-2 TSV and generic CSV/TSV/JSONL files.

Every loader returns ``(texts, labels)`` with string labels, so label names come from the data
(or a ``--label-names`` mapping) and training writes them into the card for serving.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "sst2"
SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
SST2_LABEL_NAMES = {"0": "negative", "1": "positive"}
DROP = "-"  # ``--label-names neutral=-`` drops that label's rows (a binary model from 3 classes)
KNOWN_BINARY_SETS = {"sst2", "imdb"}  # public sets whose raw labels are 0 = negative, 1 = positive


@dataclass
class TextDataset:
    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def _detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    return {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}.get(suffix, "tsv")


def load_dataset(
    path: str | Path,
    text_column: str = "sentence",
    label_column: str = "label",
    fmt: str = "auto",
    label_names: dict[str, str] | None = None,
) -> TextDataset:
    """Load ``text_column``/``label_column`` from a TSV, CSV or JSONL file with a header.

    ``label_names`` maps raw label values to names (SST-2: ``{"0": "negative", "1": "positive"}``).
    Rows with an empty text are an error rather than silently dropped: bad data should be seen.
    """
    path = Path(path)
    kind = _detect_format(path, fmt)
    rows: list[dict[str, object]]
    if kind == "jsonl":
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
    else:
        delimiter = "," if kind == "csv" else "\t"
        with open(path, encoding="utf-8", newline="") as fh:
            # Standard CSV quoting (IMDB's reviews hold tabs and quotes); SST-2 has no field that
            # starts with a quote, so it reads the same. "tsv-raw" turns quoting off.
            if kind == "tsv-raw":
                rows = list(csv.DictReader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE))
            else:
                rows = list(csv.DictReader(fh, delimiter=delimiter))
    if rows:
        have = list(rows[0].keys())
        for flag, col in (("--text-column", text_column), ("--label-column", label_column)):
            if col not in have:
                raise ValueError(f"{path}: no column {col!r} ({flag}); the file has {have}")
    texts: list[str] = []
    labels: list[str] = []
    for i, row in enumerate(rows, start=2):
        if text_column not in row or label_column not in row:
            raise ValueError(f"{path}: row {i} lacks column {text_column!r} or {label_column!r}")
        text = str(row[text_column]).strip()
        if not text:
            raise ValueError(f"{path}: row {i} has an empty {text_column!r}")
        raw = str(row[label_column]).strip()
        texts.append(text)
        labels.append(label_names.get(raw, raw) if label_names else raw)
    return TextDataset(texts, labels)


def label_map(spec: str | None, path: Path) -> dict[str, str] | None:
    """Raw label -> served name, from ``--label-names`` and the first training file.

    By default labels are served as found in the data; only the public SST-2/IMDB files (0/1)
    get 'negative'/'positive'. 'sst2' forces that mapping, 'none' keeps raw labels,
    '1=negative,5=positive' maps explicitly (two raw labels may share a name: merged classes;
    ``neutral=-`` drops that label's rows, e.g. a binary model from three-class data).
    """
    if spec is None:
        return SST2_LABEL_NAMES if Path(path).parent.name in KNOWN_BINARY_SETS else None
    if spec == "sst2":
        return SST2_LABEL_NAMES
    if spec == "none":
        return None
    pairs = [p.split("=", 1) for p in spec.split(",") if p.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise ValueError(f"--label-names must look like '1=negative,5=positive', got {spec!r}")
    mapping = {k.strip(): v.strip() for k, v in pairs}
    if len(mapping) != len(pairs):
        raise ValueError(f"--label-names names a raw label twice: {spec!r}")
    return mapping


def check_label_map(mapping: dict[str, str], found: set[str], *, exact: bool = True) -> None:
    """Refuse a mapping that does not name the labels of the data.

    Every raw label found needs a name (else it would be served raw beside the mapped ones);
    with ``exact``, every raw label the mapping names must also occur (else it is a typo, and
    the label it meant is served raw).
    """
    unmapped = sorted(found - set(mapping))
    unknown = sorted(set(mapping) - found) if exact else []
    if not unmapped and not unknown:
        return
    shown = ",".join(f"{k}={v}" for k, v in mapping.items())
    problems = []
    if unmapped:
        problems.append(f"no name for {', '.join(unmapped)}")
    if unknown:
        problems.append(f"{', '.join(unknown)} do{'es' if len(unknown) == 1 else ''} not occur")
    raise ValueError(
        f"--label-names {shown} does not match the labels in the data ({', '.join(sorted(found))})"
        f": {'; '.join(problems)}. Name exactly the labels present, or pass --label-names none "
        "to serve them as found"
    )


def apply_label_map(ds: TextDataset, mapping: dict[str, str] | None) -> TextDataset:
    """Rename labels; rows whose label maps to ``DROP`` are left out."""
    if not mapping:
        return ds
    named = [(t, mapping.get(x, x)) for t, x in zip(ds.texts, ds.labels, strict=True)]
    kept = [(t, lab) for t, lab in named if lab != DROP]
    return TextDataset([t for t, _ in kept], [lab for _, lab in kept])


def label_list(*datasets: TextDataset, order: Sequence[str] | None = None) -> list[str]:
    """Stable label order: an explicit order if given, else sorted unique labels."""
    seen = sorted({label for ds in datasets for label in ds.labels})
    if order:
        missing = set(seen) - set(order)
        if missing:
            raise ValueError(f"labels {sorted(missing)} not in the given label order {list(order)}")
        return list(order)
    return seen


def root_sentences(ds: TextDataset, min_words: int = 8) -> list[int]:
    """Indices of texts that are not part of a longer text in the set.

    SST-2's training file holds every phrase of each sentence; the roots are (nearly) the
    whole sentences, which look like what the model is judged on.
    """
    order = sorted(range(len(ds.texts)), key=lambda i: -len(ds.texts[i]))
    roots: list[int] = []
    joined = ""  # every root so far; a substring test against it finds the phrases
    for i in order:
        text = ds.texts[i]
        if len(text.split()) >= min_words and text not in joined:
            roots.append(i)
            joined += "\n" + text
    return roots
