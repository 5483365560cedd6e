"""The inference routes' direct path: a valid JSON body straight to its endpoint.

FastAPI's per-request machinery (a ``Request`` object, dependency solving, exit stacks, the
exception middleware, routing) costs ~0.2 ms, as much as a small /sentiment inference. For the
routes that need none of it — one JSON body, the container, a ``Response`` back — the edge
calls the endpoint itself: the body is parsed by orjson and validated by the route's own
pydantic field (FastAPI's validation, unchanged), and the endpoint gets exactly the arguments
FastAPI would give it.

Only the ordinary request takes this path. Anything else — a body orjson cannot read, one that
fails validation, a large body (parsed off the loop by ``app.api.offload``), another content
type, no container yet — goes to FastAPI as before, so every validation error keeps FastAPI's
wording. Errors the endpoint raises are answered by ``app.api.errors.response_for``, the
function behind the app's exception handlers.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.responses import Response

from app.api.deps import get_container
from app.api.errors import response_for
from app.api.offload import OFFLOAD_BODY_BYTES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastRoute:
    """What calling one endpoint directly needs: the body's field and the argument names."""

    endpoint: Callable[..., Awaitable[Response]]
    body_field: Any  # FastAPI's ModelField for the body
    body_name: str
    container_name: str


def eligible(route: APIRoute) -> FastRoute | None:
    """The route's direct call, if it is ``POST``, one non-embedded body, the container
    dependency and nothing else, returning a ``Response`` (so FastAPI adds no serialization)."""
    d = route.dependant
    if route.methods != {"POST"} or route.body_field is None:
        return None
    if getattr(route, "_embed_body_fields", True) or len(d.body_params) != 1:
        return None
    if d.path_params or d.query_params or d.header_params or d.cookie_params:
        return None
    names = (
        d.request_param_name,
        d.websocket_param_name,
        d.http_connection_param_name,
        d.response_param_name,
        d.background_tasks_param_name,
        d.security_scopes_param_name,
    )
    if any(names) or len(d.dependencies) != 1:
        return None
    dep = d.dependencies[0]
    if dep.call is not get_container or dep.dependencies or not dep.name:
        return None
    returns = typing.get_type_hints(route.endpoint).get("return")
    if not (isinstance(returns, type) and issubclass(returns, Response)):
        return None
    return FastRoute(route.endpoint, route.body_field, d.body_params[0].name, dep.name)


def fast_routes(routes: Iterable[Any]) -> dict[str, FastRoute]:
    """Path -> direct call for every eligible route of an app."""
    out: dict[str, FastRoute] = {}
    for route in routes:
        if isinstance(route, APIRoute) and (fast := eligible(route)) is not None:
            out[route.path] = fast
    return out


def is_json(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """No content type, or ``application/json`` (FastAPI reads JSON in both cases; its other
    JSON types, ``+json`` ones, take FastAPI's path)."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return True


async def serve(route: FastRoute, scope: dict[str, Any], body: bytes, send: Any) -> bool:
    """Answer the request through ``route``; False (nothing sent) when FastAPI should."""
    container = getattr(scope["app"].state, "container", None)
    if container is None or len(body) >= OFFLOAD_BODY_BYTES:
        return False
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    validated, errors = route.body_field.validate(value, {}, loc=("body",))
    if errors:
        return False
    kwargs = {route.body_name: validated, route.container_name: container}
    try:
        response = await route.endpoint(**kwargs)
    except Exception as exc:  # the app's exception handlers' answer, from the same function
        response = response_for(scope["path"], exc)
    start = {"status": response.status_code, "headers": response.raw_headers}
    await send({"type": "http.response.start", **start})
    await send({"type": "http.response.body", "body": response.body})
    if response.background is not None:
        await response.background()
    return True
