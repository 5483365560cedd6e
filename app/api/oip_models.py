"""Open Inference Protocol faces of the task services: tensors in, task calls, tensors out.

Each task has one adapter that says which tensors its models take and give (for
``GET /v2/models/{name}``) and turns an inference request into a call on the *same* task
service the ``/sentiment``, ``/next-word`` and ``/forecast`` routes use, so batching, limits,
deadlines and metrics are shared. Request-level ``parameters`` carry the task options (``k``,
``horizon``, ``level`` ...); unknown parameters are ignored, as the protocol allows.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Protocol

import numpy as np
from pydantic import ValidationError

from app.api.oip import InferRequest, Tensor, select_outputs
from app.container import Container
from app.errors import InputTooLarge, InvalidInput
from app.registry import ModelRecord
from app.services import anomaly_scoring
from app.services.anomaly import AnomalyInput
from app.services.common import MAX_ABS_VALUE
from app.services.forecast import SeriesInput


def _strings(t: Tensor) -> list[str]:
    return [str(s) for s in t.data.reshape(-1)]


def _tensor(name: str, datatype: str, data: Any) -> Tensor:
    if datatype != "BYTES":
        return Tensor(name, datatype, np.asarray(data))
    arr = np.empty(len(data), dtype=object)  # strings as objects, never numpy's fixed-width
    arr[:] = list(data)
    return Tensor(name, datatype, arr)


def _meta(name: str, datatype: str, shape: list[int], **params: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if params:
        item["parameters"] = params
    return item


def _int_param(req: InferRequest, name: str, default: int | None) -> int | None:
    value = req.parameters.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidInput(f"parameter {name!r} must be an integer, got {value!r}")
    return int(value)


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()))
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"parameter {where!r}: {msg}" if where else msg)
    return "; ".join(parts)


class Adapter(Protocol):
    task: str

    def inputs(self, rec: ModelRecord) -> list[dict[str, Any]]: ...

    def outputs(self, rec: ModelRecord) -> list[dict[str, Any]]: ...

    async def infer(self, c: Container, ref: str, req: InferRequest) -> list[Tensor]: ...


class SentimentAdapter:
    task = "sentiment"

    def inputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [_meta("text", "BYTES", [-1])]

    def outputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        labels = list(rec.card["labels"])
        return [
            _meta("label", "BYTES", [-1]),
            _meta("probabilities", "FP32", [-1, len(labels)], labels=labels),
            _meta("score", "FP32", [-1]),
            _meta("tokens", "INT64", [-1]),
            _meta("truncated", "BOOL", [-1]),
        ]

    async def infer(self, c: Container, ref: str, req: InferRequest) -> list[Tensor]:
        req.check_inputs({"text"})
        texts = _strings(req.require("text", ("BYTES",)))
        _, preds = await c.sentiment.classify(texts, "input 'text'", ref)
        return [
            _tensor("label", "BYTES", [p.label for p in preds]),
            Tensor(
                "probabilities",
                "FP32",
                np.asarray([list(p.probabilities.values()) for p in preds], dtype=np.float32),
            ),
            _tensor("score", "FP32", np.asarray([p.score for p in preds], dtype=np.float32)),
            _tensor("tokens", "INT64", np.asarray([p.tokens for p in preds], dtype=np.int64)),
            _tensor("truncated", "BOOL", np.asarray([p.truncated for p in preds], dtype=bool)),
        ]


class NextWordAdapter:
    task = "next-word"

    def inputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [
            _meta("text", "BYTES", [-1]),
            _meta("state", "BYTES", [-1], optional=True, meaning="'' or a state token"),
        ]

    def outputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [
            _meta("words", "BYTES", [-1, -1]),
            _meta("probabilities", "FP32", [-1, -1]),
            _meta("state", "BYTES", [-1]),
            _meta("completion", "BYTES", [-1]),
        ]

    async def infer(self, c: Container, ref: str, req: InferRequest) -> list[Tensor]:
        from app.api.routes.next_word import NextWordRequest  # its field limits, one definition

        req.check_inputs({"text", "state"})
        texts = _strings(req.require("text", ("BYTES",)))
        state_t = req.get("state", ("BYTES",))
        states = _strings(state_t) if state_t is not None else [""] * len(texts)
        if len(states) != len(texts):
            raise InvalidInput(
                f"input 'state' has {len(states)} elements and 'text' {len(texts)}; send one "
                "state per text ('' for none)"
            )
        if not texts:
            raise InvalidInput("input 'text' has no elements; send at least one text")
        if len(texts) > c.settings.max_texts:
            raise InputTooLarge(
                f"input 'text' has {len(texts)} elements; the limit is {c.settings.max_texts}"
            )
        options = {
            k: req.parameters[k]
            for k in ("k", "complete", "temperature", "top_k", "seed")
            if k in req.parameters
        }
        try:
            o = NextWordRequest.model_validate({"text": "", **options}, strict=False)
        except ValidationError as exc:
            raise InvalidInput(_pydantic_message(exc)) from None
        results = await asyncio.gather(
            *(
                c.next_word.predict(
                    text,
                    ref,
                    k=o.k,
                    state_token=state or None,
                    complete=o.complete,
                    temperature=o.temperature,
                    top_k=o.top_k,
                    seed=o.seed,
                )
                for text, state in zip(texts, states, strict=True)
            )
        )
        width = max((len(r.candidates) for _, r in results), default=0)
        words = np.full((len(results), width), "", dtype=object)
        probs = np.zeros((len(results), width), dtype=np.float32)
        for i, (_, r) in enumerate(results):
            for j, cand in enumerate(r.candidates):
                words[i, j] = cand.word
                probs[i, j] = cand.probability
        return [
            Tensor("words", "BYTES", words),
            Tensor("probabilities", "FP32", probs),
            _tensor("state", "BYTES", [r.state for _, r in results]),
            _tensor("completion", "BYTES", [r.completion or "" for _, r in results]),
        ]


def _series_matrix(req: InferRequest) -> np.ndarray:
    """The ``values`` input as float64 [series, time] (a 1-D tensor is one series)."""
    req.check_inputs({"values"})
    t = req.require("values", ("FP32", "FP64"))
    values = t.data.astype(np.float64)
    if values.ndim == 1:
        values = values[None, :]
    if values.ndim != 2:
        raise InvalidInput(f"input 'values' must be [series, time]; got shape {t.shape}")
    return values


_LEVEL_OUTPUT = re.compile(r"^(lo|hi)-(\d+(?:\.\d+)?)$")


def _levels(req: InferRequest) -> list[float]:
    """Interval levels: those named by requested outputs (``lo-90``), else the ``level``
    parameter (a number, a list, or "80,95"), else 80 and 95."""
    named = [
        float(m.group(2))
        for o in req.outputs or []
        if (m := _LEVEL_OUTPUT.match(o.name)) is not None
    ]
    raw = req.parameters.get("level")
    if named:
        levels = named
    elif raw is None:
        levels = [80.0, 95.0]
    else:
        items = raw.split(",") if isinstance(raw, str) else raw if isinstance(raw, list) else [raw]
        try:
            levels = [float(x) for x in items if not isinstance(x, bool)]
        except (TypeError, ValueError):
            raise InvalidInput(
                f"parameter 'level' must be numbers in (0, 100), got {raw!r}"
            ) from None
        if len(levels) != len(items):
            raise InvalidInput(f"parameter 'level' must be numbers in (0, 100), got {raw!r}")
    if not levels or len(levels) > 10 or not all(0 < v < 100 for v in levels):
        raise InvalidInput(f"interval levels must be 1 to 10 numbers in (0, 100), got {levels}")
    return sorted(set(levels))


class ForecastAdapter:
    task = "forecast"

    def inputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [_meta("values", "FP32", [-1, -1], meaning="one series per row, oldest first")]

    def outputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        h = int(rec.card["max_horizon"])
        return [_meta("mean", "FP32", [-1, h])] + [
            _meta(f"{side}-{level}", "FP32", [-1, h], level=level)
            for level in (80, 95)
            for side in ("lo", "hi")
        ]

    async def infer(self, c: Container, ref: str, req: InferRequest) -> list[Tensor]:
        values = _series_matrix(req)
        bad = ~np.isfinite(values) | (np.abs(values) > MAX_ABS_VALUE)
        if bad.any():
            row, col = (int(x) for x in np.argwhere(bad)[0])
            raise InvalidInput(
                f"input 'values'[{row}][{col}] must be a finite number with |x| <= 1e30"
            )
        horizon = _int_param(req, "horizon", None)
        levels = _levels(req)
        series = [SeriesInput(str(i), row) for i, row in enumerate(values)]
        _, results = await c.forecast.forecast(series, horizon, levels, ref)
        out = [Tensor("mean", "FP32", np.stack([r.mean for r in results]).astype(np.float32))]
        for level in levels:
            for side in ("lo", "hi"):
                key = f"{side}-{level:g}"
                out.append(
                    Tensor(
                        key, "FP32", np.stack([r.bounds[key] for r in results]).astype(np.float32)
                    )
                )
        return out


class AnomalyAdapter:
    task = "anomaly"

    def inputs(self, rec: ModelRecord) -> list[dict[str, Any]]:
        return [
            _meta(
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
            _meta("scores", "FP32", [-1, -1], meaning="one score in [0, 1] per value"),
            _meta("anomalies", "BOOL", [-1, -1], threshold=threshold),
        ]

    async def infer(self, c: Container, ref: str, req: InferRequest) -> list[Tensor]:
        values = _series_matrix(req)
        values[~np.isfinite(values)] = np.nan  # missing, as null is on /anomaly
        series = [AnomalyInput(str(i), row) for i, row in enumerate(values)]
        _, results = await c.anomaly.score(series, ref)
        scores = np.stack([r.scores for r in results]).astype(np.float32)
        flags = np.zeros(scores.shape, dtype=bool)
        for row, r in enumerate(results):
            flags[row, r.anomalies] = True
        return [Tensor("scores", "FP32", scores), Tensor("anomalies", "BOOL", flags)]


ADAPTERS: dict[str, Adapter] = {
    a.task: a for a in (SentimentAdapter(), NextWordAdapter(), ForecastAdapter(), AnomalyAdapter())
}


def adapter_for(rec: ModelRecord) -> Adapter:
    return ADAPTERS[rec.task]


async def infer(c: Container, rec: ModelRecord, req: InferRequest) -> list[Tensor]:
    outputs = await adapter_for(rec).infer(c, rec.ref, req)
    return select_outputs(outputs, req)


def resolve(c: Container, name: str, version: str | None) -> ModelRecord:
    """The model a v2 URL names: that version, else the task default when it has this name,
    else the newest loaded version."""
    records = c.registry.find(f"{name}:{version}" if version else name)
    if version:
        return records[0]
    default = c.registry.get(records[0].task)
    return default if default.name == name else records[-1]


def metadata(c: Container, name: str, version: str | None) -> dict[str, Any]:
    rec = resolve(c, name, version)
    adapter = adapter_for(rec)
    versions = [version] if version else [r.version for r in c.registry.find(name)]
    return {
        "name": rec.name,
        "versions": versions,
        "platform": "onnxruntime_onnx",
        "inputs": adapter.inputs(rec),
        "outputs": adapter.outputs(rec),
        "parameters": {"task": rec.task, "version": rec.version},
    }
