"""Request bodies at the edge: a per-process memory budget for bodies being read or served (429
when full, a body alone always fits), deadlines that count from the moment the body is in,
uploads abandoned mid-way dropped, and the large-body gate's wait bounded by the deadline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import metrics
from app.api import offload
from app.api.middleware import EdgeMiddleware
from app.limits import BodyBudget, InflightLimiter, body_budget_bytes
from app.main import create_app
from app.observability import CURRENT
from app.settings import Settings

# --- the budget -------------------------------------------------------------------------------


def test_a_body_alone_always_fits_and_others_wait_their_turn() -> None:
    budget = BodyBudget(100)
    assert budget.try_reserve(100)  # the largest allowed body, on an empty budget
    assert not budget.try_reserve(1)
    budget.release(100)
    assert budget.try_reserve(60) and budget.try_reserve(40) and not budget.try_reserve(1)
    budget.release(60)
    budget.release(40)
    assert budget.used == 0


def test_the_budget_is_half_the_memory_budget_and_never_less_than_one_body() -> None:
    assert body_budget_bytes(256, 8_000_000) == 128_000_000
    assert body_budget_bytes(16, 8_000_000) == 8_000_000


# --- the edge ---------------------------------------------------------------------------------


def _scope(length: int | None, path: str = "/sentiment", limiter: Any = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    container = SimpleNamespace(limiter=limiter)
    return {
        "type": "http",
        "path": path,
        "method": "POST",
        "headers": headers,
        "app": SimpleNamespace(state=SimpleNamespace(container=container, draining=False)),
    }


class Sent(list[dict[str, Any]]):
    async def __call__(self, message: dict[str, Any]) -> None:
        self.append(message)

    @property
    def status(self) -> int:
        return int(self[0]["status"])

    def json(self) -> Any:
        return json.loads(self[1]["body"])


def _rejected(route: str, reason: str) -> float:
    return metrics.REJECTED.labels(route, reason)._value.get()  # type: ignore[no-any-return]


async def _echo_app(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _stalled_after(first: bytes) -> Any:
    """A client that sends ``first`` and then nothing more."""
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": first, "more_body": True}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    return receive


class _chunks:  # noqa: N801 - used like the receive() functions above
    """A client that sends ``parts`` one message each; ``left`` counts the unread ones."""

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = list(parts)
        self.left = len(parts)

    async def __call__(self) -> dict[str, Any]:
        if not self.parts:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")
        self.left -= 1
        body = self.parts.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(self.parts)}


def _whole(body: bytes) -> Any:
    """A client that sends ``body`` and then waits for the answer."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    return receive


@pytest.mark.parametrize("content_length", [True, False])
def test_stalled_uploads_fill_the_body_budget_and_the_next_one_gets_429(
    content_length: bool,
) -> None:
    """64 stalled uploads of 7.9 MB took ~480 MiB with nothing in flight: bodies are now
    reserved (Content-Length up front, else as they arrive) against a budget; past it, 429."""
    size = 600

    async def main() -> tuple[Sent, Sent, Sent, int, int]:
        edge = EdgeMiddleware(_echo_app, max_body_bytes=1000, body_budget_bytes=1000)
        budget = edge.body_budget
        assert budget is not None
        # The first upload stalls after 600 of its 900 bytes: it holds its whole Content-Length
        # (or, without one, the bytes it sent) in the budget.
        first = asyncio.ensure_future(
            edge(
                _scope(900 if content_length else None),
                _stalled_after(b"x" * size),
                Sent(),
            )
        )
        await asyncio.sleep(0.01)
        held = budget.used
        refused = Sent()
        # Refused, its body is still read to the end and dropped (a client that is still
        # sending when the connection closes would see a reset, not the 429).
        chunks = _chunks([b"y" * 200] * 3)
        await edge(_scope(size if content_length else None), chunks, refused)
        drained = chunks.left == 0
        small = Sent()  # a body that fits next to it is served
        await edge(_scope(100), _whole(b"z" * 100), small)
        first.cancel()  # the stalled client's connection ends (its task is cancelled)
        with pytest.raises(asyncio.CancelledError):
            await first
        alone = Sent()  # with nothing buffered, the largest allowed body fits
        await edge(_scope(1000), _whole(b"w" * 1000), alone)
        assert drained
        return refused, small, alone, held, budget.used

    before = _rejected("/sentiment", "body_memory")
    refused, small, alone, held, after = asyncio.run(main())
    assert held == (900 if content_length else size)
    assert refused.status == 429
    headers = dict(refused[0]["headers"])
    assert headers[b"retry-after"] == b"1" and headers[b"connection"] == b"close"
    error = refused.json()["error"]
    assert error["code"] == "overloaded" and "limit of 1000 bytes" in error["message"]
    assert "SEQSERVE_MEMORY_BUDGET_MB" in error["message"]
    assert _rejected("/sentiment", "body_memory") == before + 1
    assert small.status == 200 and small[1]["body"] == b"z" * 100
    assert alone.status == 200 and alone[1]["body"] == b"w" * 1000
    assert after == 0  # every reservation released


def test_a_body_is_held_in_the_budget_until_its_request_is_done() -> None:
    """Admitted requests (waiting for a slot or for the large-body gate, or being served)
    still count: their raw bodies are in memory."""

    async def main() -> tuple[int, int]:
        inside = asyncio.Event()
        done = asyncio.Event()

        async def slow_app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            inside.set()
            await done.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        edge = EdgeMiddleware(slow_app, max_body_bytes=1000, body_budget_bytes=1000)
        assert edge.body_budget is not None
        task = asyncio.ensure_future(edge(_scope(700), _whole(b"x" * 700), Sent()))
        await inside.wait()
        during = edge.body_budget.used
        done.set()
        await task
        return during, edge.body_budget.used

    assert asyncio.run(main()) == (700, 0)


def test_the_deadline_counts_from_the_moment_the_body_is_in() -> None:
    """A small body trickled over longer than SEQSERVE_REQUEST_DEADLINE_MS got 503: the upload
    counted against the server's deadline."""

    async def main() -> tuple[float, float, float]:
        seen: dict[str, float] = {}

        async def app(scope: Any, receive: Any, send: Any) -> None:
            info = CURRENT.get()
            assert info is not None
            seen["started"] = info.started
            await _echo_app(scope, receive, send)

        calls = 0

        async def trickle() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.1)
            return {"type": "http.request", "body": b"x", "more_body": calls < 3}

        edge = EdgeMiddleware(app, max_body_bytes=1000, body_timeout_s=5)
        t0 = time.monotonic()
        await edge(_scope(3, limiter=InflightLimiter(1)), trickle, Sent())
        return t0, seen["started"], time.monotonic()

    t0, started, end = asyncio.run(main())
    assert started - t0 >= 0.3 - 0.02  # after the three 0.1 s chunks
    assert started <= end


def test_a_client_that_goes_away_mid_upload_is_dropped_unanswered() -> None:
    async def main() -> tuple[Sent, int]:
        calls = 0

        async def receive() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            if calls == 1:
                return {"type": "http.request", "body": b'{"texts": ["tr', "more_body": True}
            return {"type": "http.disconnect"}

        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise AssertionError("the app must not run on a truncated body")

        lim = InflightLimiter(1)
        edge = EdgeMiddleware(app, max_body_bytes=1000, body_budget_bytes=1000)
        sent = Sent()
        await edge(_scope(40, limiter=lim), receive, sent)
        assert lim.current == 0 and edge.body_budget is not None
        return sent, edge.body_budget.used

    before = _rejected("/sentiment", "client_gone")
    sent, used = asyncio.run(main())
    assert sent == [] and used == 0
    assert _rejected("/sentiment", "client_gone") == before + 1


# --- the large-body gate ----------------------------------------------------------------------


def _big_forecast(n: int = 60, length: int = 400) -> bytes:
    series = [
        {"id": f"s{i}", "values": [float(j % 24 + i) for j in range(length)]} for i in range(n)
    ]
    return json.dumps({"series": series, "horizon": 12}).encode()


@pytest.fixture(scope="module")
def gated(tiny_forecast_models: Path) -> Iterator[TestClient]:
    """One large body at a time (64 MB budget), a 0.5 s deadline."""
    settings = Settings(
        models_dir=tiny_forecast_models, memory_budget_mb=64, request_deadline_ms=500
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_wait_for_the_large_body_gate_counts_against_the_deadline(
    gated: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []
    real = offload._parse_and_validate

    def spy(body: bytes, field: Any) -> Any:
        parsed.append(len(body))
        return real(body, field)

    monkeypatch.setattr(offload, "_parse_and_validate", spy)
    gate = gated.app.state.large_bodies  # type: ignore[attr-defined]
    body = _big_forecast()
    assert len(body) >= offload.OFFLOAD_BODY_BYTES
    headers = {"content-type": "application/json"}
    gated.portal.call(gate.acquire)  # type: ignore[union-attr]  # a large body is being served
    with ThreadPoolExecutor(1) as pool:
        try:
            t0 = time.monotonic()
            future = pool.submit(gated.post, "/forecast", content=body, headers=headers)
            r = future.result(timeout=10)  # before: waited for the gate for ever
            took = time.monotonic() - t0
        finally:
            gated.portal.call(gate.release)  # type: ignore[union-attr]
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "deadline_exceeded"
    assert r.headers["retry-after"] == "1"
    assert 0.4 < took < 5 and parsed == []  # never parsed
    ok = gated.post("/forecast", content=body, headers=headers)
    assert ok.status_code == 200 and len(parsed) == 1


def test_a_large_body_is_parsed_inside_the_gate(
    gated: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = gated.app.state.large_bodies  # type: ignore[attr-defined]
    held: list[bool] = []
    real = offload._parse_and_validate

    def spy(body: bytes, field: Any) -> Any:
        try:
            on_loop = asyncio.get_running_loop() is not None
        except RuntimeError:  # a worker thread
            on_loop = False
        held.append(gate.locked() and not on_loop)
        return real(body, field)

    monkeypatch.setattr(offload, "_parse_and_validate", spy)
    r = gated.post(
        "/forecast", content=_big_forecast(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 200 and held == [True]
