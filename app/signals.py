"""Process signals: SIGTERM/SIGINT start draining, SIGHUP reloads the models folder, SIGUSR1
answers the reloads asked of every worker (``app.worker_sync``; sent by a sibling worker's
POST /admin/reload or by the master on SIGHUP).

uvicorn installs its own SIGTERM/SIGINT handlers before the app starts; ours run first and then
call uvicorn's, so shutdown proceeds as usual while readiness turns false and new requests get
503 during the drain. Signal handlers can only be set from the main thread: under a test client
(or anything that runs the app in another thread) this is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any

from app.worker_sync import RELOAD_SIGNAL

log = logging.getLogger(__name__)


def install(
    on_drain: Callable[[], None],
    on_reload: Callable[[], Coroutine[Any, Any, Any]],
    on_sync: Callable[[], Coroutine[Any, Any, Any]] | None = None,
) -> Callable[[], None]:
    """Install the handlers; returns a function that restores the previous ones (SIGUSR1 is
    left ignored: a sibling may still signal this worker while it shuts down, and SIGUSR1's
    default action would end it)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}
    running: set[asyncio.Task[Any]] = set()  # the loop keeps only weak references to tasks

    def spawn(job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        task = loop.create_task(job())
        running.add(task)
        task.add_done_callback(running.discard)

    def drain(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: draining (readiness false, new requests 503)", signum)
        on_drain()
        prev = previous.get(signum)
        if callable(prev):
            prev(signum, frame)

    def hup(signum: int, frame: FrameType | None) -> None:
        log.info("SIGHUP: reloading the models folder")
        loop.call_soon_threadsafe(spawn, on_reload)

    def sync(signum: int, frame: FrameType | None) -> None:
        if on_sync is not None:
            loop.call_soon_threadsafe(spawn, on_sync)

    handlers = [
        (signal.SIGTERM, drain),
        (signal.SIGINT, drain),
        (signal.SIGHUP, hup),
        (RELOAD_SIGNAL, sync),
    ]
    for sig, handler in handlers:
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, prev in previous.items():
            if sig == RELOAD_SIGNAL and prev == signal.SIG_DFL:
                prev = signal.SIG_IGN
            signal.signal(sig, prev)

    return restore
