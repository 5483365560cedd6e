"""The master process of ``seqserve serve --workers N``: uvicorn's supervisor, with two changes.

- **SIGHUP reloads the models in every worker, in place**, instead of uvicorn's rolling restart:
  the master writes a reload request to the run directory and sends SIGUSR1 to each worker that
  has registered there (``app.worker_sync``), then logs what each one loaded. Requests in flight
  are untouched (``Container.reload`` swaps models only between requests).
- **A worker that fails to start stops the server with exit code 3**, whatever its exit code:
  uvicorn stops only on code 3 and still exits 0. The worker's one-line reason (left in the run
  directory by the app's lifespan) is printed once, and the other workers get a bounded time to
  stop before they are killed.

``serve_one`` runs a single worker in this process with the same promise: a failed start-up is
one line (``seqserve: failed to start: <reason>``) and exit code 3; the app's traceback is
logged only at ``--log-level debug``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from app.worker_sync import POLL_SECONDS, RUN_DIR_ENV, WAIT_SECONDS, RunDir

logger = logging.getLogger("uvicorn.error")

STOP_SECONDS = 5.0  # after a failed start-up, how long the other workers get to stop


class Supervisor(Multiprocess):
    def __init__(self, config: Config, sockets: list[Any], run: RunDir) -> None:
        super().__init__(config, sockets)
        self.run_dir = run
        self.startup_failure: str | None = None
        self._ready: set[int] = set()  # workers that have finished start-up at least once

    # -- SIGHUP: reload in place -------------------------------------------------------------

    def handle_hup(self) -> None:
        # Only registered workers have the SIGUSR1 handler (its default action ends a
        # process); one still loading answers the request itself when it registers.
        rid = self.run_dir.new_request(origin="SIGHUP")
        registered = set(self.run_dir.workers())
        pids = [p.pid for p in self.processes if p.pid is not None and p.pid in registered]
        reached = self.run_dir.signal_workers(pids)
        logger.info(f"Received SIGHUP, reloading the models in workers {reached}.")
        if reached:
            threading.Thread(target=self._log_results, args=(rid, reached), daemon=True).start()

    def _log_results(self, rid: str, pids: list[int]) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            results, done = self.run_dir.collect(rid, pids, deadline)
            if done:
                break
            time.sleep(POLL_SECONDS)
        self.run_dir.forget(rid)
        for pid, r in sorted(results.items()):
            if "error" in r:
                logger.error(f"Reload in worker [{pid}] failed: {r['error']}")
            else:
                logger.info(
                    f"Reloaded worker [{pid}]: loaded {r.get('loaded')}, failed {r.get('failed')}"
                )

    # -- workers that fail to start ----------------------------------------------------------

    def keep_subprocess_alive(self) -> None:
        """uvicorn's loop (replace a worker that died or hangs), except that a worker that
        exits before it has ever been ready stops the server."""
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.pid not in self._ready and process.process.is_alive():
                if process.is_ready(timeout=1):
                    self._ready.add(process.pid)  # type: ignore[arg-type]
                continue
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # exited, or hung: make sure
            process.join()
            if process.pid is not None:
                self.run_dir.unregister(process.pid)
            if process.pid not in self._ready or process.exitcode == STARTUP_FAILURE:
                self._startup_failed(process)
                return
            if self.should_exit.is_set():
                return
            logger.info(f"Child process [{process.pid}] died")
            replacement = Process(self.config, self.sockets)
            replacement.start()
            self.processes[idx] = replacement

    def _startup_failed(self, process: Process) -> None:
        pid = process.pid
        reason = self.run_dir.failure(pid) if pid is not None else None
        if reason is None:
            reason = f"exit code {process.exitcode} (its log above says why)"
        self.startup_failure = f"worker [{pid}] failed to start: {reason}"
        logger.error(f"Child process [{pid}] failed to start, stopping the parent process.")
        self.should_exit.set()

    def join_all(self) -> None:
        if self.startup_failure is None:
            super().join_all()
            return
        # The others may be loading models: give them a moment, then stop them for good.
        deadline = time.monotonic() + STOP_SECONDS
        for process in self.processes:
            process.process.join(max(0.0, deadline - time.monotonic()))
            if process.process.is_alive():
                process.kill()
                process.process.join()


def serve_workers(app: str, options: dict[str, Any]) -> int:
    """Run ``app`` in ``options["workers"]`` processes under the Supervisor; returns the exit
    code (3 when a worker failed to start)."""
    config = Config(app, **options)
    run = RunDir.create()
    os.environ[RUN_DIR_ENV] = str(run.path)  # inherited by the worker processes
    supervisor: Supervisor | None = None
    try:
        sockets = [config.bind_socket()]
        supervisor = Supervisor(config, sockets, run)
        supervisor.run()
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C
        pass
    finally:
        if config.uds and os.path.exists(config.uds):
            os.remove(config.uds)
        run.remove()
    if supervisor is not None and supervisor.startup_failure:
        print(f"seqserve: {supervisor.startup_failure}", file=sys.stderr)
        return STARTUP_FAILURE
    return 0


class _StartupTraceback(logging.Filter):
    """On uvicorn's error logger in a single-worker server: keeps the lifespan's start-up
    traceback (uvicorn logs it as the message of ``lifespan.startup.failed``) out of the log
    unless at debug level, and remembers its last line as a fallback reason."""

    def __init__(self, show: bool) -> None:
        super().__init__()
        self.show = show
        self.last_line: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage() if record.levelno >= logging.ERROR else ""
        if not text.startswith("Traceback (most recent call last)"):
            return True
        lines = [line for line in text.strip().splitlines() if line.strip()]
        self.last_line = " ".join(lines[-1].split()) if lines else None
        return self.show


def serve_one(app: str, options: dict[str, Any]) -> int:
    """Run ``app`` in this process (one worker); returns the exit code: 3, after one line
    saying why, when the app failed to start. The run directory only carries the reason the
    app's lifespan leaves there (``worker_sync.record_startup_failure``)."""
    import uvicorn

    run = RunDir.create()
    os.environ[RUN_DIR_ENV] = str(run.path)
    show = str(options.get("log_level", "info")).lower() == "debug"
    catcher = _StartupTraceback(show)
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addFilter(catcher)
    code = 0
    try:
        uvicorn.run(app, **options)
    except SystemExit as exc:  # uvicorn exits 3 when the app failed to start
        code = exc.code if isinstance(exc.code, int) else 1
        if code != STARTUP_FAILURE:
            raise
    finally:
        uvicorn_log.removeFilter(catcher)
        reason = run.failure(os.getpid())
        run.remove()
        os.environ.pop(RUN_DIR_ENV, None)
    if code == STARTUP_FAILURE:
        reason = reason or catcher.last_line or "exit code 3 (its log above says why)"
        print(f"seqserve: failed to start: {reason}", file=sys.stderr)
    return code
