"""Open Inference Protocol (KServe v2 / Triton) tensors: decode requests, encode responses.

The protocol's JSON body carries named tensors (``name``, ``shape``, ``datatype``, ``data`` as a
flat or nested row-major list). Triton's *binary tensor data* extension is supported too, so a
``tritonclient.http`` client works with its defaults: the body is a JSON header of
``Inference-Header-Content-Length`` bytes followed by raw tensors, each input naming its size in
``parameters.binary_data_size`` (BYTES elements are a 4-byte little-endian length then the
bytes). Outputs go back as binary when a requested output has ``parameters.binary_data`` or the
request has ``parameters.binary_data_output``.

Nothing here knows about HTTP or the task services: protocol errors are ``InvalidInput``
(400 on the v2 routes) with a message naming the tensor.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from app.errors import InvalidInput, echo
from app.services.common import has_surrogates

HEADER_LENGTH = "inference-header-content-length"
HEADER_LENGTH_RAW = HEADER_LENGTH.encode()
# Most dimensions a tensor may have (numpy's own limit is 64; every task takes at most 2).
MAX_DIMS = 16
MAX_DIM = 2**31 - 1  # one dimension's largest size

# datatype -> (numpy dtype, numpy kinds accepted from JSON data)
DTYPES: dict[str, tuple[Any, str]] = {
    "BOOL": (np.bool_, "b"),
    "UINT8": (np.uint8, "iu"),
    "UINT16": (np.uint16, "iu"),
    "UINT32": (np.uint32, "iu"),
    "UINT64": (np.uint64, "iu"),
    "INT8": (np.int8, "iu"),
    "INT16": (np.int16, "iu"),
    "INT32": (np.int32, "iu"),
    "INT64": (np.int64, "iu"),
    "FP16": (np.float16, "iuf"),
    "FP32": (np.float32, "iuf"),
    "FP64": (np.float64, "iuf"),
    "BYTES": (object, "U"),
}


@dataclass
class Tensor:
    name: str
    datatype: str
    data: np.ndarray  # shaped; BYTES tensors hold Python str objects
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> list[int]:
        return [int(d) for d in self.data.shape]


@dataclass
class RequestedOutput:
    name: str
    binary: bool = False


@dataclass
class InferRequest:
    inputs: dict[str, Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None  # None: every output the model has

    def get(self, name: str, datatypes: tuple[str, ...]) -> Tensor | None:
        t = self.inputs.get(name)
        if t is not None and t.datatype not in datatypes:
            raise InvalidInput(
                f"input {name!r} has datatype {t.datatype}; this model takes "
                + " or ".join(datatypes)
            )
        return t

    def require(self, name: str, datatypes: tuple[str, ...]) -> Tensor:
        t = self.get(name, datatypes)
        if t is None:
            raise InvalidInput(
                f"input {name!r} is missing; the request has "
                + (", ".join(repr(n) for n in self.inputs) or "no inputs")
            )
        return t

    def check_inputs(self, known: set[str]) -> None:
        unknown = sorted(set(self.inputs) - known)
        if unknown:
            raise InvalidInput(
                f"unknown input {unknown[0]!r}; this model takes {', '.join(sorted(known))}"
            )


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object")
    return value


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters")
    if params is None:
        return {}
    return _object(params, f"{where}.parameters")


def load_json(raw: bytes) -> Any:
    """orjson first (fast); the standard library for what orjson refuses but JSON clients send
    (a lone surrogate escape such as "\\ud800"); deep nesting is a clear error, not a crash."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidInput("request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def parse_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """An inference request from the raw body (JSON, or JSON + binary tensors)."""
    binary = b""
    if header_length is not None:
        # isascii: str.isdigit also accepts '²' and other digits int() refuses
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(
            body
        ):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {echo(header_length)} but the body has "
                f"{len(body)} bytes; it must be the JSON header's length in bytes (ASCII digits)"
            )
        n = int(header_length)
        body, binary = body[:n], body[n:]
    doc = _object(load_json(body), "the request body")
    unknown = sorted(set(doc) - {"id", "parameters", "inputs", "outputs"})
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]!r} in the inference request")
    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise InvalidInput("id must be a string")
    if req_id is not None and has_surrogates(req_id):
        raise InvalidInput("id must be valid Unicode text: it holds a lone surrogate (\\ud800...)")
    params = _parameters(doc, "request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("inputs must be a non-empty list of tensors")
    inputs: dict[str, Tensor] = {}
    offset = 0
    for i, item in enumerate(raw_inputs):
        tensor, used = _input(_object(item, f"inputs[{i}]"), i, binary, offset)
        if tensor.name in inputs:
            raise InvalidInput(f"input {tensor.name!r} appears more than once")
        inputs[tensor.name] = tensor
        offset += used
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims"
        )
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise InvalidInput("outputs must be a list of {'name': ...} objects")
    if doc.get("outputs"):  # absent, null or []: every output, as Triton reads it
        all_binary = bool(params.get("binary_data_output", False))
        outputs = []
        for i, item in enumerate(doc["outputs"]):
            out = _object(item, f"outputs[{i}]")
            name = out.get("name")
            if not isinstance(name, str):
                raise InvalidInput(f"outputs[{i}].name must be a string")
            bin_flag = _parameters(out, f"outputs[{i}]").get("binary_data", all_binary)
            outputs.append(RequestedOutput(name, bool(bin_flag)))
    return InferRequest(inputs, req_id, params, outputs)


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in value
    ):
        raise InvalidInput(
            f"{where}.shape must be a list of integers from 0 to {MAX_DIM} (the size of each "
            "dimension)"
        )
    if len(value) > MAX_DIMS:
        raise InvalidInput(f"{where}.shape has {len(value)} dimensions; the limit is {MAX_DIMS}")
    return tuple(value)


def _input(obj: dict[str, Any], i: int, binary: bytes, offset: int) -> tuple[Tensor, int]:
    where = f"inputs[{i}]"
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name must be a non-empty string")
    where = f"input {echo(name)}"
    datatype = obj.get("datatype")
    if datatype not in DTYPES:
        raise InvalidInput(
            f"{where}: datatype {datatype!r} is not one of the protocol's: {', '.join(DTYPES)}"
        )
    shape = _shape(obj.get("shape"), where)
    count = math.prod(shape)
    params = _parameters(obj, where)
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"{where}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise InvalidInput(f"{where}: binary_data_size {size} runs past the end of the body")
        chunk = binary[offset : offset + size]
        data = _from_binary(chunk, datatype, count, where)
        return Tensor(name, datatype, _reshape(data, shape, where), params), size
    if "data" not in obj:
        raise InvalidInput(f"{where} has no data")
    data = _from_json(obj["data"], datatype, count, where)
    return Tensor(name, datatype, _reshape(data, shape, where), params), 0


def _reshape(data: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        return data.reshape(shape)
    except (ValueError, OverflowError, MemoryError):  # e.g. [0, 2**31 - 1, ...]: too big to index
        raise InvalidInput(f"{where}: shape {list(shape)} cannot be used") from None


def _flat_strings(data: Any, where: str) -> list[str]:
    out: list[str] = []
    stack = [data]
    while stack:  # iterative: a hostile nesting depth cannot exhaust the interpreter's stack
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, str):
            out.append(item)
        else:
            found = type(item).__name__
            raise InvalidInput(f"{where}: BYTES data must hold strings, found {found}")
    return out


def _from_json(data: Any, datatype: str, count: int, where: str) -> np.ndarray:
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: data must be a list (flat or nested, row-major)")
    if datatype == "BYTES":
        flat = _flat_strings(data, where)
        if len(flat) != count:
            raise InvalidInput(f"{where}: shape holds {count} elements but data has {len(flat)}")
        arr = np.empty(count, dtype=object)
        arr[:] = flat
        return arr
    dtype, kinds = DTYPES[datatype]
    try:
        arr = np.asarray(data)
    except (ValueError, OverflowError, TypeError):
        raise InvalidInput(f"{where}: data is ragged or not numeric") from None
    if arr.size and arr.dtype.kind not in kinds:
        raise InvalidInput(f"{where}: data does not hold {datatype} values")
    if arr.size != count:
        raise InvalidInput(f"{where}: shape holds {count} elements but data has {arr.size}")
    if arr.size and datatype not in ("BOOL", "BYTES") and not _fits(arr, np.dtype(dtype)):
        raise InvalidInput(f"{where}: values do not fit {datatype}")
    try:
        return arr.astype(dtype).reshape(-1)
    except (ValueError, OverflowError):
        raise InvalidInput(f"{where}: values do not fit {datatype}") from None


def _fits(arr: np.ndarray, dtype: np.dtype[Any]) -> bool:
    """No silent wrap-around (-1 as UINT32) or overflow to infinity (1e39 as FP32)."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return bool(arr.min() >= info.min and arr.max() <= info.max)
    finite = np.isfinite(arr)
    with np.errstate(over="ignore"):
        return bool(np.isfinite(arr.astype(dtype))[finite].all())


def _from_binary(chunk: bytes, datatype: str, count: int, where: str) -> np.ndarray:
    if datatype == "BYTES":
        items: list[str] = []
        pos = 0
        while pos < len(chunk):
            if pos + 4 > len(chunk):
                raise InvalidInput(f"{where}: truncated BYTES element length")
            (n,) = struct.unpack_from("<I", chunk, pos)
            pos += 4
            if pos + n > len(chunk):
                raise InvalidInput(f"{where}: BYTES element {len(items)} runs past its data")
            try:
                items.append(chunk[pos : pos + n].decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInput(f"{where}: BYTES element {len(items)} is not UTF-8") from None
            pos += n
        if len(items) != count:
            raise InvalidInput(f"{where}: shape holds {count} elements but data has {len(items)}")
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr
    dtype = np.dtype(DTYPES[datatype][0]).newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise InvalidInput(
            f"{where}: shape holds {count} {datatype} elements ({count * dtype.itemsize} bytes) "
            f"but binary_data_size is {len(chunk)}"
        )
    return np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="))


def _to_binary(t: Tensor) -> bytes:
    if t.datatype == "BYTES":
        parts = []
        for s in t.data.reshape(-1):
            b = str(s).encode("utf-8")
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    dtype = np.dtype(DTYPES[t.datatype][0]).newbyteorder("<")
    return np.ascontiguousarray(t.data, dtype=dtype).tobytes()


def _json_data(t: Tensor) -> Any:
    """A flat row-major list; numeric tensors stay numpy so orjson writes them directly (and
    float32 values in their shortest float32 form, not as long float64 decimals)."""
    flat = t.data.reshape(-1)
    if t.datatype == "BYTES":
        return [str(s) for s in flat]
    if t.datatype == "FP16":
        return flat.astype(np.float32)
    return np.ascontiguousarray(flat, dtype=DTYPES[t.datatype][0])


def encode_response(
    model_name: str,
    model_version: str,
    outputs: list[Tensor],
    request: InferRequest,
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it."""
    binary_names = {o.name for o in request.outputs or [] if o.binary}
    if request.outputs is None and request.parameters.get("binary_data_output"):
        binary_names = {t.name for t in outputs}
    chunks: list[bytes] = []
    items = []
    for t in outputs:
        item: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        params = dict(t.parameters)
        if t.name in binary_names:
            raw = _to_binary(t)
            chunks.append(raw)
            params["binary_data_size"] = len(raw)
        else:
            item["data"] = _json_data(t)
        if params:
            item["parameters"] = params
        items.append(item)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = items
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def select_outputs(available: list[Tensor], request: InferRequest) -> list[Tensor]:
    """The outputs the request asked for, in its order (all of them when it named none)."""
    if request.outputs is None:
        return available
    by_name = {t.name: t for t in available}
    chosen = []
    for o in request.outputs:
        if o.name not in by_name:
            raise InvalidInput(
                f"unknown output {o.name!r}; this model has {', '.join(by_name) or 'none'}"
            )
        chosen.append(by_name[o.name])
    return chosen
