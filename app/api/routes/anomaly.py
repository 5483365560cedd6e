"""POST /anomaly: HTTP only; logic in ``app.services.anomaly``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.api.deps import ContainerDep
from app.api.schemas import (
    ERROR_RESPONSES,
    MAX_SERIES,
    MAX_SERIES_VALUES,
    ModelRef,
    json_response,
)
from app.services.anomaly import AnomalyInput, AnomalyService
from app.services.common import MAX_ABS_VALUE

router = APIRouter(tags=["anomaly"])


# What the service reads (it refuses the rest by name): a number with |x| <= 1e30, or null.
_VALUE = {
    "anyOf": [
        {"type": "number", "minimum": -MAX_ABS_VALUE, "maximum": MAX_ABS_VALUE},
        {"type": "null"},
    ]
}


class AnomalySeriesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None, description="series id (default: its position); ids must be unique"
    )
    values: list[Annotated[float | None, Field(strict=True), WithJsonSchema(_VALUE)]] = Field(
        description="observations in time order (numbers, not strings); null (or NaN) marks a "
        "missing value, which scores 0 and is bridged by carrying the last value forward",
        json_schema_extra={"minItems": 1, "maxItems": MAX_SERIES_VALUES},
    )
    timestamps: list[dt.datetime] | None = Field(
        None,
        description="optional ISO 8601 time of each value, strictly increasing; irregular "
        "spacing is reported in warnings (values are read in order, one step each)",
    )


class AnomalyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    series: list[AnomalySeriesIn] = Field(
        description="the series to score (checked against SEQSERVE_MAX_SERIES)",
        json_schema_extra={"minItems": 1, "maxItems": MAX_SERIES},
    )
    model: str | None = Field(None, description='"name" or "name:version"')


class AnomalySeriesOut(BaseModel):
    id: str
    scores: list[float] = Field(description="one score in [0, 1] per value; causal")
    anomalies: list[int] = Field(description="indices whose score is >= threshold")
    threshold: float


class AnomalyResponse(BaseModel):
    results: list[AnomalySeriesOut]
    warnings: list[str] = Field(default_factory=list)
    model: ModelRef


EXAMPLE = {
    "a sensor stream": {
        "value": {
            "series": [
                {
                    "id": "machine-1",
                    "values": [70.0 + (i % 12) * 0.5 for i in range(600)] + [95.0, 96.0],
                }
            ]
        }
    }
}


@router.post(
    "/anomaly",
    summary="Score every point of one or many series for anomalies (causal, streaming-style)",
    responses={200: {"model": AnomalyResponse}, **ERROR_RESPONSES},
)
async def anomaly(
    request: Annotated[AnomalyRequest, Body(openapi_examples=EXAMPLE)], container: ContainerDep
) -> Response:
    series = [
        AnomalyInput(
            s.id if s.id is not None else str(i),
            np.asarray(s.values, dtype=np.float64),  # null -> NaN: missing
            s.timestamps,
        )
        for i, s in enumerate(request.series)
    ]
    rec, results = await container.get(AnomalyService).score(series, request.model)
    out: list[dict[str, Any]] = []
    warnings: list[str] = []
    for r in results:
        out.append(
            {
                "id": r.id,
                "scores": np.round(r.scores, 6),
                "anomalies": r.anomalies,
                "threshold": r.threshold,
            }
        )
        warnings.extend(r.warnings)
    body = {
        "results": out,
        "warnings": warnings,
        "model": {"name": rec.name, "version": rec.version},
    }
    return json_response(body)
