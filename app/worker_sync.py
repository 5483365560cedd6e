"""Reloads that reach every worker of ``seqserve serve --workers N``.

Each worker is its own process with its own models, so a reload has to happen in each of them.
The master (``app.supervisor``) creates a run directory and names it in ``SEQSERVE_RUN_DIR``;
the workers inherit it. Its layout::

    workers/<pid>              a worker that finished start-up and reloads on SIGUSR1
    requests/<id>              a reload asked for: by POST /admin/reload in one worker, or by
                               SIGHUP to the master (kept ten minutes)
    results/<id>.<pid>.json    what worker <pid> loaded for request <id>
    failed/<pid>               a worker's one-line start-up failure, printed by the master

A reload writes a request, sends SIGUSR1 to the workers, and each of them answers every request
it has not answered yet with one ``Container.reload()`` and a result file. A signal carries no
data, so the files are the message; answering "every open request" makes two reloads asked at
once (from two workers) safe. Without ``SEQSERVE_RUN_DIR`` (one worker, a test client) a reload
is the worker's own and nothing here touches the disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from app.errors import SeqServeError

log = logging.getLogger(__name__)

RUN_DIR_ENV = "SEQSERVE_RUN_DIR"  # internal: set by the master for its workers
RELOAD_SIGNAL = signal.SIGUSR1
WAIT_SECONDS = 30.0  # how long a reload waits for the other workers' results
POLL_SECONDS = 0.05
KEEP_SECONDS = 600.0  # request and result files older than this are removed


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _parent_of(pid: int) -> int | None:
    """The parent pid of a live process (Linux /proc), or None when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else: not one of our workers
        return False
    return True


def failure_reason(exc: BaseException) -> str:
    """One line saying why start-up failed."""
    text = exc.message if isinstance(exc, SeqServeError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


class RunDir:
    """The directory shared by the master and its workers (layout in the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.workers_dir = self.path / "workers"
        self.requests_dir = self.path / "requests"
        self.results_dir = self.path / "results"
        self.failed_dir = self.path / "failed"

    @classmethod
    def create(cls) -> RunDir:
        """A fresh run directory (the master, before it starts any worker)."""
        run = cls(tempfile.mkdtemp(prefix="seqserve-run-"))
        for d in (run.workers_dir, run.requests_dir, run.results_dir, run.failed_dir):
            d.mkdir()
        return run

    @classmethod
    def from_env(cls) -> RunDir | None:
        path = os.environ.get(RUN_DIR_ENV)
        return cls(path) if path and Path(path).is_dir() else None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # -- workers -----------------------------------------------------------------------------

    def register(self, pid: int) -> None:
        info = {"pid": pid, "ppid": os.getppid(), "since": time.time()}
        _write_atomic(self.workers_dir / str(pid), json.dumps(info))

    def unregister(self, pid: int) -> None:
        (self.workers_dir / str(pid)).unlink(missing_ok=True)

    def workers(self) -> list[int]:
        """Registered workers still running; a registration left by a dead worker (or a pid
        now used by an unrelated process) is removed, so it is never signalled."""
        live = []
        for f in self.workers_dir.iterdir():
            if not f.name.isdigit():
                continue
            pid = int(f.name)
            try:
                ppid = json.loads(f.read_text())["ppid"]
            except (OSError, ValueError, KeyError):
                continue
            parent = _parent_of(pid)
            if _alive(pid) and parent in (None, ppid):
                live.append(pid)
            else:
                f.unlink(missing_ok=True)
        return sorted(live)

    def signal_workers(self, pids: list[int]) -> list[int]:
        """Send the reload signal; returns the pids it reached."""
        reached = []
        for pid in pids:
            try:
                os.kill(pid, RELOAD_SIGNAL)
            except OSError:
                self.unregister(pid)
                continue
            reached.append(pid)
        return reached

    # -- reload requests and results ---------------------------------------------------------

    def new_request(self, origin: str) -> str:
        self._prune()
        rid = f"{time.time_ns()}-{os.getpid()}"
        _write_atomic(self.requests_dir / rid, json.dumps({"origin": origin}))
        return rid

    def requests(self, since: float) -> list[str]:
        """The reload requests made after ``since``, oldest first."""
        out = []
        for f in self.requests_dir.iterdir():
            if f.name.startswith("."):
                continue
            try:
                made = f.stat().st_mtime
            except OSError:
                continue
            if made >= since:
                out.append(f.name)
        return sorted(out)

    def write_result(self, rid: str, pid: int, result: dict[str, Any]) -> None:
        _write_atomic(self._result_path(rid, pid), json.dumps(result))

    def read_result(self, rid: str, pid: int) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = json.loads(self._result_path(rid, pid).read_text())
        except (OSError, ValueError):
            return None
        return result

    def _result_path(self, rid: str, pid: int) -> Path:
        return self.results_dir / f"{rid}.{pid}.json"

    def _prune(self) -> None:
        cutoff = time.time() - KEEP_SECONDS
        for d in (self.requests_dir, self.results_dir):
            for f in d.iterdir():
                try:
                    if f.stat().st_mtime < cutoff:
                        f.unlink()
                except OSError:
                    continue

    # -- start-up failures -------------------------------------------------------------------

    def write_failure(self, pid: int, reason: str) -> None:
        _write_atomic(self.failed_dir / str(pid), reason)

    def failure(self, pid: int) -> str | None:
        try:
            return (self.failed_dir / str(pid)).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    # -- waiting -----------------------------------------------------------------------------

    def collect(self, rid: str, pids: list[int], deadline: float) -> tuple[dict[int, Any], bool]:
        """One look at the results of ``rid``: {pid: result or an error entry}, and whether
        every pid is settled (answered, exited, or out of time at ``deadline``)."""
        out: dict[int, Any] = {}
        done = True
        for pid in pids:
            result = self.read_result(rid, pid)
            if result is not None:
                out[pid] = result
            elif not _alive(pid):
                out[pid] = {"error": "the worker exited before it answered"}
            elif time.monotonic() >= deadline:
                out[pid] = {"error": f"no answer within {WAIT_SECONDS:g} s"}
            else:
                done = False
        return out, done

    def forget(self, rid: str) -> None:
        """Drop the results once read. The request stays (pruned after ``KEEP_SECONDS``): a
        worker that was still loading when it was made answers it when it registers."""
        for f in self.results_dir.glob(f"{rid}.*.json"):
            f.unlink(missing_ok=True)


def record_startup_failure(exc: BaseException) -> None:
    """Leave this worker's one-line start-up failure for the master to print."""
    run = RunDir.from_env()
    if run is not None:
        try:
            run.write_failure(os.getpid(), failure_reason(exc))
        except OSError:  # the master prints the exit code instead
            pass


class WorkerReloads:
    """One worker's side of the reloads: answer the open requests on SIGUSR1, and make a
    reload (POST /admin/reload) reach the other workers too."""

    def __init__(
        self,
        reload: Callable[[], Awaitable[dict[str, Any]]],
        run: RunDir | None,
        since: float | None = None,
    ):
        """``since``: when this worker started loading its models; requests made after it
        are answered even if they came before the worker registered."""
        self._reload = reload
        self.run = run
        self.pid = os.getpid()
        self.since = time.time() if since is None else since
        self._answered: set[str] = set()  # answered, or being answered, by this worker

    def register(self) -> bool:
        """Called once start-up is done and the reload signal handler is in place (without
        one, as under a test client, SIGUSR1 would end the process: not registered). True
        when a reload was asked while this worker was loading: call ``answer_pending``."""
        if self.run is None or not callable(signal.getsignal(RELOAD_SIGNAL)):
            return False
        self.run.register(self.pid)
        return bool(self._open())

    def _open(self) -> list[str]:
        assert self.run is not None
        made = self.run.requests(self.since)
        self._answered.intersection_update(made)  # forget the pruned ones
        return [r for r in made if r not in self._answered]

    def unregister(self) -> None:
        if self.run is not None:
            self.run.unregister(self.pid)

    async def answer_pending(self) -> None:
        """SIGUSR1: one reload answers every request this worker has not answered yet."""
        if self.run is None:
            return
        rids = self._open()
        if not rids:
            return
        self._answered.update(rids)
        result = await self._reload_safely()
        for rid in rids:
            self.run.write_result(rid, self.pid, result)

    async def _reload_safely(self) -> dict[str, Any]:
        try:
            return await self._reload()
        except Exception as exc:  # reported to whoever asked; this worker keeps serving
            log.exception("reload failed")
            return {"error": failure_reason(exc)}

    async def reload_all(self) -> dict[str, Any]:
        """Reload here and in every other registered worker; this worker's report, plus
        ``workers``: one entry per worker ({"pid", "loaded", "failed", ...}), this one first."""
        if self.run is None:
            report = await self._reload()
            return {**report, "workers": [{"pid": self.pid, **report}]}
        rid = self.run.new_request(origin=f"worker {self.pid}")
        self._answered.add(rid)
        others = [p for p in self.run.workers() if p != self.pid]
        others = self.run.signal_workers(others)
        report = await self._reload()
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            results, done = self.run.collect(rid, others, deadline)
            if done:
                break
            await asyncio.sleep(POLL_SECONDS)
        self.run.forget(rid)
        workers = [{"pid": self.pid, **report}]
        workers += [{"pid": pid, **results[pid]} for pid in others]
        return {**report, "workers": workers}
