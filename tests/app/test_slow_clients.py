"""Slow clients against a real server: headers and bodies that arrive too slowly are cut off
(408, connection closed), and stalled uploads never hold the in-flight slots inference needs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MODELS, REPO
from tests.helpers import free_port, wait_ready

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 3.0
LIMIT = 4  # SEQSERVE_MAX_CONCURRENT_REQUESTS

# The server as `seqserve serve` runs it: uvicorn with the kwargs of app.protocol.
SERVE = """
import functools, sys, uvicorn
from app import protocol
from app.settings import get_settings
kw = protocol.uvicorn_kwargs(get_settings())
if sys.argv[2] == "h11":
    kw["http"] = functools.partial(protocol.HeaderTimeoutH11Protocol, **kw["http"].keywords)
uvicorn.run("app.main:app", port=int(sys.argv[1]), log_level="warning", **kw)
"""


def _serve(tmp_path: Path, http: str) -> Iterator[int]:
    port = free_port()
    env = {
        **os.environ,
        "SEQSERVE_MODELS_DIR": str(MODELS),
        "SEQSERVE_STATE_SECRET": "t" * 32,
        "SEQSERVE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT),
        "SEQSERVE_BODY_TIMEOUT_S": str(BODY_TIMEOUT),
        "SEQSERVE_MAX_CONCURRENT_REQUESTS": str(LIMIT),
        "SEQSERVE_ACCESS_LOG": "false",
    }
    log = tmp_path / f"server-{http}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(port), http],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module", params=["auto", "h11"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """``auto``: the httptools protocol (installed here); ``h11``: the pure-Python one."""
    yield from _serve(tmp_path_factory.mktemp("slow"), request.param)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _read_response(sock: socket.socket) -> bytes:
    """One response on a kept-alive connection (its headers and ``Content-Length`` bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _trickle(sock: socket.socket, data: bytes, every: float, until: float) -> bool:
    """Send ``data`` a byte at a time; False as soon as the server has closed (or answered)."""
    for i in range(len(data)):
        if time.monotonic() > until:
            return True
        try:
            sock.sendall(data[i : i + 1])
        except OSError:
            return False
        time.sleep(every)
    return True


SENTIMENT = json.dumps({"texts": ["a gorgeous, witty film", "dull"]}).encode()


def _request(body: bytes = SENTIMENT, path: str = "/sentiment", close: bool = True) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body


def test_a_connection_that_sends_nothing_is_closed(server: int) -> None:
    with _connect(server) as s:
        t0 = time.monotonic()
        data = _read_all(s)
        took = time.monotonic() - t0
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"request_timeout"' in data
    assert HEADER_TIMEOUT - 0.1 < took < HEADER_TIMEOUT + 2


def test_headers_trickled_a_byte_at_a_time_are_cut_off(server: int) -> None:
    with _connect(server) as s:
        t0 = time.monotonic()
        # A slowloris: each byte well within any idle timeout, the whole far beyond the deadline.
        _trickle(s, _request(), every=0.1, until=t0 + HEADER_TIMEOUT + 5)
        data = _read_all(s)
        took = time.monotonic() - t0
    assert data.startswith(b"HTTP/1.1 408 ")
    assert took < HEADER_TIMEOUT + 2


def test_the_next_request_on_a_kept_alive_connection_has_a_header_deadline_too(
    server: int,
) -> None:
    with _connect(server) as s:
        s.sendall(_request(close=False))
        first = _read_response(s)
        assert first.startswith(b"HTTP/1.1 200 "), first[:200]
        time.sleep(0.2)
        t0 = time.monotonic()
        _trickle(s, _request(), every=0.1, until=t0 + HEADER_TIMEOUT + 5)
        data = _read_all(s)
        took = time.monotonic() - t0
    assert data.startswith(b"HTTP/1.1 408 ")
    assert took < HEADER_TIMEOUT + 2


@pytest.mark.parametrize("every", [None, 0.2])  # stalled half-way / a byte every 0.2 s
def test_a_body_slower_than_the_deadline_gets_408_and_the_connection_closes(
    server: int, every: float | None
) -> None:
    body = json.dumps({"texts": ["x" * 200]}).encode()
    req = _request(body, close=False)
    head, _, rest = req.partition(b"\r\n\r\n")
    with _connect(server) as s:
        s.sendall(head + b"\r\n\r\n" + rest[: len(rest) // 2])
        t0 = time.monotonic()
        if every is not None:
            _trickle(s, rest[len(rest) // 2 :], every=every, until=t0 + BODY_TIMEOUT + 5)
        data = _read_all(s)  # the server closes: no waiting for the rest of the body
        took = time.monotonic() - t0
    status, _, payload = data.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 408 "), data[:300]
    assert b"connection: close" in status.lower()
    assert json.loads(payload)["error"]["code"] == "request_timeout"
    assert BODY_TIMEOUT - 0.2 < took < BODY_TIMEOUT + 2


def test_stalled_uploads_beyond_the_in_flight_limit_leave_inference_answering(
    server: int,
) -> None:
    stalled = []
    try:
        for _ in range(LIMIT * 2):
            s = _connect(server)
            req = _request(json.dumps({"texts": ["y" * 1000]}).encode())
            s.sendall(req[: len(req) - 500])  # headers and half the body, then nothing
            stalled.append(s)
        time.sleep(0.2)
        t0 = time.monotonic()
        for _ in range(LIMIT + 2):
            with _connect(server) as s:
                s.sendall(_request())
                data = _read_all(s)
            assert data.startswith(b"HTTP/1.1 200 "), data[:300]
        assert time.monotonic() - t0 < BODY_TIMEOUT - 0.5  # all answered while the uploads stall
        for s in stalled:  # and the stalled uploads are cut off in their turn
            assert _read_all(s).startswith(b"HTTP/1.1 408 ")
    finally:
        for s in stalled:
            s.close()


def _counter(port: int, name: str, label: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") and label in line
    )


def _client_gone(port: int) -> float:
    return _counter(port, "seqserve_rejected_total", 'reason="client_gone"')


def _logged_499(port: int) -> float:
    return _counter(port, "seqserve_requests_total", 'status="499"')


def test_a_client_that_leaves_mid_request_has_its_work_cancelled(server: int) -> None:
    # Both protocols: httptools tells the edge from connection_lost (app.protocol.Disconnect),
    # h11 through the edge's own watcher task; either way the request is cancelled at once.
    before, before_499 = _client_gone(server), _logged_499(server)
    long_text = " ".join(["the game was released in japan and north america"] * 550)
    socks = []
    for _ in range(LIMIT):  # long enough to be still running when the client leaves
        s = _connect(server)
        s.sendall(_request(json.dumps({"text": long_text}).encode(), "/next-word/score"))
        socks.append(s)
    time.sleep(0.2)
    for s in socks:
        s.close()
    deadline = time.monotonic() + 10
    while _client_gone(server) < before + LIMIT and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _client_gone(server) == before + LIMIT
    assert _logged_499(server) == before_499 + LIMIT  # recorded as 499, not as a 500
    with _connect(server) as s:  # the slots are free again
        s.sendall(_request())
        assert _read_all(s).startswith(b"HTTP/1.1 200 ")
