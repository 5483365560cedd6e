"""Model metadata: what is loaded, with card summaries."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import ContainerDep
from app.api.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", summary="List loaded models with card summaries")
async def list_models(container: ContainerDep) -> dict[str, Any]:
    reg = container.registry
    defaults = {task: reg.get(task).ref for task in sorted(reg.tasks())}
    return {
        "models": [r.summary() for r in reg.models()],
        "defaults": defaults,
        "failed": reg.failed,
    }


@router.get(
    "/{name}", summary="One model's versions and full cards", responses={404: ERROR_RESPONSES[404]}
)
async def get_model(name: str, container: ContainerDep) -> dict[str, Any]:
    records = container.registry.find(name)
    return {"name": records[0].name, "versions": [{**r.summary(), "card": r.card} for r in records]}
