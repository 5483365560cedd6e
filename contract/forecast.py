"""The forecast rules training and serving must agree on, written once (numpy only).

Training calibrates and evaluates with these functions and documents them in the card
(``preprocessing.input``, ``preprocessing.shift.rule``, ``intervals.rule``); serving applies
the same functions to every request, so the intervals it returns are the ones training measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


# --- equivariant scaling (card: preprocessing.normalise) -------------------------------------
#
# forecast(a*x + b) == a*forecast(x) + b for every a > 0 and b, by construction: each window is
# described by a location, a scale and a floor of its own (float64, on the host), the graph
# reads the window in units of those and forecasts in the same units, and every output is
# mapped back with them. The only floor that keeps that property and never gives a
# non-negative history a negative forecast is the window's own minimum (any such floor L has
# L(x) = min(x) + L(x - min(x)) >= min(x)), so every output is floored there. A constant window
# has scale 0: every output is that constant, every interval has width 0.
#
# Two graph spaces, both equivariant:
#   "affine":   g = (x - loc) / scale, loc = mean of the last period;
#   "floorlog": g = ln((x - min) / scale + delta): a log measured from the window's floor,
#               so series that swing from near their minimum to many times it (the night and
#               day of a load curve) are modelled in relative terms, as a log model does.

SCALINGS = ("affine", "floorlog")
G_CLIP = 30.0  # card: preprocessing.normalise.clip; |g| beyond it is clipped before the graph
SPREAD_FLOOR = 1e-6  # graph-space spread floor (card: intervals.rule)
# card: preprocessing.normalise.ceiling_ranges: no output goes above the window's maximum by
# more than this many times its range (a log-space bound at a high level can otherwise reach
# 1e30 on a window whose upper quantile is uncertain); equivariant like the floor
CEILING_RANGES = 5.0


@dataclass(frozen=True)
class WindowNorm:
    """Per-row location, scale, floor and ceiling of windows [N, W] (float64, [N] each)."""

    loc: np.ndarray
    scale: np.ndarray
    floor: np.ndarray
    ceiling: np.ndarray

    def take(self, rows: np.ndarray | slice) -> WindowNorm:
        return WindowNorm(self.loc[rows], self.scale[rows], self.floor[rows], self.ceiling[rows])


@dataclass(frozen=True)
class Scaling:
    """The card's ``preprocessing.normalise``: how raw windows become graph inputs and graph
    outputs become values. Training and serving both call these methods."""

    rule: str = "affine"
    delta: float = 0.1  # floorlog: offset of the log, in scales
    period: int = 24
    clip: float = G_CLIP
    ceiling_ranges: float = CEILING_RANGES

    def __post_init__(self) -> None:
        if self.rule not in SCALINGS:
            raise ValueError(f"normalise rule must be one of {SCALINGS}, got {self.rule!r}")

    def stats(self, x: np.ndarray) -> WindowNorm:
        """loc (affine: mean of the last period; floorlog: the minimum), scale = standard
        deviation of the window (0 for a constant window), floor = the minimum."""
        x = np.asarray(x, dtype=np.float64)
        lo = x.min(axis=1)
        # std of x / max|x|, times max|x|: squares of values below ~1e-154 would underflow
        mag = np.abs(x).max(axis=1)
        unit = np.where(mag > 0, mag, 1.0)
        scale = unit * (x / unit[:, None]).std(axis=1)
        # a spread lost in the float rounding of the values is a constant window
        scale = np.where(scale > 1e-13 * np.abs(x).max(axis=1), scale, 0.0)
        loc = x[:, -self.period :].mean(axis=1) if self.rule == "affine" else lo
        hi = x.max(axis=1)
        return WindowNorm(loc, scale, lo, hi + self.ceiling_ranges * (hi - lo))

    def encode(self, x: np.ndarray, n: WindowNorm) -> np.ndarray:
        """Values [N, T] -> graph units (float64), clipped to +-clip; 0 for constant rows."""
        x = np.asarray(x, dtype=np.float64)
        ok = n.scale[:, None] > 0
        u = (x - n.loc[:, None]) / np.where(ok, n.scale[:, None], 1.0)
        if self.rule == "floorlog":
            u = np.log(np.maximum(u + self.delta, self.delta * 1e-6))
        return np.clip(np.where(ok, u, 0.0), -self.clip, self.clip)

    def decode(self, g: np.ndarray, n: WindowNorm) -> np.ndarray:
        """Graph units [N, ...] -> values, kept within [floor, ceiling] of each window."""
        g = np.asarray(g, dtype=np.float64)
        shape = (-1,) + (1,) * (g.ndim - 1)
        # exp(50) * scale is far above any ceiling: the clip only avoids overflow
        u = np.exp(np.minimum(g, 50.0)) - self.delta if self.rule == "floorlog" else g
        out = n.loc.reshape(shape) + n.scale.reshape(shape) * u
        return np.clip(out, n.floor.reshape(shape), n.ceiling.reshape(shape))


def g_spread(qg: np.ndarray) -> np.ndarray:
    """Half the distance between the highest and lowest graph quantile (graph units), floored:
    the unit of the conformal table and of the per-series scores."""
    return np.maximum(0.5 * (qg[..., -1] - qg[..., 0]), SPREAD_FLOOR)


def g_scores(
    sc: Scaling, y: np.ndarray, med_g: np.ndarray, q_g: np.ndarray, n: WindowNorm
) -> np.ndarray:
    """Conformal scores of targets ``y`` [N, h]: |g(y) - median| / spread, each window in its
    own graph units. A target below the window's floor can never be inside an interval (every
    bound is floored there); its score is capped where the lower bound reaches the floor, so
    such targets (6% of M4's at the daily trough 6 h ahead) count as misses without making
    the multipliers of every other series explode."""
    h = y.shape[1]
    med, spread = med_g[:, :h], g_spread(q_g[:, :h])
    scores = np.abs(sc.encode(y, n) - med) / spread
    g_floor = sc.encode(n.floor[:, None], n)
    cap = np.maximum(med - g_floor, 0.0) / spread
    return np.where(y < n.floor[:, None], np.minimum(scores, cap), scores)


def conformal_quantile(scores: np.ndarray, level: float, axis: int | None = 0) -> np.ndarray:
    """The finite-sample conformal quantile of ``scores`` along ``axis``: the k-th smallest,
    k = ceil((n + 1) L / 100); the largest score when n is too small to resolve L."""
    s = np.sort(scores.ravel() if axis is None else scores, axis=0 if axis is None else axis)
    n = s.shape[0 if axis is None else axis]
    k = min(n, max(1, math.ceil((n + 1) * level / 100.0)))
    return np.take(s, k - 1, axis=0 if axis is None else axis)


def scaled_bounds(
    sc: Scaling, med_g: np.ndarray, spread: np.ndarray, k: np.ndarray, n: WindowNorm
) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) values from the graph-space median [N, H], spread [N, H] and multipliers
    ``k`` ([H], or [N, H] per series): decode(median -/+ k * spread), floored."""
    kk = k if np.ndim(k) == 2 else k[None, :]
    return sc.decode(med_g - kk * spread, n), sc.decode(med_g + kk * spread, n)


# Per-series intervals (card: intervals.per_series): a series with at least `min_origins`
# backtest origins beyond its window gets its own multiplier on the global table, from its
# own errors at the last `max_origins` origins, `stride` points apart, each forecasting the
# `horizon` points after it from the window before it.


def backtest_origins(n: int, window: int, horizon: int, stride: int, max_origins: int) -> list[int]:
    """Cut points of a series of length ``n``, newest first: the last ``horizon`` points are
    the first target, then every ``stride`` points back, each with a full ``window`` before."""
    out: list[int] = []
    o = n - horizon
    while o >= window and len(out) < max_origins:
        out.append(o)
        o -= stride
    return out


def series_ratio(scores: np.ndarray, k: np.ndarray, level: float) -> float:
    """How much the global multipliers ``k`` [H] must be scaled for this series' backtest
    scores [J, H] to reach coverage ``level``: the conformal quantile of scores / k."""
    ratios = scores / np.maximum(k, SPREAD_FLOOR)[None, :]
    return float(conformal_quantile(ratios.ravel(), level, axis=None))


@dataclass(frozen=True)
class Backtests:
    """One series' backtests: the graph inputs of the windows before each origin [J, W], the
    targets after them [J, h] and the windows' norms."""

    inputs: np.ndarray
    targets: np.ndarray
    norm: WindowNorm


def plan_backtests(
    sc: Scaling,
    values: np.ndarray,
    window: int,
    horizon: int,
    min_origins: int,
    max_origins: int,
    stride: int,
) -> Backtests | None:
    """The backtests of one series (None: fewer than ``min_origins`` usable origins, so the
    global table is used). A constant backtest window has no error scale and is skipped."""
    v = np.asarray(values, dtype=np.float64)
    origins = np.asarray(backtest_origins(len(v), window, horizon, stride, max_origins), int)
    if len(origins) < min_origins:
        return None
    win = np.stack([v[o - window : o] for o in origins])
    norm = sc.stats(win)
    keep = norm.scale > 0
    if keep.sum() < min_origins:
        return None
    win, norm = win[keep], norm.take(keep)
    targets = np.stack([v[o : o + horizon] for o in origins[keep]])
    return Backtests(sc.encode(win, norm), targets, norm)


def series_multipliers(
    sc: Scaling,
    bt: Backtests,
    med_g: np.ndarray,
    q_g: np.ndarray,
    k_global: np.ndarray,
    level: float,
) -> np.ndarray:
    """Per-horizon multipliers [h] for one series at ``level``: the global ones scaled by the
    conformal ratio of its backtest scores (graph outputs ``med_g`` [J, >=h], ``q_g``)."""
    scores = g_scores(sc, bt.targets, med_g, q_g, bt.norm)
    return series_ratio(scores, k_global, level) * k_global


def series_factor(
    sc: Scaling,
    bt: Backtests,
    med_g: np.ndarray,
    q_g: np.ndarray,
    k_ref: np.ndarray,
    reference_level: float,
    max_ratio: float,
    min_scores: int,
) -> float | None:
    """One factor for every level and step of a series' intervals (``per_series.rule ==
    "scaled"``): the conformal quantile at ``reference_level`` of its backtest scores over the
    global multipliers at that level ``k_ref`` [H], clipped to [1/max_ratio, max_ratio]. Targets
    below their window's floor are left out (no interval reaches them, whatever the factor);
    None (use the global table) when fewer than ``min_scores`` scores remain. Scaling every
    level by one factor keeps intervals nested and the first steps independent of the
    requested horizon (the backtest always spans the card's max_horizon)."""
    h = min(bt.targets.shape[1], len(k_ref))
    scores = g_scores(sc, bt.targets[:, :h], med_g, q_g, bt.norm)
    ok = bt.targets[:, :h] >= bt.norm.floor[:, None]
    if ok.sum() < min_scores:
        return None
    ratios = (scores / np.maximum(k_ref[:h], SPREAD_FLOOR)[None, :])[ok]
    rho = float(conformal_quantile(ratios, reference_level, axis=None))
    return float(np.clip(rho, 1.0 / max_ratio, max_ratio))


def multipliers(
    sc: Scaling,
    table: np.ndarray,
    grid: np.ndarray | tuple[float, ...],
    level: float,
    horizon: int,
    backtests: list[tuple[Backtests, np.ndarray, np.ndarray] | None],
) -> np.ndarray:
    """Interval multipliers [N, horizon] at ``level`` for N series: the global table's, or per
    series (an entry (backtests, their graph medians, their graph quantiles)) scaled by its own
    backtests' conformal ratio (:func:`series_multipliers`)."""
    k_global = interval_k(table[:horizon], level, grid)
    k = np.repeat(k_global[None, :], len(backtests), axis=0)
    for i, entry in enumerate(backtests):
        if entry is not None:
            k[i] = series_multipliers(sc, entry[0], entry[1], entry[2], k_global, level)
    return k
