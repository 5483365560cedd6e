"""POST /admin/reload: rescan the models folder without a restart (admin key required).

Without ``SEQSERVE_ADMIN_KEYS`` the route answers 404, as if it did not exist. With several
workers (``seqserve serve --workers N``) the reload reaches every one of them
(``app.worker_sync``); the response is this worker's report plus ``workers``, one report per
worker.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.api.deps import ContainerDep
from app.api.middleware import key_matches, presented_key
from app.errors import Forbidden, NotFound, Unauthorized

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/reload",
    summary="Load new or changed model versions in every worker; a broken one is refused and "
    "the old one serves",
    responses={
        401: {"description": "no admin key presented"},
        403: {"description": "the key is not an admin key"},
        404: {"description": "admin endpoints are disabled (no SEQSERVE_ADMIN_KEYS)"},
    },
)
async def reload(request: Request, container: ContainerDep) -> dict[str, Any]:
    admin = [k.get_secret_value().encode() for k in container.settings.admin_keys]
    if not admin:
        raise NotFound("no such endpoint: admin endpoints are disabled")
    key = presented_key(request.scope.get("headers", []))
    if key is None:
        raise Unauthorized("an admin key is required: 'Authorization: Bearer <key>'")
    if not key_matches(key, admin):
        raise Forbidden("this key may not reload models")
    reloads = getattr(request.app.state, "reloads", None)
    if reloads is None:  # an app whose lifespan did not run
        return await container.reload()
    result: dict[str, Any] = await reloads.reload_all()
    return result
