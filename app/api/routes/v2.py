"""Open Inference Protocol (KServe v2) REST routes: HTTP only.

The tensors are translated by ``app.api.oip`` (codec) and ``app.api.oip_models`` (one adapter
per task over the same task services and batchers as the task routes). Errors on these paths
have the protocol's shape, ``{"error": "..."}`` (see ``app.api.errors``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app import __version__
from app.api import oip, oip_models
from app.api.deps import ContainerDep
from app.api.offload import OFFLOAD_BODY_BYTES, large_body_slot
from app.errors import ModelNotFound
from app.services.common import off_loop

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {
            "type": "array",
            "maxItems": oip.MAX_DIMS,
            "items": {"type": "integer", "minimum": 0, "maximum": oip.MAX_DIM},
        },
        "datatype": {"type": "string", "enum": list(oip.DTYPES)},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                    },
                },
                "examples": {
                    "sentiment": {
                        "value": {
                            "id": "42",
                            "inputs": [
                                {
                                    "name": "text",
                                    "shape": [2],
                                    "datatype": "BYTES",
                                    "data": ["a gorgeous, witty film", "dull"],
                                }
                            ],
                            "outputs": [{"name": "label"}, {"name": "probabilities"}],
                        }
                    }
                },
            }
        },
    }
}
_ERROR = {
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}}
        }
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed request or tensor", **_ERROR},
    404: {"description": "unknown model", **_ERROR},
    413: {"description": "too many items or an item over the size limit", **_ERROR},
    429: {"description": "overloaded", **_ERROR},
}


# Inference routes first: routing tries routes in order, and these are the hot ones.
async def _infer(request: Request, c: ContainerDep, name: str, version: str | None) -> Response:
    rec = oip_models.resolve(c, name, version)
    body = await request.body()
    header_length = next(
        (v.decode("latin-1") for k, v in request.scope["headers"] if k == oip.HEADER_LENGTH_RAW),
        None,
    )  # a scan of the raw headers: cheaper than building Starlette's Headers on every request
    # A large body (an 8 MB FP32 tensor takes ~70 ms to parse) is parsed in a worker thread,
    # under the same gate as the task routes' large bodies: a few at a time, and the wait for
    # the gate counts against the request's deadline.
    big = len(body) >= OFFLOAD_BODY_BYTES
    async with large_body_slot(request) if big else contextlib.nullcontext():
        req = await off_loop(big, oip.parse_request, body, header_length)
        outputs = await oip_models.infer(c, rec, req)
        payload, header_length = oip.encode_response(rec.name, rec.version, outputs, req)
    if header_length is None:
        return Response(payload, media_type="application/json")
    return Response(
        payload,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )


@router.post(
    "/models/{name}/infer",
    summary="Inference with JSON (or binary) tensors",
    responses=_ERRORS,
    openapi_extra=_INFER_BODY,
)
async def infer(name: str, request: Request, c: ContainerDep) -> Response:
    return await _infer(request, c, name, None)


@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference on one model version",
    responses=_ERRORS,
    openapi_extra=_INFER_BODY,
)
async def infer_version(name: str, version: str, request: Request, c: ContainerDep) -> Response:
    return await _infer(request, c, name, version)


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "seqserve", "version": __version__, "extensions": []}


@router.get("/health/live", summary="Liveness (200 = live)")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Readiness (200 = ready, 400 = not yet)")
async def ready(request: Request) -> JSONResponse:
    c = getattr(request.app.state, "container", None)
    ok = c is not None and not request.app.state.draining and bool(c.registry.records)
    return JSONResponse({"ready": ok}, status_code=200 if ok else 400)


async def _model_ready(c: ContainerDep, name: str, version: str | None) -> JSONResponse:
    try:
        rec = oip_models.resolve(c, name, version)
    except ModelNotFound:
        ref = f"{name}:{version}" if version else f"{name}:"
        if any(key.split("/", 1)[-1].startswith(ref) for key in c.registry.failed):
            return JSONResponse({"name": name, "ready": False}, status_code=400)
        raise
    return JSONResponse({"name": rec.name, "version": rec.version, "ready": True})


@router.get("/models/{name}/ready", summary="Model readiness", responses=_ERRORS)
async def model_ready(name: str, c: ContainerDep) -> JSONResponse:
    return await _model_ready(c, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready", summary="Model version readiness", responses=_ERRORS
)
async def model_version_ready(name: str, version: str, c: ContainerDep) -> JSONResponse:
    return await _model_ready(c, name, version)


@router.get("/models/{name}", summary="Model metadata: input and output tensors", responses=_ERRORS)
async def model_metadata(name: str, c: ContainerDep) -> dict[str, Any]:
    return oip_models.metadata(c, name, None)


@router.get(
    "/models/{name}/versions/{version}", summary="Model version metadata", responses=_ERRORS
)
async def model_version_metadata(name: str, version: str, c: ContainerDep) -> dict[str, Any]:
    return oip_models.metadata(c, name, version)
