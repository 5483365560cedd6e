"""Cross-validated NAB figures for a detector's scoring knobs: chosen on some series, scored on
the others, never in-sample.

Protocol (``crossvalidate``): the series are split into ``folds`` folds stratified by NAB
category (each category's series shuffled with the split's seed and dealt round-robin, the
deal continuing across categories so fold sizes differ by at most one). For each fold the
knobs are chosen on the other folds only — the setting of ``grid`` with the best fast NAB
standard score (``training.anomaly.nabscore``; ties: the first setting) — and the fold is
scored with them. The held-out scores of all folds are pooled into one 31-series result set
and scored ONCE by NAB's official scorer (``score.sh`` via ``evaluate.run_scorer``): the
reported figure. Seed 0 is the headline split; ``splits`` further seeds give the spread
(mean, sd, min, max of the pooled official standard score).

The graph runs once per series (its outputs do not depend on the knobs searched: a grid must
not change ``warmup``, ``clip`` or ``lags``); every setting is then ``finish`` over those
outputs, so a grid of hundreds of settings takes minutes on one core.

    seqserve-train anomaly crossval --model models/anomaly/nab-gru/1 --grid v1
    seqserve-train anomaly crossval --model models/anomaly/nab-gru/1 --grid v2 --splits 10
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contract.anomaly import finish, prepare, run_graph
from training.anomaly import nabscore
from training.anomaly.data import NabSeries

PREPARE_KEYS = ("warmup", "clip", "lags", "scale_floor_rel", "scale_floor_abs")

# Knob grids (each: a list of blocks, a block a dict knob -> values, expanded as a product).
# "v1": the nab-gru:1 family (likelihood + range check + suppression), 144 settings around
# the shipped knobs: the baseline protocol's grid.
V1_BLOCK: dict[str, list[Any]] = {
    "long": [400, 600, 1000],
    "spatial_tolerance": [0.005, 0.01],
    "suppress": [10, 20],
    "refractory": [150, 300, 600],
    "threshold": [0.35, 0.4],
    "min_history": [100, 400],
}
# "v2": v1's main knobs plus the second (slower) likelihood and the level-change detector: 48
# settings. The grid nab-gru:2 was published with (chosen over "wide" and "wide-seasonal"
# after comparing the three under this protocol: see nab-gru:2's card, experiments).
V2_BLOCK: dict[str, list[Any]] = {
    "long": [400, 1000],
    "spatial_tolerance": [0.005, 0.01],
    "refractory": [150, 300],
    "short2": [0, 100],
    "shift_short": [0, 10],
    "shift_long": [300],
    "shift_scale": [1.0, 2.0],
}
# "wide": v2 plus min_history, more level-change windows and the variance detector (480).
WIDE_BLOCK: dict[str, list[Any]] = {
    "long": [400, 1000],
    "spatial_tolerance": [0.005, 0.01],
    "refractory": [150, 300],
    "min_history": [100, 400],
    "short2": [0, 100],
    "shift_short": [0, 10, 30],
    "shift_long": [300],
    "shift_scale": [1.0, 2.0],
    "var_short": [0, 20],
    "var_long": [300],
    "var_log_ratio": [1.0, 1.5],
}
# "wide-seasonal": the seasonal likelihood and a range score below the refractory bar (1152).
SEASONAL_BLOCK: dict[str, list[Any]] = {
    "long": [400, 1000],
    "spatial_tolerance": [0.005, 0.01],
    "refractory": [150, 300],
    "min_history": [100, 400],
    "short2": [0, 100],
    "shift_short": [0, 10],
    "shift_long": [300],
    "shift_scale": [1.0, 2.0],
    "var_short": [0, 20],
    "var_long": [300],
    "var_log_ratio": [1.5],
    "season_lags": [[], [288], [24, 288]],
    "spatial_score": [1.0, 0.9],
}
GRIDS: dict[str, list[dict[str, list[Any]]]] = {
    "v1": [V1_BLOCK],
    "v2": [V2_BLOCK],
    "wide": [WIDE_BLOCK],
    "wide-seasonal": [SEASONAL_BLOCK],
}


def expand(blocks: Sequence[dict[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every setting of the grid (a product per block), duplicates and settings of switched-off
    detectors that only differ in that detector's knobs removed, in a stable order."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for block in blocks:
        keys = list(block)
        for combo in itertools.product(*(block[k] for k in keys)):
            s = dict(zip(keys, combo, strict=True))
            if s.get("shift_short", 1) == 0:
                s = {k: v for k, v in s.items() if k not in ("shift_long", "shift_scale")}
            if s.get("var_short", 1) == 0:
                s = {k: v for k, v in s.items() if k not in ("var_long", "var_log_ratio")}
            tag = repr(sorted(s.items()))
            if tag not in seen:
                seen.add(tag)
                out.append(s)
    bad = [k for s in out for k in s if k in PREPARE_KEYS]
    if bad:
        raise ValueError(f"a grid may not change what the graph reads: {sorted(set(bad))}")
    return out


def category(key: str) -> str:
    return key.split("/", 1)[0]


def stratified_folds(keys: Sequence[str], folds: int, seed: int) -> list[list[int]]:
    """Indices of ``keys`` per fold, stratified by category (the part before the "/"): each
    category's series shuffled and dealt round-robin, the deal continuing from category to
    category (sorted by name), so every fold gets its share of each category and fold sizes
    differ by at most one."""
    if folds < 2:
        raise ValueError("need at least 2 folds")
    rng = np.random.default_rng(seed)
    by_cat: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_cat.setdefault(category(k), []).append(i)
    out: list[list[int]] = [[] for _ in range(folds)]
    turn = int(rng.integers(0, folds))
    for cat in sorted(by_cat):
        for i in rng.permutation(by_cat[cat]).tolist():
            out[turn % folds].append(int(i))
            turn += 1
    return [sorted(f) for f in out]


def with_knobs(card: dict[str, Any], knobs: dict[str, Any]) -> dict[str, Any]:
    """The card with ``knobs`` over its scoring (``threshold`` also set at the top level)."""
    c = {**card, "scoring": {**card.get("scoring", {}), **knobs}}
    if "threshold" in knobs:
        c["threshold"] = knobs["threshold"]
    return c


def graph_outputs(run: Any, nab: list[NabSeries], card: dict[str, Any]) -> list[dict[str, Any]]:
    return run_graph(run, [prepare(s.values, card) for s in nab])


def setting_scores(
    nab: list[NabSeries], outputs: list[dict[str, Any]], card: dict[str, Any], knobs: dict[str, Any]
) -> list[np.ndarray]:
    c = with_knobs(card, knobs)
    return [finish(s.values, o, c) for s, o in zip(nab, outputs, strict=True)]


def crossvalidate(
    nab: list[NabSeries],
    outputs: list[dict[str, Any]],
    card: dict[str, Any],
    settings: list[dict[str, Any]],
    windows: dict[str, list[list[str]]],
    seeds: Sequence[int] = (0,),
    folds: int = 2,
    official: Callable[[list[np.ndarray]], dict[str, float]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Cross-validated figures (see the module docstring) for each split seed in ``seeds``.

    ``official(scores)`` scores one full result set with NAB's scorer (None: the fast scorer
    only — for tests). Returns per seed the folds, the knobs chosen on each training part,
    their training-part fast score and the pooled held-out scores, plus the spread."""
    files = nabscore.nab_files(nab, windows)
    keys = [s.key for s in nab]
    splits = {seed: stratified_folds(keys, folds, seed) for seed in seeds}
    parts = [(seed, f) for seed in seeds for f in range(folds)]
    train_idx = {
        (seed, f): [i for g, fold in enumerate(splits[seed]) if g != f for i in fold]
        for seed, f in parts
    }
    best: dict[tuple[int, int], tuple[float, int]] = {}
    best_all = (-1e9, 0)
    t0 = time.perf_counter()
    for j, knobs in enumerate(settings):
        sc = setting_scores(nab, outputs, card, knobs)
        val = nabscore.score(files, sc)["standard"]
        if val > best_all[0]:
            best_all = (val, j)
        for part in parts:
            idx = train_idx[part]
            val = nabscore.score([files[i] for i in idx], [sc[i] for i in idx])["standard"]
            if part not in best or val > best[part][0]:
                best[part] = (val, j)
        if (j + 1) % 50 == 0 or j + 1 == len(settings):
            log(f"  {j + 1}/{len(settings)} settings, {time.perf_counter() - t0:.0f}s")
    results = []
    for seed in seeds:
        pooled: list[np.ndarray] = [np.zeros(0)] * len(nab)
        chosen = []
        for f, fold in enumerate(splits[seed]):
            val, j = best[(seed, f)]
            sc = setting_scores(nab, outputs, card, settings[j])
            for i in fold:
                pooled[i] = sc[i]
            chosen.append(
                {
                    "held_out": [keys[i] for i in fold],
                    "knobs": settings[j],
                    "train_fast_standard": round(val, 2),
                    "held_out_fast_standard": round(
                        nabscore.score([files[i] for i in fold], [sc[i] for i in fold])["standard"],
                        2,
                    ),
                }
            )
        fast = {k: round(v, 2) for k, v in nabscore.score(files, pooled, PROFILES).items()}
        row: dict[str, Any] = {"seed": seed, "folds": chosen, "pooled_fast": fast}
        if official is not None:
            row["pooled_official"] = official(pooled)
        log(f"  split seed {seed}: pooled held-out {row.get('pooled_official', fast)}")
        results.append(row)
    key = "pooled_official" if official is not None else "pooled_fast"
    std = [r[key]["standard"] for r in results]
    spread = {
        "splits": len(std),
        "mean": round(statistics.fmean(std), 2),
        "sd": round(statistics.stdev(std), 2) if len(std) > 1 else 0.0,
        "min": min(std),
        "max": max(std),
    }
    return {
        "settings": len(settings),
        "folds": folds,
        "splits": results,
        "spread": spread,
        "in_sample": {"knobs": settings[best_all[1]], "fast_standard": round(best_all[0], 2)},
    }


PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def official_scorer(nab: list[NabSeries], scorer: Path | None = None) -> Callable[..., Any]:
    """``scores -> the official scorer's three profile scores`` (results in a temporary folder)."""
    from training.anomaly.evaluate import SCORER, run_scorer, write_results

    def run(scores: list[np.ndarray]) -> dict[str, float]:
        with tempfile.TemporaryDirectory() as tmp:
            write_results(tmp, "cv", nab, scores)
            return run_scorer(tmp, "cv", scorer or SCORER)

    return run
