"""Anomaly: a score per value of each series (``POST /anomaly``, v2 ``values`` -> ``scores``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from app import predict
from app.api.oip import InferRequest, Tensor
from app.api.oip_models import meta, series_matrix
from app.api.routes import anomaly as route
from app.container import Container
from app.registry import ModelRecord
from app.services.anomaly import TASK, AnomalyInput, AnomalyService
from app.services.base import TaskService
from app.tasks import PredictEntry, ServiceContext, TaskSpec, register
from contract import anomaly as anomaly_scoring
from contract.card import AnomalyCard


class AnomalyAdapter:
    task = TASK

    def inputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [
            meta(
                "values",
                "FP32",
                [-1, -1],
                meaning="one series per row, in time order; NaN "
                "(binary tensors) marks a missing value",
            )
        ]

    def outputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        threshold = anomaly_scoring.threshold(rec.card)
        return [
            meta("scores", "FP32", [-1, -1], meaning="one score in [0, 1] per value"),
            meta("anomalies", "BOOL", [-1, -1], threshold=threshold),
        ]

    async def infer(self, c: Container, ref: str, req: InferRequest) -> list[Tensor]:
        values = series_matrix(req)
        values[~np.isfinite(values)] = np.nan  # missing, as null is on /anomaly
        series = [AnomalyInput(str(i), row) for i, row in enumerate(values)]
        _, results = await c.get(AnomalyService).score(series, ref)
        scores = np.stack([r.scores for r in results]).astype(np.float32)
        flags = np.zeros(scores.shape, dtype=bool)
        for row, r in enumerate(results):
            flags[row, r.anomalies] = True
        return [Tensor("scores", "FP32", scores), Tensor("anomalies", "BOOL", flags)]


def service(ctx: ServiceContext) -> TaskService[Any]:
    return AnomalyService(ctx.registry, ctx.settings)


# seqserve bench's request: two weeks of an hourly series with a daily and a weekly pattern
SERIES = [float(100 + 20 * ((h % 24) > 8) + (h % 7)) for h in range(336)]

SPEC = register(
    TaskSpec(
        name=TASK,
        card=AnomalyCard,
        service=service,
        router=route.router,
        inference_routes=("/anomaly",),
        adapter=AnomalyAdapter(),
        predict=PredictEntry(
            "score every value of a series read from a CSV column",
            predict.anomaly_arguments,
            predict.run_anomaly,
        ),
        bench={"anomaly": ("/anomaly", {"series": [{"values": SERIES * 6}]})},
    )
)
