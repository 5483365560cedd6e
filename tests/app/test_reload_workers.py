"""Reloads with ``seqserve serve --workers 2``: POST /admin/reload and SIGHUP to the master
reach every worker, in place (same worker pids), without failing a request in flight."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.cli import main
from app.worker_sync import RunDir, WorkerReloads
from tests.conftest import MODELS, REPO
from tests.helpers import free_port, serving

ADMIN = "admin-secret"
OLD, NEW = "sst2-bilstm", "imdb-simple-rnn"


def _post(base: str, path: str, body: dict[str, Any], key: str | None = None) -> Any:
    """One POST on a new connection (``Connection: close``), so the kernel picks a worker."""
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _default_seen(base: str, n: int) -> list[str]:
    return [_post(base, "/sentiment", {"text": "a fine film"})["model"]["name"] for _ in range(n)]


def _wait_for(log: Path, pattern: str, count: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = re.findall(pattern, log.read_text())
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"{pattern!r} x{count}:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path, Path]]:
    """Two workers over a temp models folder (shipped sentiment models, linked) whose
    sentiment default is pinned to OLD; yields (base url, master process, log, models)."""
    root = tmp_path / "models"
    (root / "sentiment").mkdir(parents=True)
    for name in (OLD, NEW):
        (root / "sentiment" / name).symlink_to(MODELS / "sentiment" / name)
    (root / "defaults.json").write_text(json.dumps({"sentiment": f"{OLD}:1"}))
    port = free_port()
    env = {
        **os.environ,
        "SEQSERVE_MODELS_DIR": str(root),
        "SEQSERVE_STATE_SECRET": "0123456789abcdef0123456789abcdef",
        "SEQSERVE_ADMIN_KEYS": ADMIN,
        "SEQSERVE_RELOAD_GRACE_SECONDS": "1",
        "SEQSERVE_INTRA_OP_THREADS": "1",
    }
    for name in ("PROMETHEUS_MULTIPROC_DIR", "SEQSERVE_RUN_DIR", "SEQSERVE_DEFAULT_MODELS"):
        env.pop(name, None)
    log = tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    with serving(["--port", str(port), "--workers", "2"], env, REPO, log) as proc:
        _wait_for(log, r"Application startup complete", 2, timeout=60)
        yield base, proc, log, root


def _pin_new_default(root: Path) -> None:
    assert main(["models", "default", "sentiment", f"{NEW}:1", "--models-dir", str(root)]) == 0


def test_admin_reload_reaches_both_workers(
    server: tuple[str, subprocess.Popen[bytes], Path, Path],
) -> None:
    base, _, _, root = server
    assert set(_default_seen(base, 6)) == {OLD}
    _pin_new_default(root)
    report = _post(base, "/admin/reload", {}, key=ADMIN)
    workers = report["workers"]
    assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2, report
    for w in workers:
        assert "error" not in w and w["failed"] == {}, w
        assert sorted(w["unchanged"]) == [f"sentiment/{NEW}:1", f"sentiment/{OLD}:1"]
    # the single-worker shape still holds at the top level: the answering worker's report
    assert report["unchanged"] == workers[0]["unchanged"]
    assert _default_seen(base, 20) == [NEW] * 20


def test_sighup_to_the_master_reloads_every_worker_in_place(
    server: tuple[str, subprocess.Popen[bytes], Path, Path],
) -> None:
    base, proc, log, root = server
    pids = {w["pid"] for w in _post(base, "/admin/reload", {}, key=ADMIN)["workers"]}
    assert len(pids) == 2
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:  # requests in flight during the reload must all succeed
        while not stop.is_set():
            try:
                _post(base, "/sentiment", {"texts": ["a fine film", "dull"]})
                statuses.append(200)
            except urllib.error.HTTPError as exc:
                statuses.append(exc.code)
            except OSError:
                statuses.append(0)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        _pin_new_default(root)
        proc.send_signal(signal.SIGHUP)
        reloaded = _wait_for(log, r"Reloaded worker \[(\d+)\]", 2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert {int(p) for p in reloaded} == pids
    assert _default_seen(base, 20) == [NEW] * 20
    assert statuses and set(statuses) == {200}
    # the same two processes: reloaded, not restarted
    assert {w["pid"] for w in _post(base, "/admin/reload", {}, key=ADMIN)["workers"]} == pids
    assert "restarting processes" not in log.read_text()
    assert proc.poll() is None


def test_run_dir_skips_dead_workers_and_one_reload_answers_every_open_request(
    tmp_path: Path,
) -> None:
    run = RunDir.create()
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        run.register(os.getpid())
        (run.workers_dir / str(dead.pid)).write_text(json.dumps({"pid": dead.pid, "ppid": 1}))
        assert run.workers() == [os.getpid()]
        assert not (run.workers_dir / str(dead.pid)).exists()  # never signalled later

        calls: list[int] = []

        async def reload() -> dict[str, Any]:
            calls.append(1)
            return {"loaded": ["sentiment/x:2"], "failed": {}}

        reloads = WorkerReloads(reload, run, since=time.time() - 1)
        first, second = run.new_request("a"), run.new_request("b")
        asyncio.run(reloads.answer_pending())
        assert calls == [1]
        for rid in (first, second):
            assert run.read_result(rid, os.getpid()) == {"loaded": ["sentiment/x:2"], "failed": {}}
        asyncio.run(reloads.answer_pending())  # nothing open: no second reload
        assert calls == [1]

        # A worker that was still loading when a reload was asked answers it on registering
        # (only with its SIGUSR1 handler in place: without one the signal would end it).
        late = WorkerReloads(reload, run, since=time.time() - 1)
        assert late.register() is False
        previous = signal.signal(signal.SIGUSR1, lambda *_: None)
        try:
            assert late.register() is True
        finally:
            signal.signal(signal.SIGUSR1, previous)
        asyncio.run(late.answer_pending())
        assert calls == [1, 1]
    finally:
        run.remove()


def test_workers_without_a_state_secret_share_one_key(tmp_path: Path) -> None:
    """No SEQSERVE_STATE_SECRET and two workers: ``seqserve serve`` makes one key for both
    (with one warning), so a state token continues on whichever worker gets the request."""
    root = tmp_path / "models"
    (root / "next-word").mkdir(parents=True)
    (root / "next-word" / "wikitext2-lstm").symlink_to(MODELS / "next-word" / "wikitext2-lstm")
    port = free_port()
    env = {**os.environ, "SEQSERVE_MODELS_DIR": str(root), "SEQSERVE_INTRA_OP_THREADS": "1"}
    for name in (
        "PROMETHEUS_MULTIPROC_DIR",
        "SEQSERVE_RUN_DIR",
        "SEQSERVE_DEFAULT_MODELS",
        "SEQSERVE_STATE_SECRET",
        "SEQSERVE_STATE_PREVIOUS_SECRETS",
    ):
        env.pop(name, None)
    log = tmp_path / "server.log"
    base = f"http://127.0.0.1:{port}"
    # cwd: no .env there
    with serving(["--port", str(port), "--workers", "2"], env, tmp_path, log):
        _wait_for(log, r"Application startup complete", 2, timeout=60)
        state = _post(base, "/next-word", {"text": "Happy birthday , my"})["state"]
        for word in ("father", "and", "the", "other", "day", "."):
            state = _post(base, "/next-word", {"text": word, "k": 1, "state": state})["state"]
        text = log.read_text()
        assert text.count("SEQSERVE_STATE_SECRET is not set") == 1, text[-3000:]
        assert "workers share a random key" in text
