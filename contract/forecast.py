"""The forecast rules training and serving must agree on, written once (numpy only).

Training calibrates and evaluates with these functions and documents them in the card
(``preprocessing.input``, ``preprocessing.shift.rule``, ``intervals.rule``); serving applies
the same functions to every request, so the intervals it returns are the ones training measured.
"""

from __future__ import annotations

import math

import numpy as np

REL_MARGIN = 0.1  # card: preprocessing.shift.rel_margin
ABS_FLOOR = 1.0  # card: preprocessing.shift.abs_floor
# Interval levels (percent) at which training stores the conformal table (card:
# intervals.levels); serving reads the levels from the card, never from here.
LEVEL_GRID = (
    0.0,
    5,
    10,
    15,
    20,
    25,
    30,
    35,
    40,
    45,
    50,
    55,
    60,
    65,
    70,
    75,
    80,
    85,
    90,
    95,
    97.5,
    99.0,
)


def level_label(level: float) -> str:
    """The name of an interval level in outputs (``lo-<label>``, ``hi-<label>``).

    Six significant digits (``80``, ``95``, ``99.5``, ``97.5``) when they give the level back
    exactly, else the shortest decimal that does (``80.0000000001``, ``99.99999999``), so two
    different levels never share a label and no level below 100 is labelled ``100``.
    """
    text = f"{level:g}"
    return text if float(text) == level else repr(float(level))


def level_labels(levels: list[float]) -> list[str]:
    """The output label of each level, in order; the one rule "each level once" (REST, v2 and
    the service apply it): two levels with the same label (80 and 80.0) are a ValueError naming
    both, whose message the callers prefix with the field (``level: ...``)."""
    labels: dict[str, float] = {}
    for level in levels:
        label = level_label(level)
        if label in labels:
            raise ValueError(
                f"{labels[label]!r} and {level!r} are the same level (lo-{label}); "
                "send each level once"
            )
        labels[label] = level
    return list(labels)


def positive_shift(
    x: np.ndarray, rel_margin: float = REL_MARGIN, abs_floor: float = ABS_FLOOR
) -> np.ndarray:
    """Shift that makes each row of ``x`` strictly positive (0 when it already is).

    The graph works in log space, so serving adds this before the graph and subtracts it from
    every output; per row (card: preprocessing.shift.rule):

        shift = 0                  if min(x) > 0
        shift = -min(x) + margin   otherwise, where
        margin = max(rel_margin * (max(x) - min(x)), rel_margin * max|x|), or abs_floor if 0
    """
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(axis=-1), x.max(axis=-1)
    mag = np.abs(x).max(axis=-1)
    margin = np.maximum(rel_margin * (hi - lo), rel_margin * mag)
    margin = np.where(margin > 0, margin, abs_floor)
    return np.where(lo > 0, 0.0, -lo + margin)


def last_window(x: np.ndarray, window: int, period: int) -> np.ndarray:
    """The most recent ``window`` points (card: preprocessing.input).

    Shorter series are left-padded by repeating their first seasonal cycle, so the padding ends
    just before ``x[0]`` in the right phase: pad[i] = x[(i - pad_len) mod period]. Callers
    refuse series shorter than the card's minimum length before this (serving: 422).
    """
    if len(x) >= window:
        return x[-window:]
    pad = window - len(x)
    reps = np.tile(x[:period], pad // period + 2)
    start = (-pad) % period  # x[0] has phase 0
    return np.concatenate([reps[start : start + pad], x])


def log_spread(q: np.ndarray) -> np.ndarray:
    """Half the log distance between the lowest and highest quantile (shifted space), floored.

    ``q`` [..., H, Q] holds the graph's quantiles (card: quantile_levels, 0.1 / 0.5 / 0.9), so
    this is (ln q0.9 - ln q0.1) / 2, the unit the conformal table is expressed in.
    """
    lo = np.log(np.maximum(q[..., 0], 1e-12))
    hi = np.log(np.maximum(q[..., -1], 1e-12))
    return np.maximum(0.5 * (hi - lo), 1e-6)


def tail_ratio(level: float, top: float) -> float:
    """How much wider than at level ``top`` the interval is at ``level`` > ``top``.

    An exponential (Laplace-like) tail: levels beyond what calibration resolved stay wider.
    """
    return math.log(1 - level / 100) / math.log(1 - top / 100)


def interval_k(
    table: np.ndarray, level: float, grid: np.ndarray | tuple[float, ...] = LEVEL_GRID
) -> np.ndarray:
    """Multiplier per horizon step for ``level`` in (0, 100) (card: intervals.rule).

    Linear interpolation of each table row over ``grid`` (the card's ``intervals.levels``) up
    to its last level, the exponential tail of :func:`tail_ratio` above it.
    """
    if not 0 < level < 100:
        raise ValueError("level must be in (0, 100)")
    grid = np.asarray(grid, dtype=np.float64)
    if level <= grid[-1]:
        return np.array([np.interp(level, grid, row) for row in table])
    return table[:, -1] * tail_ratio(level, float(grid[-1]))


def interval_bounds(
    med: np.ndarray, spread: np.ndarray, shift: np.ndarray, k: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) in the original scale from the shifted median [N, H], its log spread [N, H],
    the shift [N] and the multipliers [H]: median * exp(-/+ k * spread) - shift."""
    kk = k[None, :]
    return med * np.exp(-kk * spread) - shift[:, None], med * np.exp(kk * spread) - shift[:, None]
