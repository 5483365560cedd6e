"""The computation around the forecast graph, once, for serving and for training's figures.

``SeriesForecaster`` holds what a forecast card says (window, period, scaling or shift, the
conformal table, per-series calibration) and turns series into graph rows (:meth:`plan`) and
graph outputs into means and interval bounds (:meth:`outputs`). Serving wraps it with
validation, batching, warnings and timestamps; training's coverage figures run the exported
graph through the same two calls, so the card reports what the API returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contract.card import ForecastCard
from contract.forecast import (
    Backtests,
    Scaling,
    WindowNorm,
    g_spread,
    interval_bounds,
    interval_k,
    last_window,
    level_label,
    log_spread,
    multipliers,
    plan_backtests,
    positive_shift,
    scaled_bounds,
    series_factor,
)


@dataclass(frozen=True)
class PerSeries:
    """card: intervals.per_series."""

    min_origins: int
    max_origins: int
    stride: int
    rule: str = "levelwise"
    reference_level: float = 80.0
    max_ratio: float = 4.0
    min_scores: int = 24


@dataclass
class Plan:
    """The graph rows of one request and what is needed to read their outputs back."""

    inputs: np.ndarray  # float32 [R, W]: one row per series, then the backtest windows
    raw: np.ndarray  # float64 [N, W]: the series' last windows
    shift: np.ndarray | None = None  # versions 1-2
    norm: WindowNorm | None = None  # scaled models
    # per series with per-series intervals: its backtests and their rows among the inputs
    backtests: dict[int, tuple[Backtests, slice]] = field(default_factory=dict)


@dataclass
class Forecasts:
    mean: np.ndarray  # [N, h]
    bounds: dict[str, np.ndarray]  # lo-<level> / hi-<level>: [N, h]
    backtests: np.ndarray  # [N] backtest origins behind each series' intervals (0: global)


@dataclass(frozen=True)
class SeriesForecaster:
    window: int
    period: int
    table: np.ndarray  # [max_horizon, levels]: rows past the card's table repeat its last
    grid: np.ndarray
    scaling: Scaling | None = None  # None: versions 1-2 (positive shift, log in-graph)
    rel_margin: float = 0.1
    abs_floor: float = 1.0
    per_series: PerSeries | None = None
    # "scaled" per-series rule: the global multipliers at its reference level, once per model
    k_ref: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        ps = self.per_series
        if ps is not None and ps.rule == "scaled":
            k_ref = interval_k(self.table, ps.reference_level, self.grid)
            object.__setattr__(self, "k_ref", k_ref)

    @classmethod
    def from_card(cls, card: ForecastCard) -> SeriesForecaster:
        table = np.asarray(card.intervals.table, dtype=np.float64)
        if table.shape[0] < card.max_horizon:  # card: beyond the table use its last row
            extra = np.repeat(table[-1:], card.max_horizon - table.shape[0], axis=0)
            table = np.concatenate([table, extra])
        pre, ps = card.preprocessing, card.intervals.per_series
        scaling = None
        if pre.normalise is not None:
            nm = pre.normalise
            scaling = Scaling(nm.rule, nm.delta, card.seasonal_period, nm.clip, nm.ceiling_ranges)
        return cls(
            window=card.window,
            period=card.seasonal_period,
            table=table,
            grid=np.asarray(card.intervals.levels, dtype=np.float64),
            scaling=scaling,
            rel_margin=pre.shift.rel_margin if pre.shift is not None else 0.1,
            abs_floor=pre.shift.abs_floor if pre.shift is not None else 1.0,
            # per-series calibration needs the graph-unit scores only scaled models have
            per_series=(
                PerSeries(
                    ps.min_origins,
                    ps.max_origins,
                    ps.stride,
                    ps.rule,
                    ps.reference_level,
                    ps.max_ratio,
                    ps.min_scores,
                )
                if ps is not None and scaling is not None
                else None
            ),
        )

    def plan(self, values: list[np.ndarray], horizon: int) -> Plan:
        """Graph rows: the last window of each series (shifted, or in graph units) and, for
        per-series intervals, the windows before each backtest origin."""
        raw = np.stack([last_window(v, self.window, self.period) for v in values])
        if self.scaling is None:
            shift = positive_shift(raw, self.rel_margin, self.abs_floor)
            return Plan((raw + shift[:, None]).astype(np.float32), raw, shift=shift)
        sc, ps = self.scaling, self.per_series
        norm = sc.stats(raw)
        rows = [sc.encode(raw, norm)]
        plan = Plan(np.empty(0), raw, norm=norm)
        start = len(values)
        # "scaled": the backtest spans the card's max_horizon whatever the request's horizon
        bt_h = self.table.shape[0] if ps is not None and ps.rule == "scaled" else horizon
        for i, v in enumerate(values):
            if ps is None:
                break
            if norm.scale[i] == 0:  # a constant window: every output is that constant
                continue
            bt = plan_backtests(sc, v, self.window, bt_h, ps.min_origins, ps.max_origins, ps.stride)
            if bt is None:
                continue
            rows.append(bt.inputs)
            plan.backtests[i] = (bt, slice(start, start + len(bt.inputs)))
            start += len(bt.inputs)
        plan.inputs = np.concatenate(rows).astype(np.float32)
        return plan

    def outputs(
        self, plan: Plan, med: np.ndarray, q: np.ndarray, horizon: int, levels: list[float]
    ) -> Forecasts:
        """Means and bounds from the graph's outputs for ``plan.inputs`` (median [R, >=h],
        quantiles [R, >=h, Q], any float dtype)."""
        full = (med, q)  # "scaled" backtests read every step
        med = np.asarray(med, dtype=np.float64)[:, :horizon]
        q = np.asarray(q, dtype=np.float64)[:, :horizon]
        n = len(plan.raw)
        bounds: dict[str, np.ndarray] = {}
        counts = np.zeros(n, dtype=np.int64)
        if plan.norm is None:  # versions 1-2: shifted log space
            assert plan.shift is not None
            shift = plan.shift
            spread = log_spread(q)
            for level in sorted(levels):
                k = interval_k(self.table[:horizon], level, self.grid)
                name = level_label(level)
                bounds[f"lo-{name}"], bounds[f"hi-{name}"] = interval_bounds(med, spread, shift, k)
            return Forecasts(med - shift[:, None], bounds, counts)
        sc, ps = self.scaling, self.per_series
        assert sc is not None
        spread = g_spread(q[:n])
        entries: list[tuple[Backtests, np.ndarray, np.ndarray] | None] = [None] * n
        factors = np.ones(n)
        full_med = np.asarray(full[0], dtype=np.float64)
        full_q = np.asarray(full[1], dtype=np.float64)
        for i, (bt, rows) in plan.backtests.items():
            if ps is not None and self.k_ref is not None:  # rule "scaled"
                f = series_factor(
                    sc,
                    bt,
                    full_med[rows],
                    full_q[rows],
                    self.k_ref,
                    ps.reference_level,
                    ps.max_ratio,
                    ps.min_scores,
                )
                if f is None:
                    continue
                factors[i] = f
            else:
                entries[i] = (bt, med[rows], q[rows])
            counts[i] = len(bt.targets)
        for level in sorted(levels):
            k = multipliers(sc, self.table, self.grid, level, horizon, entries)
            k = k * factors[:, None]
            name = level_label(level)
            bounds[f"lo-{name}"], bounds[f"hi-{name}"] = scaled_bounds(
                sc, med[:n], spread, k, plan.norm
            )
        return Forecasts(sc.decode(med[:n], plan.norm), bounds, counts)
