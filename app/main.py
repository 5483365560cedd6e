"""Builds the FastAPI app. ``uvicorn app.main:app`` serves the models under ``models/``."""

from __future__ import annotations

import functools
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from app import __version__, metrics, signals, worker_sync
from app.api import errors
from app.api.middleware import EdgeMiddleware
from app.api.offload import large_body_gate, offload_large_bodies
from app.api.routes import admin, docs, health, models, v2
from app.container import Container
from app.limits import body_budget_bytes
from app.observability import configure_logging
from app.settings import Settings, SettingsInvalid, get_settings
from app.tasks import tasks

log = logging.getLogger(__name__)

DESCRIPTION = """Recurrent sequence models (LSTM/GRU) served with onnxruntime.

Errors are JSON: `{"error": {"code": "...", "message": "..."}}`; on the Open Inference Protocol
routes (`/v2/...`) they have the protocol's shape, `{"error": "..."}`.
"""


class SeqServeAPI(FastAPI):
    """FastAPI with the edge (``app.api.middleware``) in front of it rather than inside.

    As a FastAPI middleware the edge sits under four layers that every request crosses
    (OpenTelemetry's check, which reads the environment, the error, telemetry and body-limit
    middlewares); in front, the requests it answers itself (limits, refusals, and the inference
    routes' direct path, ``app.api.fast``) skip them, and everything else goes through FastAPI
    as before. The edge answers its own failures with the app's JSON 500."""

    edge: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.edge is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await self.edge(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.api_keys:
            log.warning(
                "SEQSERVE_API_KEYS is not set: the inference and model endpoints are open to "
                "anyone who can reach this port"
            )
        loading_since = time.time()
        try:
            container = Container.build(settings)
        except Exception as exc:  # with several workers the master prints it once, and exits 3
            worker_sync.record_startup_failure(exc)
            raise
        app.state.container = container
        app.state.draining = False
        # Everything loaded so far (modules, models, schemas: ~10^6 objects) lives as long as
        # the process: moved out of the collector's sight, the full collections that requests'
        # garbage triggers stop walking it (profiled: ~10% of the loop's time under load).
        gc.collect()
        gc.freeze()
        run_dir = worker_sync.RunDir.from_env()
        reloads = worker_sync.WorkerReloads(container.reload, run_dir, loading_since)
        app.state.reloads = reloads
        restore = signals.install(
            lambda: setattr(app.state, "draining", True), container.reload, reloads.answer_pending
        )
        # After the handler: a registered worker may be signalled at once. A reload asked
        # while this one was loading (its siblings did not wait for it) is caught up here.
        if reloads.register():
            await reloads.answer_pending()
        try:
            yield
        finally:
            reloads.unregister()
            restore()
            app.state.container = None
            await container.close()
            metrics.process_exiting()

    # /docs and /redoc come from app.api.routes.docs: same pages, assets served locally.
    app = SeqServeAPI(
        title="seqserve",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.container = None
    app.state.draining = False
    app.state.large_bodies = large_body_gate(settings.memory_budget_mb)
    app.state.request_deadline_s = settings.request_deadline_ms / 1000  # the gate's wait too
    errors.install(app)
    app.edge = EdgeMiddleware(
        functools.partial(FastAPI.__call__, app),
        api_keys=[k.get_secret_value() for k in settings.api_keys],
        max_body_bytes=settings.max_body_bytes,
        access_log=settings.access_log,
        body_timeout_s=settings.body_timeout_s,
        admission_wait_s=settings.max_admission_wait_ms / 1000,
        max_waiting=settings.max_waiting_requests,
        body_budget_bytes=body_budget_bytes(settings.memory_budget_mb, settings.max_body_bytes),
    )
    # Inference routes first: routing tries routes in order, and these are the hot ones.
    # Large JSON bodies are parsed and validated in a worker thread (probes stay prompt).
    for spec in tasks().values():
        offload_large_bodies(spec.router)
        app.include_router(spec.router)
    for module in (v2, health, models, admin, docs):
        app.include_router(module.router)
    return app


try:
    _settings = get_settings()
except SettingsInvalid as exc:  # `uvicorn app.main:app`: one line, not a traceback
    print(f"seqserve: {exc.message}", file=sys.stderr)
    # 3 is uvicorn's STARTUP_FAILURE: with --workers N its supervisor then stops instead of
    # restarting workers that would fail the same way forever.
    sys.exit(3)
configure_logging(_settings.log_level, _settings.log_format)
app = create_app(_settings)
