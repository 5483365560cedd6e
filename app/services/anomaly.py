"""Anomaly scores for streams: a recurrent one-step forecaster read over the whole series.

The numpy rules around the graph (scaling from a warm-up, carried-forward missing values,
normalised errors, the anomaly likelihood, one alarm per event) live in
``contract.anomaly``, shared with the training code that measured them on NAB, so
serving returns what the card's figures describe. Scoring is causal: the score at t depends only
on values up to t, so a prefix of a series gets the scores the whole series gets on it.

Series are batched through the model right-padded (the GRU is causal, so padding at the end
changes no earlier output), in runs of similar length so a long series does not make short ones
pay for its padding. The numpy post-processing runs in the inference thread, not on the event
loop.

Memory is bounded by ``SEQSERVE_MEMORY_BUDGET_MB``: the graph keeps every step's recurrent
activations (~16 x hidden bytes per value: a 100,000-value series takes ~50 MB), so the batcher
stops a batch at the budget in values and each graph call takes only as many rows as fit. The
graph has no state inputs, so a series is never cut in time (that would change its scores);
one series alone always runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np

from app.batching import Batcher, Limits, shared_pool
from app.errors import InvalidInput, ModelLoadError
from app.registry import ModelRecord
from app.services.base import TaskService
from app.services.common import MAX_ABS_VALUE, check_series, expect
from app.settings import Settings
from contract import anomaly as anomaly_scoring

TASK = "anomaly"


@dataclass
class AnomalyInput:
    id: str
    values: np.ndarray  # float64; NaN marks a missing value
    timestamps: list[dt.datetime] | None = None


@dataclass
class AnomalyResult:
    id: str
    scores: np.ndarray
    anomalies: np.ndarray
    threshold: float
    warnings: list[str] = field(default_factory=list)


class AnomalyModel:
    def __init__(self, rec: ModelRecord, settings: Settings) -> None:
        card = rec.card
        self.record = rec
        self.card = card
        self.warmup = int(anomaly_scoring.scoring_params(card)["warmup"])
        self.threshold = anomaly_scoring.threshold(card)
        self.input_name = rec.spec.onnx.input_names[0]
        names = rec.spec.onnx.output_names
        if "mean" not in names or "log_scale" not in names:
            raise ModelLoadError(f"card outputs {names}: expected 'mean' and 'log_scale'")
        self.output_names = ["mean", "log_scale"]
        self.session = rec.sessions["model"]
        sizes = card.get("sizes") or {}
        # Working memory per value in bytes: the graph's activations plus float64 scoring.
        self.value_bytes = 16 * int(sizes.get("hidden", 64)) * int(sizes.get("layers", 1)) + 100
        self.budget = settings.memory_budget_mb * 1_000_000
        batch = 1 if settings.max_batch_size == 1 else settings.forecast_max_batch_size
        self.batcher: Batcher[np.ndarray, np.ndarray] = Batcher(
            self._score,
            rec.ref,
            batch,
            settings.max_batch_wait_ms,
            limits=Limits.from_settings(settings),
            cost=lambda v: len(v) * self.value_bytes,
            max_batch_cost=self.budget,
            pool=shared_pool(self.budget),
        )

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        res = self.session.run({self.input_name: x}, self.output_names)
        return res["mean"], res["log_scale"]

    def _score(self, series: list[np.ndarray]) -> list[np.ndarray]:
        """Runs in the batcher's thread: the graph over groups of similar length, then scoring."""
        inputs = [anomaly_scoring.prepare(v, self.card) for v in series]
        longest = max((len(x) for x in inputs), default=1)
        rows = int(self.budget // max(1, longest * self.value_bytes))  # rows that fit the budget
        outs = anomaly_scoring.run_graph(self._run, inputs, max_batch=max(1, min(16, rows)))
        return [anomaly_scoring.finish(v, o, self.card) for v, o in zip(series, outs, strict=True)]

    def smoke(self) -> None:
        """One real scoring before the model takes traffic (raises ModelLoadError)."""
        t = np.arange(self.warmup + 400, dtype=np.float64)
        x = 10 + np.sin(2 * np.pi * t / 24)
        x[-50] += 8  # a spike should not break anything
        s = self._score([x, x[: self.warmup + 10]])
        expect(s[0].shape == x.shape, f"scores have shape {s[0].shape}, the series {x.shape}")
        expect(bool(np.isfinite(s[0]).all()), "scores have non-finite values")
        expect(bool(((s[0] >= 0) & (s[0] <= 1)).all()), "scores outside [0, 1]")
        expect(bool(np.array_equal(s[1], s[0][: len(s[1])])), "scores are not causal")

    async def close(self) -> None:
        await self.batcher.close()

    def _warnings(self, s: AnomalyInput) -> list[str]:
        out = []
        n = len(s.values)
        missing = int(np.count_nonzero(np.isnan(s.values)))
        if n < self.warmup:
            out.append(
                f"series {s.id!r} has {n} values; the model learns a series' scale from its "
                f"first {self.warmup}, so every score is 0"
            )
        if missing:
            out.append(
                f"series {s.id!r} has {missing} missing values: the last value is carried "
                "forward for the model and they score 0"
            )
        if s.timestamps is not None and n > 2:
            steps = np.diff(np.asarray([t.timestamp() for t in s.timestamps]))
            back = np.flatnonzero(steps <= 0)
            if len(back):
                out.append(
                    f"series {s.id!r} has {len(back)} timestamps that are not after the one "
                    f"before (first: timestamps[{int(back[0]) + 1}]); values are read in the "
                    "order sent"
                )
            forward = steps[steps > 0]
            typical = float(np.median(forward)) if len(forward) else 0.0
            gaps = int(np.count_nonzero(forward > 1.5 * typical))
            if gaps:
                out.append(
                    f"series {s.id!r} is irregular: {gaps} gaps longer than 1.5x its median "
                    f"step of {typical:g} s; values are read in order, one step each"
                )
        return out

    async def score(self, series: list[AnomalyInput]) -> list[AnomalyResult]:
        self.batcher.admit(len(series))  # refuse before any work when the model is full
        scores = await self.batcher.submit_many([s.values for s in series])
        results = []
        for s, sc in zip(series, scores, strict=True):
            results.append(
                AnomalyResult(
                    s.id,
                    sc,
                    np.flatnonzero(sc >= self.threshold),
                    self.threshold,
                    self._warnings(s),
                )
            )
        return results


class AnomalyService(TaskService[AnomalyModel]):
    task = TASK

    def build(self, rec: ModelRecord) -> AnomalyModel:
        return AnomalyModel(rec, self.settings)

    def validate(self, series: list[AnomalyInput]) -> None:
        check_series(
            [s.id for s in series],
            [len(s.values) for s in series],
            self.settings.max_series,
            self.settings.max_series_values,
        )
        for s in series:
            n = len(s.values)
            if n == 0:
                raise InvalidInput(f"series {s.id!r} has no values")
            big = np.flatnonzero(np.abs(np.nan_to_num(s.values)) > MAX_ABS_VALUE)
            if len(big):
                raise InvalidInput(
                    f"series {s.id!r}: values[{int(big[0])}] is beyond +-1e30; send values "
                    "in a smaller unit"
                )
            if s.timestamps is not None:
                if len(s.timestamps) != n:
                    raise InvalidInput(
                        f"series {s.id!r} has {n} values and {len(s.timestamps)} timestamps; "
                        "send one timestamp per value or none"
                    )
                self._check_order(s)

    @staticmethod
    def _check_order(s: AnomalyInput) -> None:
        ts = s.timestamps or []
        if ts and len({t.tzinfo is None for t in ts}) > 1:
            raise InvalidInput(f"series {s.id!r} mixes timestamps with and without a time zone")

    async def score(
        self, series: list[AnomalyInput], model: str | None
    ) -> tuple[ModelRecord, list[AnomalyResult]]:
        rec, m = self.resolve(model)
        self.validate(series)
        return rec, await m.score(series)
