"""Forecast: series in, mean and prediction intervals out (``POST /forecast``, v2 ``values``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from app import predict
from app.api.oip import InferRequest, Tensor
from app.api.oip_models import int_param, interval_levels, meta, series_matrix
from app.api.routes import forecast as route
from app.container import Container
from app.errors import InvalidInput
from app.registry import ModelRecord
from app.services.base import TaskService
from app.services.common import MAX_ABS_VALUE
from app.services.forecast import TASK, ForecastService, SeriesInput
from app.tasks import PredictEntry, ServiceContext, TaskSpec, register
from contract.card import ForecastCard
from contract.forecast import level_label


class ForecastAdapter:
    task = TASK

    def inputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [meta("values", "FP32", [-1, -1], meaning="one series per row, oldest first")]

    def outputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        h = int(rec.card["max_horizon"])
        return (
            [meta("mean", "FP32", [-1, h])]
            + [
                meta(f"{side}-{level}", "FP32", [-1, h], level=level)
                for level in (80, 95)
                for side in ("lo", "hi")
            ]
            + [
                meta(
                    "backtests",
                    "INT64",
                    [-1],
                    meaning="backtest origins the series' intervals were calibrated on "
                    "(0: the card's global table)",
                )
            ]
        )

    async def infer(self, c: Container, ref: str, req: InferRequest) -> list[Tensor]:
        values = series_matrix(req)
        bad = ~np.isfinite(values) | (np.abs(values) > MAX_ABS_VALUE)
        if bad.any():
            row, col = (int(x) for x in np.argwhere(bad)[0])
            raise InvalidInput(
                f"input 'values'[{row}][{col}] must be a finite number with |x| <= 1e30"
            )
        horizon = int_param(req, "horizon", None)
        levels = interval_levels(req)
        series = [SeriesInput(str(i), row) for i, row in enumerate(values)]
        _, results = await c.get(ForecastService).forecast(series, horizon, levels, ref)
        out = [Tensor("mean", "FP32", np.stack([r.mean for r in results]).astype(np.float32))]
        for level in levels:
            for side in ("lo", "hi"):
                key = f"{side}-{level_label(level)}"
                out.append(
                    Tensor(
                        key, "FP32", np.stack([r.bounds[key] for r in results]).astype(np.float32)
                    )
                )
        out.append(Tensor("backtests", "INT64", np.asarray([r.backtests for r in results])))
        return out


def service(ctx: ServiceContext) -> TaskService[Any]:
    return ForecastService(ctx.registry, ctx.settings)


# seqserve bench's request: two weeks of an hourly series with a daily and a weekly pattern
SERIES = [float(100 + 20 * ((h % 24) > 8) + (h % 7)) for h in range(336)]

SPEC = register(
    TaskSpec(
        name=TASK,
        card=ForecastCard,
        service=service,
        router=route.router,
        inference_routes=("/forecast",),
        adapter=ForecastAdapter(),
        predict=PredictEntry(
            "forecast one series read from a CSV column",
            predict.forecast_arguments,
            predict.run_forecast,
        ),
        bench={"forecast": ("/forecast", {"series": [{"values": SERIES}], "horizon": 48})},
    )
)
