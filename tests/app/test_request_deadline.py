"""The deadline is per request: every step of a multi-step request shares it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.batching import Batcher, Limits
from app.container import Container
from app.errors import DeadlineExceeded
from app.observability import CURRENT, RequestInfo
from app.services.next_word import NextWordModel, NextWordService
from app.settings import Settings

STEP_S = 0.03


def slow(items: list[int]) -> list[int]:
    time.sleep(STEP_S)
    return items


def _batcher(deadline_s: float) -> Batcher[int, int]:
    return Batcher(slow, "t", max_batch_size=4, limits=Limits(0, deadline_s))


def test_steps_of_one_request_share_its_deadline() -> None:
    async def main() -> int:
        b = _batcher(0.2)
        token = CURRENT.set(RequestInfo("r1"))
        done = 0
        try:
            with pytest.raises(DeadlineExceeded, match="0.2 s deadline"):
                for i in range(50):  # 50 steps of 30 ms: far past 0.2 s
                    await b.submit(i)
                    done += 1
        finally:
            CURRENT.reset(token)
            await b.close()
        return done

    t0 = time.perf_counter()
    done = asyncio.run(main())
    assert 3 <= done <= 7  # ~0.2 s of 30 ms steps, then the 503
    assert time.perf_counter() - t0 < 1.0


def test_a_request_already_past_its_deadline_queues_nothing() -> None:
    calls: list[list[int]] = []

    async def main() -> None:
        b: Batcher[int, int] = Batcher(
            lambda xs: calls.append(xs) or xs, "t", limits=Limits(0, 0.5)
        )
        token = CURRENT.set(RequestInfo("late", started=time.monotonic() - 1.0))
        try:
            with pytest.raises(DeadlineExceeded):
                await b.submit(1)
        finally:
            CURRENT.reset(token)
        assert b.pending == 0
        await b.close()

    asyncio.run(main())
    assert calls == []


def test_without_a_request_each_call_gets_the_whole_deadline() -> None:
    async def main() -> int:  # in-process use: no request context
        b = _batcher(0.1)
        try:
            for i in range(8):  # 8 x 30 ms > 0.1 s in total, < 0.1 s each
                await b.submit(i)
        finally:
            await b.close()
        return 8

    assert CURRENT.get() is None
    assert asyncio.run(main()) == 8


def test_no_deadline_means_none_left() -> None:
    assert _batcher(0).remaining_s() is None


@pytest.fixture(scope="module")
def lm(tiny_lm_models: Path) -> Iterator[NextWordModel]:
    settings = Settings(
        models_dir=tiny_lm_models,
        state_secret="test-secret-0123456789abcdef0123456789",
        request_deadline_ms=300,
    )
    yield Container.build(settings).get(NextWordService).resolve(None)[1]


def test_a_long_completion_stops_at_the_request_deadline(lm: NextWordModel) -> None:
    run_next = lm._run_next

    def slow_next(items):  # type: ignore[no-untyped-def]
        time.sleep(0.01)
        return run_next(items)

    async def main() -> None:
        token = CURRENT.set(RequestInfo("c1"))
        try:
            await lm.predict("the game", 3, None, 10_000, 0.0, None, 0)
        finally:
            CURRENT.reset(token)

    lm.next_batcher.predict = slow_next
    t0 = time.perf_counter()
    try:
        with pytest.raises(DeadlineExceeded):
            asyncio.run(main())
    finally:
        lm.next_batcher.predict = run_next
    assert time.perf_counter() - t0 < 1.5  # 10,000 steps of 10 ms would take 100 s


def test_a_short_completion_within_the_deadline_is_answered(lm: NextWordModel) -> None:
    async def main() -> int:
        token = CURRENT.set(RequestInfo("c2"))
        try:
            res = await lm.predict("the game", 3, None, 5, 0.0, None, 0)
        finally:
            CURRENT.reset(token)
        return len(res.completion_tokens or [])

    assert asyncio.run(main()) == 5
