"""Large request bodies, parsed and validated off the event loop.

A route class for the inference routers: a big JSON body (a 2000-series /forecast is ~8 MB) is
parsed with orjson and validated item by item in a worker thread, so probes and small requests
keep being answered while it is read. ``main`` applies it to every registered task's router.
"""

from __future__ import annotations

import asyncio
import contextlib
import typing
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app import metrics
from app.batching import deadline_exceeded, remaining_s

# Bodies at least this large are parsed (orjson) and validated in a worker thread. Smaller ones
# cost less than the thread hop (a 64-text /sentiment body of short texts is ~5 kB).
OFFLOAD_BODY_BYTES = 64_000


def _prevalidate_lists(model: type[BaseModel], value: Any) -> Any:
    """Validate the items of the model's long ``list[SubModel]`` fields one by one, in Python.

    pydantic validates a whole body in one call that holds the GIL throughout (~0.25 s for the
    largest /forecast body), so even in a worker thread it would stall the event loop; item by
    item, the loop gets the GIL back every few milliseconds. The model is then validated around
    the ready items (instances are not revalidated). Fields with a ``before`` or ``wrap``
    validator are left alone: those expect the raw items."""
    if not isinstance(value, dict):
        return value
    custom = {
        name
        for d in model.__pydantic_decorators__.field_validators.values()
        if d.info.mode in ("before", "wrap")
        for name in d.info.fields
    }
    out = dict(value)
    for name, info in model.model_fields.items():
        items = out.get(info.alias or name)
        if name in custom or not isinstance(items, list) or len(items) < 16:
            continue
        if typing.get_origin(info.annotation) is not list:
            continue
        (item_type,) = typing.get_args(info.annotation) or (None,)
        if isinstance(item_type, type) and issubclass(item_type, BaseModel):
            out[info.alias or name] = [item_type.model_validate(item) for item in items]
    return out


def _parse_and_validate(body: bytes, field: Any) -> Any:
    """The body as the route's validated model (runs in a worker thread).

    Any surprise (not JSON orjson reads, an invalid item, an unusual model) returns
    ``_NOT_DONE``: FastAPI then does its usual work and gives its usual errors."""
    try:
        value = orjson.loads(body)
        model = field.field_info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            value = _prevalidate_lists(model, value)
        validated, errors = field.validate(value, {}, loc=("body",))
    except Exception:
        return _NOT_DONE
    return _NOT_DONE if errors else validated


_NOT_DONE = object()


class OffloadingRoute(APIRoute):
    """An ``APIRoute`` that parses and validates a large JSON body in a worker thread, so the
    event loop keeps answering probes and small requests while a big body is read.

    FastAPI reads the body through ``request.json()``, then validates it on the event loop; here
    ``request.json()`` already holds the validated model, which FastAPI's validation passes
    through unchanged (pydantic does not revalidate instances). Only single, non-embedded JSON
    bodies are handled; anything else is FastAPI's as usual."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        field = self.body_field
        if field is None or getattr(self, "_embed_body_fields", True):
            return handler

        async def offloading(request: Request) -> Response:
            body = await request.body()
            kind = request.headers.get("content-type", "")
            if len(body) < OFFLOAD_BODY_BYTES or not kind.startswith("application/json"):
                return await handler(request)
            # Parsed, a large body takes ~5x its size in Python objects: only a few are
            # worked on at once (the others wait here as bytes), so memory stays in budget.
            async with large_body_slot(request):
                parsed = await asyncio.to_thread(_parse_and_validate, body, field)
                if parsed is not _NOT_DONE:
                    request._json = parsed  # what request.json() returns from now on
                return await handler(request)

        return offloading


@contextlib.asynccontextmanager
async def large_body_slot(request: Request) -> AsyncIterator[None]:
    """Hold one place of the app's large-body gate (``app.state.large_bodies``) for the block:
    parse and serve a large body inside it. The wait for a place counts against the request's
    deadline (``app.state.request_deadline_s``, from ``RequestInfo.started``); when it runs out
    first, DeadlineExceeded (503) and the body is never parsed."""
    state = request.app.state
    gate: asyncio.Semaphore | None = getattr(state, "large_bodies", None)
    if gate is None:
        yield
        return
    deadline_s: float = getattr(state, "request_deadline_s", 0.0) or 0.0
    try:
        async with asyncio.timeout(remaining_s(deadline_s)):
            await gate.acquire()
    except TimeoutError:
        route = getattr(request.scope.get("route"), "path", "other")  # a bounded label
        metrics.REJECTED.labels(route, "deadline").inc()
        raise deadline_exceeded(deadline_s) from None
    try:
        yield
    finally:
        gate.release()


def large_body_gate(memory_budget_mb: int) -> asyncio.Semaphore:
    """How many large bodies may be parsed and served at once: one per 64 MB of the memory
    budget (the largest allowed body, ~8 MB of JSON, is ~40 MB parsed and as much again in
    the model's inputs and outputs)."""
    return asyncio.Semaphore(max(1, memory_budget_mb // 64))


def offload_large_bodies(router: APIRouter) -> None:
    """Make the router's plain ``APIRoute``s ``OffloadingRoute``s (same state, one method more).

    Called on each router before the app includes it (inclusion builds the handlers). Routers
    that declare ``APIRouter(route_class=OffloadingRoute)`` need no call."""
    for route in router.routes:
        if type(route) is APIRoute:
            route.__class__ = OffloadingRoute
