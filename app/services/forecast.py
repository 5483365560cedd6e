"""Forecasting: validation, batching, intervals, timestamps.

The exported graph does the per-window scaling itself and returns the median and quantiles in
the (shifted) original scale; the rules the card documents (last window, positive shift,
interval multipliers) come from ``contract.forecast``, the code training calibrated and
evaluated with, so serving never re-derives anything.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import numpy as np

from app.batching import Batcher, Limits
from app.errors import InvalidInput, echo
from app.registry import ModelRecord
from app.services.base import TaskService
from app.services.common import OFF_LOOP_VALUES, check_series, expect, expect_finite, off_loop
from app.settings import Settings
from contract.card import ForecastCard
from contract.forecast import level_labels
from contract.forecaster import Plan, SeriesForecaster

TASK = "forecast"
_FREQ = re.compile(r"^ *([0-9]*) *(s|sec|min|t|h|d|w) *$", re.IGNORECASE | re.ASCII)
_UNIT_SECONDS = {"s": 1, "sec": 1, "min": 60, "t": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_FREQ_COUNT = 999_999
# The frequencies check_freq accepts, as a JSON-schema pattern (no inline flags: each letter
# in both cases).
FREQ_PATTERN = r"^ *(0*[1-9][0-9]{0,5})? *([sS]|[sS][eE][cC]|[mM][iI][nN]|[tT]|[hH]|[dD]|[wW]) *$"


def freq_seconds(freq: str) -> int | None:
    """'h' -> 3600, '15min' -> 900, 'D' -> 86400; None for calendar frequencies (months...)."""
    m = _FREQ.match(freq)
    if not m:
        return None
    return int(m.group(1) or 1) * _UNIT_SECONDS[m.group(2).lower()]


def check_freq(freq: str, where: str) -> int:
    """The step in seconds, or InvalidInput naming ``freq``: unsupported, zero or too long."""
    m = _FREQ.match(freq)
    if not m:
        raise InvalidInput(
            f"{where}: freq {echo(freq)} is not supported; use a number and one of s, min, h, "
            "d, w (e.g. 'h', '15min', 'D')"
        )
    count = int(m.group(1) or 1)
    if not 1 <= count <= MAX_FREQ_COUNT:
        raise InvalidInput(
            f"{where}: freq {echo(freq)} has a step count of {echo(m.group(1))}; it must be "
            f"from 1 to {MAX_FREQ_COUNT}"
        )
    return count * _UNIT_SECONDS[m.group(2).lower()]


def check_levels(levels: list[float]) -> list[str]:
    """The output label of each level (``contract.forecast.level_labels``); a level sent twice
    is InvalidInput naming the field."""
    try:
        return level_labels(levels)
    except ValueError as exc:
        raise InvalidInput(f"level: {exc}") from None


@dataclass
class SeriesInput:
    id: str
    values: list[float] | np.ndarray  # the v2 route passes its tensor rows as they are
    start: dt.datetime | None = None
    freq: str | None = None


@dataclass
class SeriesForecast:
    id: str
    mean: np.ndarray
    bounds: dict[str, np.ndarray]
    timestamps: list[str] | None = None
    warnings: list[str] = field(default_factory=list)
    # "series": intervals calibrated on this series' own backtests; "global": the card's table
    calibration: str = "global"
    backtests: int = 0  # backtest origins behind a "series" calibration


# Warnings about the scale of a series: the model is scale-free, but values this small or this
# large (or varying this little relative to their level) usually mean wrong units or rounding.
TINY_SCALE, HUGE_SCALE, NEAR_CONSTANT = 1e-9, 1e12, 1e-9


class ForecastModel:
    def __init__(self, rec: ModelRecord, settings: Settings) -> None:
        card = rec.spec
        assert isinstance(card, ForecastCard)
        self.record = rec
        self.window = card.window
        self.max_horizon = card.max_horizon
        self.period = card.seasonal_period
        self.freq = card.freq
        self.min_length = card.min_length or self.period
        self.core = SeriesForecaster.from_card(card)
        self.input_name = card.onnx.input_names[0]
        self.median_name, self.quantiles_name = "median", "quantiles"
        self.session = rec.sessions["model"]
        # Batching off (max_batch_size 1) applies here too; on, whole requests fit in one batch.
        batch = 1 if settings.max_batch_size == 1 else settings.forecast_max_batch_size
        self.batcher: Batcher[np.ndarray, tuple[np.ndarray, np.ndarray]] = Batcher(
            self._predict,
            rec.ref,
            batch,
            settings.max_batch_wait_ms,
            limits=Limits.from_settings(settings),
        )

    def _predict(self, windows: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        res = self.session.run(
            {self.input_name: np.stack(windows)}, [self.median_name, self.quantiles_name]
        )
        med, q = res[self.median_name], res[self.quantiles_name]
        return [(med[i], q[i]) for i in range(len(windows))]

    def smoke(self) -> None:
        """One real inference before the model takes traffic (raises ModelLoadError)."""
        plan = self.core.plan([np.linspace(10.0, 20.0, self.window)], self.max_horizon)
        med, q = self._predict([plan.inputs[0]])[0]
        expect_finite(med, (self.max_horizon,), "median")
        expect(q.shape[0] == self.max_horizon, f"quantiles have shape {q.shape}")
        expect(bool(np.isfinite(q).all()), "quantiles have non-finite values")

    async def close(self) -> None:
        await self.batcher.close()

    def validate(self, series: list[SeriesInput], horizon: int) -> None:
        if not 1 <= horizon <= self.max_horizon:
            raise InvalidInput(
                f"horizon must be between 1 and {self.max_horizon} for this model, got {horizon}"
            )
        for s in series:
            if len(s.values) < self.min_length:
                raise InvalidInput(
                    f"series {echo(s.id)} has {len(s.values)} values; the model needs at least "
                    f"{self.min_length} (one seasonal period of {self.period})"
                )
            if (s.start is None) != (s.freq is None) and s.start is not None:
                raise InvalidInput(
                    f"series {echo(s.id)}: 'start' needs 'freq' to compute timestamps"
                )
            if s.freq is not None:
                step = dt.timedelta(seconds=check_freq(s.freq, f"series {echo(s.id)}"))
                if s.start is not None:
                    try:  # the last timestamp: past year 9999 is an error, not a 500
                        s.start + step * (len(s.values) + horizon - 1)
                    except OverflowError:
                        raise InvalidInput(
                            f"series {echo(s.id)}: timestamps from start "
                            f"{s.start.isoformat()} every freq {echo(s.freq)} run past the year "
                            "9999; send an earlier start or a shorter freq"
                        ) from None

    async def forecast(
        self, series: list[SeriesInput], horizon: int | None, levels: list[float]
    ) -> list[SeriesForecast]:
        horizon = self.max_horizon if horizon is None else horizon
        # refuse before windowing when the model is full (a backtest row per series at most)
        self.batcher.admit(len(series) * (2 if self.core.per_series is not None else 1))
        # Millions of values take ~0.1 s to check and window: in a thread, so probes and small
        # requests keep being answered meanwhile.
        big = sum(len(s.values) for s in series) >= OFF_LOOP_VALUES
        plan = await off_loop(big, self._prepare, series, horizon, levels)
        outs = await self.batcher.submit_many(list(plan.inputs))
        return await off_loop(big, self._finish, series, outs, horizon, levels, plan)

    def _prepare(self, series: list[SeriesInput], horizon: int, levels: list[float]) -> Plan:
        """Checks, then the graph rows (``contract.forecaster``)."""
        self.validate(series, horizon)
        check_levels(levels)
        return self.core.plan([np.asarray(s.values, dtype=np.float64) for s in series], horizon)

    def _finish(
        self,
        series: list[SeriesInput],
        outs: list[tuple[np.ndarray, np.ndarray]],
        horizon: int,
        levels: list[float],
        plan: Plan,
    ) -> list[SeriesForecast]:
        """Means, interval bounds, warnings and timestamps from the model's outputs."""
        med = np.stack([o[0] for o in outs])
        q = np.stack([o[1] for o in outs])
        fc = self.core.outputs(plan, med, q, horizon, levels)
        results = []
        for i, s in enumerate(series):
            r = SeriesForecast(s.id, fc.mean[i], {k: v[i] for k, v in fc.bounds.items()})
            if fc.backtests[i]:
                r.calibration, r.backtests = "series", int(fc.backtests[i])
            r.warnings.extend(self._warnings(s, plan, i))
            if s.freq is not None and freq_seconds(s.freq) != freq_seconds(self.freq):
                r.warnings.append(
                    f"series {echo(s.id)} has freq {echo(s.freq)} but the model was trained on "
                    f"{self.freq!r} data with seasonal period {self.period}; forecasts may be poor"
                )
            if s.start is not None and s.freq is not None:
                step = dt.timedelta(seconds=freq_seconds(s.freq) or 0)
                first = s.start + step * len(s.values)
                r.timestamps = [(first + step * h).isoformat() for h in range(horizon)]
            results.append(r)
        return results

    def _warnings(self, s: SeriesInput, prep: Plan, i: int) -> list[str]:
        """What the model had to assume about this series, in words."""
        out: list[str] = []
        sid = echo(s.id)
        if len(s.values) < self.window:
            out.append(
                f"series {sid} has {len(s.values)} values, fewer than the model's window of "
                f"{self.window}: the window was padded by repeating its first seasonal cycle "
                f"({self.period} values)"
            )
        if prep.norm is None:
            if prep.shift is not None and prep.shift[i] > 0:
                out.append(
                    f"series {sid} has values <= 0: it was shifted up by {prep.shift[i]:.6g} "
                    "for the model's log scale and back; this model's forecasts change when "
                    "a constant is added to a series"
                )
            return out
        scale, level = prep.norm.scale[i], abs(float(prep.norm.loc[i]))
        if scale == 0:
            out.append(
                f"series {sid} is constant over the model's window: its forecast is that "
                "constant, with zero-width intervals"
            )
        elif scale < NEAR_CONSTANT * level:
            out.append(
                f"series {sid} is near-constant: its variation ({scale:.3g}) is a "
                f"{scale / level:.1e} fraction of its level ({level:.6g}); the forecast "
                "follows that variation, which may be rounding noise"
            )
        elif scale < TINY_SCALE or scale > HUGE_SCALE:
            out.append(
                f"series {sid} varies on a scale of {scale:.3g}: the model forecasts in units "
                "of each series' own spread, so this is fine if the units are right"
            )
        return out


class ForecastService(TaskService[ForecastModel]):
    task = TASK

    def build(self, rec: ModelRecord) -> ForecastModel:
        return ForecastModel(rec, self.settings)

    async def forecast(
        self, series: list[SeriesInput], horizon: int | None, levels: list[float], model: str | None
    ) -> tuple[ModelRecord, list[SeriesForecast]]:
        rec, m = self.resolve(model)
        check_series(
            [s.id for s in series],
            [len(s.values) for s in series],
            self.settings.max_series,
            self.settings.max_series_values,
        )
        return rec, await m.forecast(series, horizon, levels)
