"""Request metrics as a plain ASGI middleware (cheaper than BaseHTTPMiddleware)."""

from __future__ import annotations

import time
from typing import Any

from app import metrics

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

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - t0)
            metrics.REQUESTS.labels(route, str(status["code"])).inc()
