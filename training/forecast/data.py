"""Loading hourly series and cutting them into training / validation windows.

Two input layouts are understood:

* M4 "wide" CSV (``Hourly-train.csv``): one row per series, first column the id, then the
  values, empty cells after the end of each series.
* A user's "long" CSV (e.g. ETTh1): one timestamp column and one or more value columns; every
  chosen value column becomes one series (rows sorted by timestamp).

Nothing here touches torch. The windowing rule shared with serving (``last_window``) lives
in ``contract.forecast``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract.forecast import last_window

M4_URL = "https://github.com/Mcompetitions/M4-methods/tree/master/Dataset"
ETTH1_URL = "https://github.com/zhouhaoyi/ETDataset/blob/main/ETT-small/ETTh1.csv"


@dataclass
class SeriesSet:
    """A collection of univariate series (float64, possibly different lengths)."""

    ids: list[str]
    values: list[np.ndarray]
    source: str
    # long CSV: the timestamp (as written in the file) of every value, per series
    times: list[list[str]] = field(default_factory=list)
    rows: int = 0  # data rows in the file (M4 wide: one per series)
    columns: dict[str, object] = field(default_factory=dict)  # long CSV: time and value columns

    def __len__(self) -> int:
        return len(self.values)


def read_m4_wide(path: str | Path) -> SeriesSet:
    ids: list[str] = []
    values: list[np.ndarray] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)  # header: V1, V2, ...
        for row in reader:
            if not row:
                continue
            cells = [c for c in row[1:] if c.strip() != ""]
            ids.append(row[0])
            values.append(np.asarray([float(c) for c in cells], dtype=np.float64))
    return SeriesSet(ids, values, "m4-wide", rows=len(ids))


def read_long_csv(
    path: str | Path, time_col: str | None = None, targets: list[str] | None = None
) -> SeriesSet:
    """Timestamp column + value columns; ``targets`` default: every column but the time column."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = list(reader.fieldnames or [])
        rows = list(reader)
    if not header:
        raise ValueError(f"{path}: empty CSV")
    time_col = time_col or header[0]
    if time_col not in header:
        raise ValueError(f"{path}: no time column {time_col!r} (columns: {header})")
    targets = targets or [c for c in header if c != time_col]
    missing = [t for t in targets if t not in header]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing} (columns: {header})")
    # ISO-like timestamps sort correctly as strings; keep file order for ties.
    rows.sort(key=lambda r: r[time_col])
    values, times = [], []
    for t in targets:
        kept = [r for r in rows if (r[t] or "").strip() != ""]
        try:
            values.append(np.asarray([float(r[t]) for r in kept], dtype=np.float64))
        except ValueError:
            bad = next(r for r in kept if not _is_number(r[t]))
            raise ValueError(
                f"{path}: column {t!r} has a value that is not a number: {bad[t]!r} "
                f"(at {time_col} {bad[time_col]!r})"
            ) from None
        times.append([r[time_col] for r in kept])
    columns: dict[str, object] = {"time": time_col, "targets": list(targets)}
    return SeriesSet(list(targets), values, "long-csv", times, len(rows), columns)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def detect_format(path: str | Path) -> str:
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    return "m4" if header and header[0].strip() == "V1" else "long"


def load_series(
    path: str | Path,
    fmt: str = "auto",
    time_col: str | None = None,
    targets: list[str] | None = None,
) -> SeriesSet:
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "m4":
        return read_m4_wide(path)
    if fmt == "long":
        return read_long_csv(path, time_col, targets)
    raise ValueError(f"unknown format {fmt!r} (auto, m4, long)")


def split_holdout(series: SeriesSet, horizon: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(history, future): the last ``horizon`` points of every series are held out."""
    hist, fut = [], []
    for v in series.values:
        if len(v) <= horizon:
            raise ValueError(f"series of length {len(v)} too short for horizon {horizon}")
        hist.append(v[:-horizon])
        fut.append(v[-horizon:])
    return hist, fut


class WindowSampler:
    """Random (input window, target) pairs from the training histories.

    Origins are drawn uniformly: first a series (each series equally likely, as in a global
    model), then a cut point so that the target lies inside the history. ``align > 1`` keeps
    only cut points a multiple of ``align`` steps before the end of each history (the
    position-in-day experiment: windows in the same phase as the forecast origin at the end).
    """

    def __init__(
        self,
        histories: list[np.ndarray],
        window: int,
        horizon: int,
        period: int,
        recent: int = 0,
        align: int = 0,
    ):
        self.window, self.horizon, self.period = window, horizon, period
        self.align = max(1, align)
        self.series = [
            last_window(h, window + horizon, period) if len(h) < window + horizon else h
            for h in histories
        ]
        self.n_origins = np.asarray([len(s) - window - horizon + 1 for s in self.series])
        # recent > 0: only targets ending within the last `recent` points of each series.
        self.first = np.zeros_like(self.n_origins)
        if recent > 0:
            keep = np.minimum(self.n_origins, max(1, recent - horizon + 1))
            self.first = self.n_origins - keep
            self.n_origins = keep
        if self.align > 1:
            # first cut point whose input ends a multiple of `align` before the history's end
            lens = np.asarray([len(s) for s in self.series])
            r = (lens - window - self.first) % self.align
            r = np.where(r < self.n_origins, r, 0)  # too short to align: keep the first
            self.first = self.first + r
            self.n_origins = np.maximum(1, (self.n_origins - r + self.align - 1) // self.align)
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in self.series])])
        self.offsets = offsets[:-1]
        self.flat = np.concatenate(self.series).astype(np.float64)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        sid = rng.integers(0, len(self.series), size=n)
        pick = (rng.random(n) * self.n_origins[sid]).astype(np.int64)
        start = self.first[sid] + pick * self.align
        base = self.offsets[sid] + start
        idx = base[:, None] + np.arange(self.window + self.horizon)[None, :]
        block = self.flat[idx]
        return block[:, : self.window], block[:, self.window :]


def origin_windows(
    histories: list[np.ndarray], window: int, horizon: int, period: int, back: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Inputs/targets whose target is the ``horizon`` points ending ``back`` points before the
    end of each history (``back=0``: the last ``horizon`` points). Series too short are skipped;
    the indices of the series kept are returned."""
    xs, ys, keep = [], [], []
    for i, h in enumerate(histories):
        end = len(h) - back
        if end - horizon < period:
            continue
        xs.append(last_window(h[: end - horizon], window, period))
        ys.append(h[end - horizon : end])
        keep.append(i)
    return np.asarray(xs), np.asarray(ys), keep


def calibration_split(
    histories: list[np.ndarray], n_windows: int, horizon: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Hold the last ``n_windows * horizon`` points of every history out of member training.

    Returns (training histories, full histories): members only ever see targets inside the
    first (the sampler draws targets inside the histories it is given); the calibration
    windows are the ``n_windows`` non-overlapping ``horizon``-point stretches after them,
    forecast from everything before each (see :func:`origin_windows` with the full histories
    and ``back = k * horizon``, k < n_windows). Inputs may reach back into training points;
    targets never do.
    """
    cut = n_windows * horizon
    if cut <= 0:
        return list(histories), list(histories)
    train = []
    for h in histories:
        if len(h) <= cut:
            raise ValueError(
                f"a series of {len(h)} training points cannot hold out {n_windows} calibration "
                f"window(s) of {horizon}"
            )
        train.append(h[:-cut])
    return train, list(histories)
