"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from app import metrics
from app.api.errors import error_body
from app.api.routes.models import redact_paths, redact_text

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: models are loaded (a model that failed to load is named in 'failed')",
    responses={503: {"description": "still loading, or no model could be loaded"}},
)
async def readyz(request: Request) -> Any:
    container = getattr(request.app.state, "container", None)
    if container is None:
        return JSONResponse(error_body("not_ready", "models are still loading"), status_code=503)
    if not container.registry.records:  # an empty or mis-mounted models folder serves nothing
        root = container.registry.models_dir
        reasons = "; ".join(
            f"{k}: {redact_text(v, root)}" for k, v in container.registry.failed.items()
        )
        message = "no model loaded: the models folder holds no servable model"
        return JSONResponse(
            error_body("not_ready", message + (f" ({reasons})" if reasons else "")),
            status_code=503,
        )
    return {
        "status": "ready",
        "models": sorted(f"{r.task}/{r.ref}" for r in container.registry.models()),
        "failed": redact_paths(container.registry.failed, container.registry.models_dir),
        "load_seconds": round(container.load_seconds, 3),
    }


@router.get(
    "/metrics",
    summary="Prometheus metrics (summed over worker processes)",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
