"""Batcher: results reach the right caller, batches respect the maximum, failures reach all."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from app.batching import Batcher


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError(f"boom on {self.fail_on}")
        return [x * 10 for x in items]


@pytest.mark.parametrize("max_batch", [1, 3, 8])
def test_results_return_to_the_right_caller_under_random_interleavings(max_batch: int) -> None:
    rec = Recorder()

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher(rec, "t", max_batch_size=max_batch)
        rng = random.Random(max_batch)

        async def caller(i: int) -> None:
            await asyncio.sleep(rng.random() / 1000)
            items = list(range(i * 100, i * 100 + rng.randint(1, 5)))
            assert await batcher.submit_many(items) == [x * 10 for x in items]

        await asyncio.gather(*(caller(i) for i in range(60)))
        await batcher.close()

    asyncio.run(main())
    assert all(len(b) <= max_batch for b in rec.batches)
    assert rec.threads and all(t.startswith("infer-") for t in rec.threads)  # off the event loop
    if max_batch == 1:
        assert all(len(b) == 1 for b in rec.batches)  # pass-through
    else:
        assert max(len(b) for b in rec.batches) > 1  # batches formed under load


def test_a_failure_reaches_every_waiter_of_that_batch_and_the_worker_survives() -> None:
    rec = Recorder(fail_on=3)

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher(rec, "t", max_batch_size=16, max_wait_ms=50)
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(6)), return_exceptions=True
        )
        assert len(rec.batches) == 1  # the wait let all six gather
        assert all(isinstance(r, RuntimeError) and "boom" in str(r) for r in results)
        assert await batcher.submit(7) == 70  # next batch is served
        await batcher.close()

    asyncio.run(main())


def test_wait_time_flushes_a_partial_batch() -> None:
    rec = Recorder()

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher(rec, "t", max_batch_size=100, max_wait_ms=20)
        assert await asyncio.wait_for(batcher.submit(1), timeout=2) == 10
        await batcher.close()

    asyncio.run(main())
    assert rec.batches == [[1]]


def test_cancelled_callers_are_dropped_before_inference() -> None:
    rec = Recorder()

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher(rec, "t", max_batch_size=8, max_wait_ms=30)
        gone = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0)
        gone.cancel()
        assert await batcher.submit(2) == 20
        await batcher.close()

    asyncio.run(main())
    assert [1] not in rec.batches and all(1 not in b for b in rec.batches)


def test_wrong_output_count_is_an_inference_error() -> None:
    async def main() -> None:
        batcher: Batcher[int, int] = Batcher(lambda xs: [], "t", max_batch_size=4)
        with pytest.raises(Exception, match="0 outputs for 1 inputs"):
            await batcher.submit(1)
        await batcher.close()

    asyncio.run(main())


def test_requests_of_one_loop_turn_reach_the_thread_together() -> None:
    # The items submitted during one turn of the event loop are handed over at its end: the
    # thread cannot start a batch with the first of them and leave the rest for later.
    rec = Recorder()

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher(rec, "t", max_batch_size=32)
        assert await asyncio.gather(*(batcher.submit(i) for i in range(20))) == [
            i * 10 for i in range(20)
        ]
        await batcher.close()

    asyncio.run(main())
    assert rec.batches == [list(range(20))]


def test_oldest_request_first_across_hand_overs() -> None:
    # Items wait in the thread's heap by their request's start: a later request's items never
    # overtake an earlier one's, whichever turn handed them over.
    from app.observability import CURRENT, RequestInfo

    rec = Recorder()
    gate = threading.Event()

    def slow_first(items: list[int]) -> list[int]:
        if items == [0]:
            gate.wait(5)  # the first batch holds the thread while the others queue up
        return rec(items)

    async def main() -> None:
        batcher: Batcher[int, int] = Batcher(slow_first, "t", max_batch_size=3)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.05)

        async def request(i: int, started: float) -> int:
            CURRENT.set(RequestInfo("r", started=started))
            return await batcher.submit(i)

        # handed over in two turns, newest requests first
        late = [asyncio.ensure_future(request(i, 100.0 + i)) for i in (5, 6, 7)]
        await asyncio.sleep(0.01)
        early = [asyncio.ensure_future(request(i, 50.0 + i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(first, *late, *early)
        await batcher.close()

    asyncio.run(main())
    assert rec.batches == [[0], [1, 2, 3], [5, 6, 7]]
