"""POST /forecast: HTTP only; logic in ``app.services.forecast``."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.deps import ContainerDep
from app.api.schemas import (
    ERROR_RESPONSES,
    MAX_SERIES,
    MAX_SERIES_VALUES,
    ModelRef,
    json_response,
)
from app.errors import InvalidInput
from app.services.common import MAX_ABS_VALUE
from app.services.forecast import FREQ_PATTERN, ForecastService, SeriesInput, check_freq
from contract.forecast import level_labels

router = APIRouter(tags=["forecast"])

# Magnitudes past MAX_ABS_VALUE are refused by name (series[i].values[j]).
FiniteFloat = Annotated[
    float, Field(strict=True, allow_inf_nan=False, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)
]


class SeriesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None, description="series id (default: its position); ids must be unique"
    )
    values: list[FiniteFloat] = Field(
        description="observations, oldest first; finite numbers with |x| <= 1e30 only. "
        "Longer than the model's window: only the most recent window is read",
        json_schema_extra={"maxItems": MAX_SERIES_VALUES},
    )
    start: dt.datetime | None = Field(
        None, description="timestamp of values[0]; with freq, adds timestamps"
    )
    freq: str | None = Field(
        None,
        json_schema_extra={"pattern": FREQ_PATTERN},  # checked by check_freq, in words
        description="spacing of the values: an optional step count from 1 to 999999 and a unit, "
        "s, min (or t), h, d or w in either case: 'h', '15min', 'D', 'W'",
    )

    @field_validator("freq")
    @classmethod
    def _known_freq(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_freq(value, "freq")
            except InvalidInput as exc:
                raise ValueError(exc.message.removeprefix("freq: ")) from None
        return value


class ForecastRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    series: list[SeriesIn] = Field(
        description="the series to forecast (checked against SEQSERVE_MAX_SERIES)",
        json_schema_extra={"minItems": 1, "maxItems": MAX_SERIES},
    )
    horizon: int | None = Field(
        None, ge=1, description="steps to forecast, 1..max_horizon (default: max_horizon)"
    )
    level: list[Annotated[float, Field(gt=0, lt=100)]] = Field(
        default_factory=lambda: [80.0, 95.0],
        max_length=10,
        description="prediction-interval levels in percent, each in (0, 100), each once; "
        "outputs are named lo-<level> / hi-<level> with the level written exactly (80, 99.5, "
        "99.99999999)",
        json_schema_extra={"uniqueItems": True},
    )
    model: str | None = Field(None, description='"name" or "name:version"')

    @field_validator("level")
    @classmethod
    def _each_level_once(cls, value: list[float]) -> list[float]:
        level_labels(value)  # the shared rule; its ValueError becomes a 422 naming "level"
        return value


class SeriesForecastOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # plus lo-<level> / hi-<level> arrays

    id: str
    mean: list[float]
    timestamps: list[str] | None = None
    calibration: Literal["series", "global"] = Field(
        description="series: the intervals were calibrated on this series' own backtests "
        "(the model forecast its last stretches from the values before them); global: the "
        "model card's table (too little history beyond the model's window, or a model "
        "without per-series calibration)"
    )
    backtests: int = Field(description="backtest origins behind a 'series' calibration (0: global)")


class ForecastResponse(BaseModel):
    forecasts: list[SeriesForecastOut]
    warnings: list[str] = Field(default_factory=list)
    model: ModelRef


EXAMPLE = {
    "hourly series": {
        "value": {
            "series": [
                {
                    "id": "H1",
                    "values": [605.0, 586.0, 586.0, 559.0] * 12,
                    "start": "2017-01-01T00:00:00",
                    "freq": "h",
                }
            ],
            "horizon": 48,
            "level": [80, 95],
        }
    }
}


@router.post(
    "/forecast",
    summary="Forecast one or many series with prediction intervals",
    responses={200: {"model": ForecastResponse}, **ERROR_RESPONSES},
)
async def forecast(
    request: Annotated[ForecastRequest, Body(openapi_examples=EXAMPLE)], container: ContainerDep
) -> Response:
    series = [
        SeriesInput(s.id if s.id is not None else str(i), s.values, s.start, s.freq)
        for i, s in enumerate(request.series)
    ]
    rec, results = await container.get(ForecastService).forecast(
        series, request.horizon, request.level, request.model
    )
    out: list[dict[str, Any]] = []
    warnings: list[str] = []
    for r in results:
        item: dict[str, Any] = {
            "id": r.id,
            "mean": r.mean,
            **r.bounds,
            "calibration": r.calibration,
            "backtests": r.backtests,
        }
        if r.timestamps is not None:
            item["timestamps"] = r.timestamps
        out.append(item)
        warnings.extend(r.warnings)
    body = {
        "forecasts": out,
        "warnings": warnings,
        "model": {"name": rec.name, "version": rec.version},
    }
    # orjson writes numpy arrays directly: 414 series x 48 steps x 5 arrays in a few ms.
    return json_response(body)
