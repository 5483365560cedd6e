"""The edge of the service, as one plain ASGI middleware (cheaper than BaseHTTPMiddleware).

Everything here happens before a request's body is read or any work is queued:
- metrics (per route and status),
- draining: once shutdown has begun, readiness answers 503 (requests already sent finish),
- API keys for the inference and model endpoints (health, readiness and metrics stay open),
- a body-size cap (413 from ``Content-Length``, or as soon as a streamed body passes it),
- a memory budget for bodies: each body's bytes are reserved (``Content-Length`` up front, else
  as they arrive) in a per-process budget (``app.limits.BodyBudget``) until its request is done;
  when it is full, 429 + Retry-After instead of reading (a body alone always fits),
- a body deadline: the whole body within ``body_timeout_s`` of the headers, else 408 and the
  connection closes (the headers' deadline is in ``app.protocol``),
- a client that goes away mid-upload is dropped (no answer, counted as ``client_gone``),
- the request's deadline counts from the moment its body is in (uploads are not the server's
  time; the wait for a slot is),
- admission control: an inference request takes an in-flight slot only once its body is in
  (slow uploads never hold one); past the limit it waits a little in a bounded waiting room
  (``app.limits``), else gets 429 + Retry-After - at once, before its body is read, when the
  waiting room is full too,
- a request id (the client's ``X-Request-ID`` or a new one) echoed in the response, a
  ``Server-Timing`` header (tokenize / queue / inference) and one JSON log line per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from app import metrics
from app.api import fast
from app.api.errors import error_payload
from app.api.routes.docs import ASSET_PATHS as DOCS_ASSET_PATHS
from app.errors import Overloaded
from app.limits import BodyBudget, InflightLimiter
from app.observability import CURRENT, AccessLog, RequestInfo, request_id_from
from app.protocol import DISCONNECT, Disconnect
from app.tasks import inference_routes as task_inference_routes
from app.tasks import tasks

ACCESS = AccessLog(logging.getLogger("seqserve.access"))
log = logging.getLogger(__name__)

# Routes of the service itself; every registered task adds its inference routes (app.tasks).
OPERATION_ROUTES = frozenset({"/healthz", "/readyz", "/v1/models", "/metrics", "/admin/reload"})
# probes and scrapes: not logged per request
QUIET_ROUTES = {"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"}
OPEN_PATHS = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/v2/health/live",
    "/v2/health/ready",
    *DOCS_ASSET_PATHS,
}
RETRY_AFTER = [(b"retry-after", b"1")]
CLIENT_GONE = 499  # the status logged for a request whose client left before its answer
# After an answer given while the body is still (partly) unread: close rather than read on.
CLOSE = [(b"connection", b"close")]
# What _read_capped returns when the client went away (or the body budget ran out) mid-upload.
GONE = object()
NO_MEMORY = object()  # refused by the body budget; the rest of the body is still coming
NO_MEMORY_READ = object()  # refused by the body budget after its last byte


class _Held:
    """One request's reservation in the body budget (None: no budget)."""

    __slots__ = ("budget", "n")

    def __init__(self, budget: BodyBudget | None) -> None:
        self.budget = budget
        self.n = 0

    def grow_to(self, n: int) -> bool:
        if self.budget is None or n <= self.n:
            return True
        if not self.budget.try_reserve(n - self.n):
            return False
        self.n = n
        return True

    def release(self) -> None:
        if self.budget is not None:
            self.budget.release(self.n)
        self.n = 0


@functools.cache
def _seconds(route: str, model: str) -> Any:
    return metrics.REQUEST_SECONDS.labels(route, model)


@functools.cache
def _count(route: str, model: str, status: int) -> Any:
    return metrics.REQUESTS.labels(route, model, str(status))


def is_inference(path: str, inference_routes: frozenset[str]) -> bool:
    """Task routes and the v2 ``.../infer`` routes: admission control and disconnect watching."""
    return path in inference_routes or (path.startswith("/v2/models/") and path.endswith("/infer"))


def route_of(path: str, known: frozenset[str]) -> str:
    """The route template a path belongs to (a bounded label set for metrics and logs)."""
    if path in known:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{name}"
    if path in ("/v2", "/v2/health/live", "/v2/health/ready"):
        return path
    if path.startswith("/v2/models/"):
        tail = path.rsplit("/", 1)[-1]
        return f"/v2/models/{{name}}/{tail}" if tail in ("infer", "ready") else "/v2/models/{name}"
    return "other"


def presented_key(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    for name, value in headers:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return None


def key_matches(key: bytes | None, keys: Sequence[bytes]) -> bool:
    """Constant-time comparison against every configured key (no early exit on a match)."""
    if key is None:
        return False
    found = False
    for k in keys:
        found |= hmac.compare_digest(key, k)
    return found


class EdgeMiddleware:
    def __init__(
        self,
        app: Any,
        api_keys: Sequence[str] = (),
        max_body_bytes: int = 0,
        access_log: bool = True,
        inference_routes: frozenset[str] | None = None,
        body_timeout_s: float = 0.0,
        admission_wait_s: float = 0.0,
        max_waiting: int = 0,
        body_budget_bytes: int = 0,
    ) -> None:
        self.app = app
        self.access_log = access_log
        # The registered tasks' routes, read once: a task registered later is not seen.
        routes = task_inference_routes() if inference_routes is None else inference_routes
        self.inference_routes = routes
        known = OPERATION_ROUTES | routes
        self.route_of: Callable[[str], str] = functools.lru_cache(maxsize=4096)(
            functools.partial(route_of, known=known)
        )
        self.api_keys = [k.encode() for k in api_keys]
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.admission_wait_s = admission_wait_s
        self.max_waiting = max_waiting
        # Bytes of bodies held at once by this process (0: no limit); see app.limits.
        self.body_budget = BodyBudget(body_budget_bytes) if body_budget_bytes else None
        # Routes the edge calls directly (app.api.fast), read from the app on first use.
        self._fast: dict[str, fast.FastRoute] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        # What the log and metrics record: the response's status; 499 (nginx's "client closed
        # request") when the client left before an answer; 500 when none was sent otherwise.
        status = {"code": 500}
        started = False
        t0 = time.perf_counter()
        request_id = b""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                request_id = value
        info = RequestInfo(request_id_from(request_id))
        token = CURRENT.set(info)

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                status["code"] = message["status"]
                extra = [(b"x-request-id", info.request_id.encode())]
                if info.timings:
                    extra.append((b"server-timing", info.server_timing()))
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            await self._handle(scope, receive, send_wrapper, path)
        except Exception:  # not answered by the app's handlers: the app's JSON 500
            if started:  # the app's handler answered (and logged) it
                return
            log.exception("unhandled error")
            await reply(send_wrapper, 500, "internal_error", "internal server error", path=path)
        finally:
            CURRENT.reset(token)
            if info.client_gone and status["code"] == 500:
                status["code"] = CLIENT_GONE
            route = self.route_of(path)
            elapsed = time.perf_counter() - t0
            model = info.model or ""
            _seconds(route, model).observe(elapsed)
            _count(route, model, status["code"]).inc()
            if self.access_log and route not in QUIET_ROUTES:
                ACCESS.write(
                    {
                        "request_id": info.request_id,
                        "method": scope.get("method"),
                        "route": route,
                        "status": status["code"],
                        "latency_ms": round(elapsed * 1e3, 3),
                        "model": info.model,
                        "batch_sizes": info.batch_sizes or None,
                        "timings_ms": {k: round(v * 1e3, 3) for k, v in info.timings.items()},
                    }
                )

    async def _handle(self, scope: dict[str, Any], receive: Any, send: Any, path: str) -> None:
        state = scope["app"].state if "app" in scope else None
        container = getattr(state, "container", None)
        if getattr(state, "draining", False) and path == "/readyz":
            # Draining: the listener is closed (new connections are refused) and requests
            # already sent are answered; readiness says so for anything still probing.
            await reply(send, 503, "shutting_down", "the server is shutting down")
            return
        if self.api_keys and path not in OPEN_PATHS and not path.startswith("/admin/"):
            if not key_matches(presented_key(scope.get("headers", [])), self.api_keys):
                await reply(
                    send,
                    401,
                    "unauthorized",
                    "a valid API key is required: 'Authorization: Bearer <key>' or "
                    "'X-API-Key: <key>'",
                    [(b"www-authenticate", b"Bearer")],
                    path,
                )
                return
        inference = is_inference(path, self.inference_routes)
        limiter = getattr(container, "limiter", None) if inference else None
        if limiter is not None and limiter.full and not self._may_wait(limiter):
            # Refused before the body is read or parsed: the cheapest answer there is.
            await self._overloaded(send, path, limiter.limit)
            return
        if not (self.max_body_bytes and scope.get("method") in ("POST", "PUT", "PATCH")):
            await self._admitted(scope, None, receive, send, limiter, path)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and declared > self.max_body_bytes:
            await reply(send, 413, "body_too_large", self._too_large_message(), CLOSE, path)
            return
        held = _Held(self.body_budget)
        try:
            # Reserved before reading when the size is known: refused without reading a byte.
            if declared is not None and not held.grow_to(declared):
                await self._no_body_memory(send, path, receive)
                return
            await self._read_and_run(scope, receive, send, path, inference, limiter, held)
        finally:
            held.release()

    async def _read_and_run(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        path: str,
        inference: bool,
        limiter: InflightLimiter | None,
        held: _Held,
    ) -> None:
        # The body is read (within its deadline) before the request takes an in-flight slot:
        # slow or stalled uploads hold a connection, never a slot for inference.
        try:
            async with asyncio.timeout(self.body_timeout_s or None):
                body = await self._read_capped(receive, held)
        except TimeoutError:
            metrics.REJECTED.labels(self.route_of(path), "body_timeout").inc()
            message = f"the request body did not arrive within {self.body_timeout_s:g} s"
            await reply(send, 408, "request_timeout", message, CLOSE, path)
            return
        if body is GONE:  # nobody to answer; the app never sees a truncated body
            self._client_gone(path)
            return
        if body is NO_MEMORY or body is NO_MEMORY_READ:
            await self._no_body_memory(send, path, receive if body is NO_MEMORY else None)
            return
        if body is None:
            await reply(send, 413, "body_too_large", self._too_large_message(), CLOSE, path)
            return
        assert isinstance(body, bytes)
        # The request's deadline counts from here: the upload was the client's time (the wait
        # for an in-flight slot, next, is the server's and counts).
        info = CURRENT.get()
        if info is not None:
            info.started = time.monotonic()
        if inference:
            await self._admitted(scope, body, receive, send, limiter, path)
        else:
            await self.app(scope, _replay(body, receive), send)

    async def _admitted(
        self,
        scope: dict[str, Any],
        body: bytes | None,
        receive: Any,
        send: Any,
        limiter: InflightLimiter | None,
        path: str,
    ) -> None:
        """Run an inference request inside an in-flight slot: one free now, or one freed within
        ``admission_wait_s`` while it waits in the (bounded) waiting room; else 429."""
        if limiter is not None and not await limiter.acquire(
            self.admission_wait_s, len(body or b""), self.max_waiting
        ):
            await self._overloaded(send, path, limiter.limit)
            return
        try:
            if body is None:
                await self.app(scope, receive, send)
            else:
                await self._run_until_disconnect(scope, body, receive, send, path)
        finally:
            if limiter is not None:
                limiter.release()

    def _may_wait(self, limiter: InflightLimiter) -> bool:
        return self.admission_wait_s > 0 and limiter.room_for(0, self.max_waiting)

    async def _overloaded(self, send: Any, path: str, limit: int) -> None:
        metrics.REJECTED.labels(self.route_of(path), "in_flight_limit").inc()
        await reply(send, 429, "overloaded", Overloaded(limit).message, RETRY_AFTER, path)

    async def _no_body_memory(self, send: Any, path: str, receive: Any | None) -> None:
        assert self.body_budget is not None
        metrics.REJECTED.labels(self.route_of(path), "body_memory").inc()
        # Read the rest of the body and drop it (it costs time, not memory): a client still
        # sending when the connection closes sees a reset instead of this 429.
        if receive is not None:
            await self._discard_body(receive)
        message = (
            "too many request bodies are being read or served: they would pass this server's "
            f"limit of {self.body_budget.limit} bytes of bodies in memory (half of "
            "SEQSERVE_MEMORY_BUDGET_MB); retry later"
        )
        await reply(send, 429, "overloaded", message, [*RETRY_AFTER, *CLOSE], path)

    async def _discard_body(self, receive: Any) -> None:
        """Read and drop the rest of a refused body: at most ``max_body_bytes`` of it, within
        the body deadline (a client that sends more or slower just gets the connection closed)."""
        seen = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.body_timeout_s or None):
                while seen <= (self.max_body_bytes or seen + 1):
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body"):
                        return
                    seen += len(message.get("body", b""))

    def _too_large_message(self) -> str:
        return f"request body is larger than the limit of {self.max_body_bytes} bytes"

    async def _run_until_disconnect(
        self, scope: dict[str, Any], body: bytes, receive: Any, send: Any, path: str
    ) -> None:
        """Run the app while watching the connection: if the client goes away first, the
        request is cancelled, and with it its queued inference work."""
        me = asyncio.current_task()
        gone = False
        route = self._fast_route(scope, path)
        disconnect: Disconnect | None = scope.get(DISCONNECT)

        async def never() -> dict[str, Any]:  # the watcher owns the connection from here on
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        def on_gone() -> None:
            nonlocal gone
            gone = True
            if me is not None:
                me.cancel()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            on_gone()

        watcher = None
        if disconnect is not None:  # served by app.protocol: told from connection_lost
            if disconnect.gone:
                self._client_gone(path)
                return
            disconnect.callback = on_gone
        else:  # another server: a task per request watches receive()
            watcher = asyncio.get_running_loop().create_task(watch())
        try:
            if route is None or not await fast.serve(route, scope, body, send):
                await self.app(scope, _replay(body, never), send)
        except asyncio.CancelledError:
            if not gone or me is None:
                raise
            me.uncancel()
            self._client_gone(path)
        finally:
            if disconnect is not None:
                disconnect.callback = None
            if watcher is not None:
                watcher.cancel()

    def _client_gone(self, path: str) -> None:
        metrics.REJECTED.labels(self.route_of(path), "client_gone").inc()
        info = CURRENT.get()
        if info is not None:
            info.client_gone = True

    def _fast_route(self, scope: dict[str, Any], path: str) -> fast.FastRoute | None:
        if self._fast is None:  # the tasks' routers, included by app.main without a prefix
            self._fast = fast.fast_routes(
                r for spec in tasks().values() for r in spec.router.routes
            )
        route = self._fast.get(path)
        if route is None or scope.get("method") != "POST" or not fast.is_json(scope["headers"]):
            return None
        if getattr(scope.get("app"), "dependency_overrides", None):  # FastAPI applies them
            return None
        return route

    async def _read_capped(self, receive: Any, held: _Held) -> object:
        """The whole body; None as soon as it passes the cap, NO_MEMORY as soon as the body
        budget cannot hold it (the rest is never read), GONE if the client went away."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return GONE
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body_bytes:
                return None
            if not held.grow_to(seen):  # the rest is not read (drained when refusing)
                return NO_MEMORY if message.get("more_body", False) else NO_MEMORY_READ
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, then: Any) -> Any:
    """A receive() that hands the buffered body to the app once, then defers to ``then``
    (the client's own receive, so a disconnect still reaches the app)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        message: dict[str, Any] = await then()
        return message

    return replay


async def reply(
    send: Any,
    status: int,
    code: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    path: str = "",
) -> None:
    """An error answered at the edge, in the shape of the API ``path`` belongs to."""
    body = orjson.dumps(error_payload(path, code, message))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
