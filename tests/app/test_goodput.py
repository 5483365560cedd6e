"""Goodput under overload: the bounded waiting room in front of the in-flight limit, refusals
before the body is read, slots taken only once the body is in, and large bodies parsed and
validated off the event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.api import offload
from app.api.middleware import EdgeMiddleware
from app.limits import InflightLimiter
from app.main import create_app
from app.settings import Settings

# --- the waiting room -------------------------------------------------------------------------


def test_a_released_slot_goes_to_the_oldest_waiter() -> None:
    async def main() -> None:
        lim = InflightLimiter(1)
        assert lim.try_acquire() and lim.full
        first = asyncio.ensure_future(lim.acquire(5, max_waiting=4))
        second = asyncio.ensure_future(lim.acquire(5, max_waiting=4))
        await asyncio.sleep(0)
        assert lim.waiting == 2
        lim.release()
        assert await first and not second.done()
        assert lim.current == 1  # the slot changed hands
        lim.release()
        assert await second
        lim.release()
        assert lim.current == 0 and lim.waiting == 0

    asyncio.run(main())


def test_a_waiter_gives_up_after_its_wait_and_the_room_is_bounded() -> None:
    async def main() -> None:
        lim = InflightLimiter(1)
        lim.try_acquire()
        assert not await lim.acquire(0.05, max_waiting=4)  # waited, no slot
        assert not await lim.acquire(5, max_waiting=0)  # no room: refused at once
        assert not await lim.acquire(5, size=100, max_waiting=4, max_waiting_bytes=99)
        assert not await lim.acquire(0, max_waiting=4)  # no waiting at all
        lim.release()  # nobody waits (the one that gave up is skipped): the slot is free
        assert lim.current == 0 and lim.waiting == 0 and lim.waiting_bytes == 0

    asyncio.run(main())


def test_a_slot_handed_to_a_waiter_that_was_cancelled_is_passed_on() -> None:
    async def main() -> None:
        lim = InflightLimiter(1)
        lim.try_acquire()
        gone = asyncio.ensure_future(lim.acquire(5, max_waiting=4))
        stays = asyncio.ensure_future(lim.acquire(5, max_waiting=4))
        await asyncio.sleep(0)
        lim.release()  # handed to `gone`...
        gone.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert await stays
        lim.release()
        assert lim.current == 0

    asyncio.run(main())


# --- the edge ---------------------------------------------------------------------------------


def _scope(container: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "path": "/sentiment",
        "method": "POST",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"20")],
        "app": SimpleNamespace(state=SimpleNamespace(container=container, draining=False)),
    }


async def _never_called_app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("the app must not run")


def test_with_the_limit_and_the_waiting_room_full_429_comes_before_the_body_is_read() -> None:
    async def main() -> list[dict[str, Any]]:
        lim = InflightLimiter(1)
        lim.try_acquire()

        async def receive() -> dict[str, Any]:
            raise AssertionError("the body must not be read")

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        edge = EdgeMiddleware(
            _never_called_app, max_body_bytes=1000, admission_wait_s=1.0, max_waiting=0
        )
        await edge(_scope(SimpleNamespace(limiter=lim)), receive, send)
        return sent

    sent = asyncio.run(main())
    assert sent[0]["status"] == 429
    assert (b"retry-after", b"1") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"]["code"] == "overloaded"


def test_a_body_still_uploading_holds_no_slot_and_gets_408_at_its_deadline() -> None:
    async def main() -> tuple[list[dict[str, Any]], list[int]]:
        lim = InflightLimiter(1)
        seen: list[int] = []

        async def receive() -> dict[str, Any]:
            seen.append(lim.current)  # no slot while the body is read
            if len(seen) == 1:
                return {"type": "http.request", "body": b'{"te', "more_body": True}
            await asyncio.sleep(60)  # stalls
            raise AssertionError("unreachable")

        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        edge = EdgeMiddleware(_never_called_app, max_body_bytes=1000, body_timeout_s=0.1)
        await edge(_scope(SimpleNamespace(limiter=lim)), receive, send)
        assert lim.current == 0
        return sent, seen

    sent, seen = asyncio.run(main())
    assert seen == [0, 0]
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {
        "error": {
            "code": "request_timeout",
            "message": "the request body did not arrive within 0.1 s",
        }
    }


def test_past_the_limit_requests_wait_for_a_slot_instead_of_429(
    tiny_sentiment_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services.sentiment import SentimentModel

    real = SentimentModel._predict

    def slow_predict(self: SentimentModel, seqs: list[Any]) -> list[Any]:
        threading.Event().wait(0.02)
        return real(self, seqs)

    monkeypatch.setattr(SentimentModel, "_predict", slow_predict)
    settings = Settings(
        models_dir=tiny_sentiment_models,
        max_concurrent_requests=2,
        max_admission_wait_ms=10_000,
        inline_tokens=0,
    )
    statuses: list[int] = []
    with TestClient(create_app(settings)) as c:

        def one(_: int) -> None:
            statuses.append(c.post("/sentiment", json={"text": "good film"}).status_code)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200] * 12  # 6x the limit, all served after a short wait


# --- large bodies off the event loop ----------------------------------------------------------


@pytest.fixture(scope="module")
def fc(tiny_forecast_models: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=tiny_forecast_models))) as c:
        yield c


def _big_forecast(n: int = 60, length: int = 400) -> dict[str, Any]:
    series = [
        {"id": f"s{i}", "values": [float(j % 24 + i) for j in range(length)]} for i in range(n)
    ]
    return {"series": series, "horizon": 12}


def test_a_large_body_is_validated_in_a_worker_thread_with_the_same_answer(
    fc: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real = offload._parse_and_validate

    def spy(body: bytes, field: Any) -> Any:
        threads.append(threading.current_thread().name)
        out = real(body, field)
        assert out is not offload._NOT_DONE  # parsed and validated here
        return out

    monkeypatch.setattr(offload, "_parse_and_validate", spy)
    payload = _big_forecast()
    assert len(json.dumps(payload)) > offload.OFFLOAD_BODY_BYTES
    offloaded = fc.post("/forecast", json=payload)
    assert offloaded.status_code == 200, offloaded.text
    assert len(threads) == 1 and threads[0] != threading.main_thread().name

    monkeypatch.setattr(offload, "OFFLOAD_BODY_BYTES", 10**9)  # FastAPI's own path
    inline = fc.post("/forecast", json=payload)
    assert len(threads) == 1
    assert offloaded.json() == inline.json()


@pytest.mark.parametrize(
    "breaks",
    [
        lambda p: p["series"][7]["values"].__setitem__(3, "x"),  # an invalid item
        lambda p: p.__setitem__("horizon", -1),  # an invalid top-level field
        lambda p: p["series"][2].__setitem__("extra", 1),  # a field the item forbids
    ],
)
def test_an_invalid_large_body_gets_fastapis_own_error(
    fc: TestClient, monkeypatch: pytest.MonkeyPatch, breaks: Any
) -> None:
    payload = _big_forecast()
    breaks(payload)
    offloaded = fc.post("/forecast", json=payload)
    monkeypatch.setattr(offload, "OFFLOAD_BODY_BYTES", 10**9)
    inline = fc.post("/forecast", json=payload)
    assert offloaded.status_code == inline.status_code == 422
    assert offloaded.json() == inline.json()


@pytest.mark.parametrize(("budget_mb", "allowed"), [(64, 1), (128, 2)])
def test_large_bodies_are_worked_on_a_few_at_a_time(
    tiny_forecast_models: Path, monkeypatch: pytest.MonkeyPatch, budget_mb: int, allowed: int
) -> None:
    """One large body per 64 MB of SEQSERVE_MEMORY_BUDGET_MB is parsed and served at once; the
    others wait as bytes (and every one is answered)."""
    now = {"n": 0, "most": 0}
    lock = threading.Lock()
    real = offload._parse_and_validate

    def slow(body: bytes, field: Any) -> Any:
        with lock:
            now["n"] += 1
            now["most"] = max(now["most"], now["n"])
        threading.Event().wait(0.2)
        with lock:
            now["n"] -= 1
        return real(body, field)

    monkeypatch.setattr(offload, "_parse_and_validate", slow)
    settings = Settings(models_dir=tiny_forecast_models, memory_budget_mb=budget_mb)
    payload = json.dumps(_big_forecast()).encode()
    with TestClient(create_app(settings)) as c:
        with ThreadPoolExecutor(4) as pool:
            statuses = list(
                pool.map(
                    lambda _: (
                        c.post(
                            "/forecast",
                            content=payload,
                            headers={"content-type": "application/json"},
                        ).status_code
                    ),
                    range(4),
                )
            )
    assert statuses == [200] * 4
    assert now["most"] == allowed
