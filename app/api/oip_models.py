"""Open Inference Protocol faces of the task services: tensors in, task calls, tensors out.

Each task registers one adapter (``app.tasks``) that says which tensors its models take and give
(for ``GET /v2/models/{name}``) and turns an inference request into a call on the *same* task
service its REST route uses, so batching, limits, deadlines and metrics are shared. This module
holds the protocol and the helpers the adapters share, and finds a model's adapter through the
task registry. Request-level ``parameters`` carry the task options (``k``, ``horizon``,
``level`` ...); unknown parameters are ignored, as the protocol allows.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import numpy as np
from pydantic import ValidationError

from app.api.oip import InferRequest, Tensor, select_outputs
from app.container import Container
from app.errors import InvalidInput, echo
from app.registry import ModelRecord
from app.tasks import tasks
from contract.forecast import level_labels


def strings(t: Tensor) -> list[str]:
    return [str(s) for s in t.data.reshape(-1)]


def tensor(name: str, datatype: str, data: Any) -> Tensor:
    if datatype != "BYTES":
        return Tensor(name, datatype, np.asarray(data))
    arr = np.empty(len(data), dtype=object)  # strings as objects, never numpy's fixed-width
    arr[:] = list(data)
    return Tensor(name, datatype, arr)


def meta(name: str, datatype: str, shape: list[int], **params: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    if params:
        item["parameters"] = params
    return item


def int_param(req: InferRequest, name: str, default: int | None) -> int | None:
    value = req.parameters.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidInput(f"parameter {name!r} must be an integer, got {echo(value)}")
    return int(value)


def pydantic_message(exc: ValidationError) -> str:
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


def series_matrix(req: InferRequest) -> np.ndarray:
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


def interval_levels(req: InferRequest) -> list[float]:
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
                f"parameter 'level' must be numbers in (0, 100), got {echo(raw)}"
            ) from None
        if len(levels) != len(items):
            raise InvalidInput(f"parameter 'level' must be numbers in (0, 100), got {echo(raw)}")
    if not levels or len(levels) > 10 or not all(0 < v < 100 for v in levels):
        raise InvalidInput(
            f"interval levels must be 1 to 10 numbers in (0, 100), got {echo(levels)}"
        )
    if not named:  # the parameter: each level once, as on REST (lo-80 and hi-80 name one level)
        try:
            level_labels(levels)
        except ValueError as exc:
            raise InvalidInput(f"parameter 'level': {exc}") from None
    return sorted(set(levels))


def adapter_for(rec: ModelRecord) -> Adapter:
    """The registered adapter of the record's task (each task registers one)."""
    return tasks()[rec.task].adapter


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
