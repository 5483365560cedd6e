"""SIGTERM against a real server process: requests in flight and bodies still uploading finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from contract.store import publish_folder
from tests.conftest import MODELS, REPO
from tests.helpers import free_port


def _post_raw(port: int, path: str, body: bytes, chunk_pause: float = 0.0) -> str:
    """POST over a raw socket, optionally uploading the body slowly; returns the status line
    and the start of the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        s.sendall(head.encode())
        step = max(1, len(body) // 10)
        for i in range(0, len(body), step):
            s.sendall(body[i : i + step])
            time.sleep(chunk_pause)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return (data[:12] + b" " + data.split(b"\r\n\r\n", 1)[-1][:120]).decode(errors="replace")


@pytest.mark.slow
def test_sigterm_lets_requests_in_flight_and_uploads_finish(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SEQSERVE_MODELS_DIR": str(MODELS),
        "SEQSERVE_STATE_SECRET": "t" * 32,
        "SEQSERVE_SHUTDOWN_GRACE_SECONDS": "20",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=REPO,
        env=env,
        stderr=subprocess.DEVNULL,  # a pipe nobody reads could fill up with log lines
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        long_text = json.dumps({"text": "The game was released in Japan . " * 100}).encode()
        series = [
            {"id": f"s{i}", "values": [float(j % 24) + 0.123456 for j in range(50_000)]}
            for i in range(2)
        ]
        upload = json.dumps({"series": series, "horizon": 24}).encode()
        assert len(upload) > 1_000_000
        statuses: list[str] = []
        lock = threading.Lock()

        def run(path: str, body: bytes, pause: float) -> None:
            code = _post_raw(port, path, body, pause)
            with lock:
                statuses.append(code)

        threads = [
            threading.Thread(target=run, args=("/next-word/score", long_text, 0.0))
            for _ in range(12)
        ] + [threading.Thread(target=run, args=("/forecast", upload, 0.1)) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # score requests are computing, uploads are half way
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        # uvicorn re-raises the signal once it has shut down cleanly, so -SIGTERM is a clean exit
        assert proc.wait(30) in (0, -signal.SIGTERM)
        bad = [x for x in statuses if not x.startswith("HTTP/1.1 200")]
        assert len(statuses) == 16 and not bad, bad
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_sighup_reloads_the_models_folder(tmp_path: Path, tiny_sentiment_models: Path) -> None:
    import shutil

    models = tmp_path / "models"
    shutil.copytree(tiny_sentiment_models, models)
    port = free_port()
    env = {**os.environ, "SEQSERVE_MODELS_DIR": str(models), "SEQSERVE_STATE_SECRET": "t" * 32}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--log-level", "warning"],
        cwd=REPO,
        env=env,
        stderr=subprocess.DEVNULL,
    )

    def ready() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return json.loads(r.read())

    try:
        for _ in range(300):
            try:
                assert ready()["models"] == ["sentiment/toy:1"]
                break
            except OSError:
                time.sleep(0.05)
        publish_folder(models / "sentiment/toy/1", models / "sentiment/toy/2", "sentiment")
        proc.send_signal(signal.SIGHUP)
        for _ in range(200):
            if ready()["models"] == ["sentiment/toy:1", "sentiment/toy:2"]:
                break
            time.sleep(0.05)
        assert ready()["models"] == ["sentiment/toy:1", "sentiment/toy:2"]
        assert proc.poll() is None  # SIGHUP reloads; it does not stop the server
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
