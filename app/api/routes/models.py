"""Model metadata: what is loaded, with card summaries.

Cards are published once and never rewritten, and older ones record where training ran
(``/home/.../runs/x/best.pt``); what this serves goes through :func:`redact_paths` so no
absolute server path leaves the process (a path under the models folder becomes relative to it,
any other absolute path its last component).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar, cast

from fastapi import APIRouter

from app.api.deps import ContainerDep
from app.api.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/v1/models", tags=["models"])
T = TypeVar("T")

# An absolute POSIX path with at least two parts; not the path of a URL (after ':' or '/') nor a
# relative one (after a word character).
_ABSOLUTE = re.compile(r"(?<![\w.:/~\\-])/[^\s'\"/]+(?:/[^\s'\"/]*)+")


def redact_text(text: str, root: Path | None = None) -> str:
    if "/" not in text:
        return text
    if root is not None:
        for prefix in {str(root), str(root.resolve())}:
            text = text.replace(prefix.rstrip("/") + "/", "")
    return _ABSOLUTE.sub(lambda m: Path(m.group(0)).name or "...", text)


def redact_paths(value: T, root: Path | None = None) -> T:
    """``value`` (JSON-like) with every absolute path in its strings made public-safe."""
    out: Any = value
    if isinstance(value, str):
        out = redact_text(value, root)
    elif isinstance(value, dict):
        out = {k: redact_paths(v, root) for k, v in value.items()}
    elif isinstance(value, list):
        out = [redact_paths(v, root) for v in value]
    return cast(T, out)


@router.get("", summary="List loaded models with card summaries")
async def list_models(container: ContainerDep) -> dict[str, Any]:
    reg = container.registry
    defaults = {task: reg.get(task).ref for task in sorted(reg.tasks())}
    body = {
        "models": [r.summary() for r in reg.models()],
        "defaults": defaults,
        "failed": reg.failed,
    }
    return redact_paths(body, reg.models_dir)


@router.get(
    "/{name}", summary="One model's versions and full cards", responses={404: ERROR_RESPONSES[404]}
)
async def get_model(name: str, container: ContainerDep) -> dict[str, Any]:
    records = container.registry.find(name)
    body = {"name": records[0].name, "versions": [{**r.summary(), "card": r.card} for r in records]}
    return redact_paths(body, container.registry.models_dir)
