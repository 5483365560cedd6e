"""Overload: bounded waiting work per model (429 + Retry-After), deadlines (503), with a slow model."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.batching import Batcher, Limits
from app.errors import DeadlineExceeded, QueueFull
from app.main import create_app
from app.services.sentiment import SentimentModel
from app.settings import Settings


class Slow:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.seen: list[int] = []

    def __call__(self, items: list[int]) -> list[int]:
        time.sleep(self.seconds)
        self.seen.extend(items)
        return list(items)


def test_work_beyond_the_bound_is_refused_at_once() -> None:
    async def main() -> None:
        b: Batcher[int, int] = Batcher(Slow(0.05), "slow", 4, limits=Limits(max_waiting=8))
        first = asyncio.ensure_future(b.submit_many(list(range(6))))
        await asyncio.sleep(0)
        assert b.pending == 6
        t0 = time.perf_counter()
        with pytest.raises(QueueFull, match="8 items waiting"):
            await b.submit_many([10, 11, 12])
        assert time.perf_counter() - t0 < 0.01  # refused without waiting
        assert await b.submit_many([20, 21]) == [20, 21]  # 6 + 2 fits
        assert await first == list(range(6))
        assert b.pending == 0
        await b.close()

    asyncio.run(main())


def test_an_idle_model_takes_one_request_larger_than_the_bound() -> None:
    async def main() -> None:
        b: Batcher[int, int] = Batcher(Slow(0.0), "big", 64, limits=Limits(max_waiting=8))
        assert await b.submit_many(list(range(50))) == list(range(50))
        await b.close()

    asyncio.run(main())


def test_deadline_gives_up_and_drops_the_queued_items() -> None:
    slow = Slow(0.2)

    async def main() -> None:
        b: Batcher[int, int] = Batcher(slow, "dl", 1 + 1, limits=Limits(deadline_s=0.05))
        blocker = asyncio.ensure_future(b.submit_many([1, 2]))  # occupies the worker 0.2 s
        await asyncio.sleep(0.01)
        with pytest.raises(DeadlineExceeded, match="0.05 s deadline"):
            await b.submit_many([3, 4])
        with pytest.raises(DeadlineExceeded):
            await blocker
        await asyncio.sleep(0.5)
        assert b.pending == 0
        await b.close()

    asyncio.run(main())
    assert 3 not in slow.seen and 4 not in slow.seen  # never computed for a caller that left


def test_burst_far_beyond_capacity_gets_200_or_429_never_5xx(
    tiny_sentiment_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = SentimentModel._predict

    def slow_predict(self: SentimentModel, seqs: list) -> list:
        time.sleep(0.02)  # a deliberately slow model: ~50 batches/s
        return real(self, seqs)

    monkeypatch.setattr(SentimentModel, "_predict", slow_predict)
    settings = Settings(
        models_dir=tiny_sentiment_models, max_queue_items=16, inline_tokens=0, max_batch_size=8
    )
    statuses: list[int] = []
    latencies: list[float] = []
    lock = threading.Lock()
    with TestClient(create_app(settings)) as c:

        def one(i: int) -> None:
            t0 = time.perf_counter()
            r = c.post("/sentiment", json={"texts": ["good film", "bad", "fine"]})
            with lock:
                statuses.append(r.status_code)
                if r.status_code == 429:
                    assert r.headers["retry-after"] == "1"
                    assert r.json()["error"]["code"] == "overloaded"
                else:
                    latencies.append(time.perf_counter() - t0)

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(one, range(200)))
    assert set(statuses) <= {200, 429}
    assert statuses.count(429) > 0 and statuses.count(200) > 0
    # Admitted requests wait for at most ~16 queued items = 2 batches of 8 behind them.
    assert sorted(latencies)[int(0.99 * len(latencies)) - 1] < 2.0
