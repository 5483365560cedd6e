"""The edge of the service as one plain ASGI middleware (cheaper than BaseHTTPMiddleware):
request metrics, and admission control — an inference request beyond the in-flight limit is
answered 429 at once, before its body is read or any work is queued."""

from __future__ import annotations

import time
from typing import Any

import orjson

from app import metrics
from app.api.errors import error_body

KNOWN_ROUTES = {
    "/sentiment",
    "/next-word",
    "/next-word/score",
    "/forecast",
    "/healthz",
    "/readyz",
    "/v1/models",
    "/metrics",
}
INFERENCE_ROUTES = {"/sentiment", "/next-word", "/next-word/score", "/forecast"}


class MetricsMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = (
            path
            if path in KNOWN_ROUTES
            else ("/v1/models/{name}" if path.startswith("/v1/models/") else "other")
        )
        status = {"code": 500}
        t0 = time.perf_counter()

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        container = getattr(scope["app"].state, "container", None) if "app" in scope else None
        limiter = getattr(container, "limiter", None) if path in INFERENCE_ROUTES else None
        try:
            if limiter is None:
                await self.app(scope, receive, send_wrapper)
            elif not limiter.try_acquire():
                await _reject(send_wrapper, limiter.limit)
            else:
                try:
                    await self.app(scope, receive, send_wrapper)
                finally:
                    limiter.release()
        finally:
            metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - t0)
            metrics.REQUESTS.labels(route, str(status["code"])).inc()


async def _reject(send: Any, limit: int) -> None:
    body = orjson.dumps(
        error_body(
            "overloaded",
            f"the server is at its limit of {limit} requests in flight; retry shortly",
        )
    )
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
