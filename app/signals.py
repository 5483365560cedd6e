"""Process signals: SIGTERM/SIGINT start draining, SIGHUP reloads the models folder.

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
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


def install(on_drain: Callable[[], None], on_reload: Callable[[], Any]) -> Callable[[], None]:
    """Install the handlers; returns a function that restores the previous ones."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def drain(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: draining (readiness false, new requests 503)", signum)
        on_drain()
        prev = previous.get(signum)
        if callable(prev):
            prev(signum, frame)

    def hup(signum: int, frame: FrameType | None) -> None:
        log.info("SIGHUP: reloading the models folder")
        loop.call_soon_threadsafe(lambda: loop.create_task(on_reload()))

    for sig, handler in ((signal.SIGTERM, drain), (signal.SIGINT, drain), (signal.SIGHUP, hup)):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, prev in previous.items():
            signal.signal(sig, prev)

    return restore
