"""A fast in-process NAB score, for grid searches only (reported figures come from score.sh).

Written from the rules of NAB's scorer (``../shared/tools/nab/nab/sweeper.py``, MIT), in numpy,
not copied: for each file the first ``min(floor(0.15 n), 750)`` rows are probationary and
ignored; a row inside a label window is worth ``tpWeight * S(-(right - i + 1) / width) /
S(-1)`` when it is the earliest detection of that window (only the best detection of a window
counts; an undetected window costs ``fnWeight``); a detected row outside every window costs
``fpWeight * S(distance past the previous window / (its width - 1))`` (``-fpWeight`` before
the first window), with ``S(p) = 2 sigmoid(-5 p) - 1`` (-1 beyond p = 3). The corpus score is
the best over every threshold (a row is detected when its score, rounded as written to the
results CSVs, is at least the threshold), normalised ``100 (score - null) / (windows * tpWeight
- null)`` against the null detector (a constant score). ``check_against_official`` compares it
with the official scorer on a result set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.anomaly.data import NabSeries

PROFILE_WEIGHTS: dict[str, dict[str, float]] = {  # ../shared/tools/nab/config/profiles.json
    "standard": {"tp": 1.0, "fn": 1.0, "fp": 0.11},
    "reward_low_FP_rate": {"tp": 1.0, "fn": 1.0, "fp": 0.22},
    "reward_low_FN_rate": {"tp": 1.0, "fn": 2.0, "fp": 0.11},
}


def _scaled_sigmoid(p: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        val = 2.0 / (1.0 + np.exp(5.0 * p)) - 1.0
    return np.where(p > 3.0, -1.0, val)


@dataclass
class NabFile:
    """The scorer's view of one file: window id per scorable row (-1 outside every window),
    the unweighted sweep score per scorable row, and which rows are scorable."""

    key: str
    n: int
    start: int  # first scorable row (after the probationary period)
    window: np.ndarray  # int [n - start]
    sweep: np.ndarray  # float [n - start]
    windows: int  # label windows in the file (the normaliser counts them all)


def _ts(values: list[str]) -> np.ndarray:
    return np.array([np.datetime64(v.strip().replace(" ", "T")) for v in values])


def nab_file(series: NabSeries, windows: list[list[str]]) -> NabFile:
    n = len(series.timestamps)
    ts = _ts(series.timestamps)
    win = np.full(n, -1)
    sweep = np.full(n, -1.0)
    max_tp = float(_scaled_sigmoid(np.array([-1.0]))[0])
    prev_right: int | None = None
    prev_width = 1.0
    last_end = 0
    for k, (a, b) in enumerate(windows):
        left = int(np.flatnonzero(ts == _ts([a])[0])[0])
        right = int(np.flatnonzero(ts == _ts([b])[0])[0])
        width = float(right - left + 1)
        if prev_right is not None:  # rows between the previous window and this one
            i = np.arange(last_end, left)
            sweep[last_end:left] = _scaled_sigmoid(np.abs(prev_right - i) / (prev_width - 1.0))
        i = np.arange(left, right + 1)
        sweep[left : right + 1] = _scaled_sigmoid(-(right - i + 1) / width) / max_tp
        win[left : right + 1] = k
        prev_right, prev_width, last_end = right, width, right + 1
    if prev_right is not None:
        i = np.arange(last_end, n)
        sweep[last_end:] = _scaled_sigmoid(np.abs(prev_right - i) / (prev_width - 1.0))
    start = int(math.ceil(min(math.floor(0.15 * n), 0.15 * 5000)))
    return NabFile(series.key, n, start, win[start:], sweep[start:], len(windows))


def nab_files(nab: list[NabSeries], windows: dict[str, list[list[str]]]) -> list[NabFile]:
    return [nab_file(s, windows[s.key]) for s in nab]


def _best(files: list[NabFile], scores: list[np.ndarray], w: dict[str, float]) -> float:
    """The best raw (unnormalised) corpus score over every threshold."""
    s_parts, v_parts, win_parts = [], [], []
    offset = 0
    for f, sc in zip(files, scores, strict=True):
        s_parts.append(np.round(np.asarray(sc, np.float64)[f.start :], 6))
        inwin = f.window >= 0
        v_parts.append(np.where(inwin, f.sweep * w["tp"], f.sweep * w["fp"]))
        win_parts.append(np.where(inwin, f.window + offset, -1))
        offset += int(f.window.max(initial=-1)) + 1
    s = np.concatenate(s_parts)
    v = np.concatenate(v_parts)
    win = np.concatenate(win_parts)
    n_win = len(np.unique(win[win >= 0]))
    base = -w["fn"] * n_win
    if len(s) == 0:
        return base
    order = np.argsort(-s, kind="stable")
    s, v, win = s[order], v[order], win[order]
    delta = np.where(win < 0, v, 0.0)
    inw = np.flatnonzero(win >= 0)
    if len(inw):
        wk = win[inw]
        grp = np.argsort(wk, kind="stable")  # rows of each window, in threshold order
        idx, wk = inw[grp], wk[grp]
        vals = v[idx]
        first = np.r_[True, wk[1:] != wk[:-1]]
        # running max of each window's detections, starting from -fn (undetected)
        run = vals.copy()
        starts = np.flatnonzero(first)
        for a, b in zip(starts, np.r_[starts[1:], len(vals)], strict=True):
            run[a:b] = np.maximum.accumulate(np.maximum(vals[a:b], -w["fn"]))
        prev = np.where(first, -w["fn"], np.r_[-w["fn"], run[:-1]])
        delta[idx] = run - prev
    total = base + np.cumsum(delta)
    ends = np.r_[s[1:] != s[:-1], True]
    return float(max(base, float(total[ends].max())))


_NULL: dict[tuple[tuple[str, ...], str], float] = {}


def _null(files: list[NabFile], profile: str) -> float:
    """The null detector's raw score on ``files`` (memoised: grid searches ask often)."""
    key = (tuple(f"{f.key}:{f.n}" for f in files), profile)
    if key not in _NULL:
        null = [np.full(f.n, 0.5) for f in files]
        _NULL[key] = _best(files, null, PROFILE_WEIGHTS[profile])
    return _NULL[key]


def score(
    files: list[NabFile], scores: list[np.ndarray], profiles: Sequence[str] = ("standard",)
) -> dict[str, float]:
    """Normalised NAB score per profile of ``scores`` (one array per file, in ``files`` order)."""
    out = {}
    tp_count = sum(f.windows for f in files)
    for name in profiles:
        w = PROFILE_WEIGHTS[name]
        raw = _best(files, scores, w)
        base = _null(files, name)
        perfect = tp_count * w["tp"]
        out[name] = 100.0 * (raw - base) / (perfect - base) if perfect != base else 0.0
    return out


def check_against_official(
    nab: list[NabSeries],
    windows: dict[str, list[list[str]]],
    scores: list[np.ndarray],
    results_dir: Any,
    name: str = "check",
) -> dict[str, dict[str, float]]:
    """{"fast": ..., "official": ...}: both scorers on one result set (all 31 series)."""
    from training.anomaly.evaluate import PROFILES, run_scorer, write_results

    write_results(results_dir, name, nab, scores)
    return {
        "fast": score(nab_files(nab, windows), scores, PROFILES),
        "official": run_scorer(results_dir, name),
    }
