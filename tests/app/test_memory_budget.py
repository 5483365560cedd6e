"""Batches formed under a memory budget (item cost x rows), and replaced models released."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from pathlib import Path

import pytest

from app.batching import Batcher, MemoryPool
from app.container import Container
from app.registry import ModelRecord
from app.runtime import release_free_memory
from app.services.sentiment import SentimentService
from app.settings import Settings


class Recorder:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate

    def __call__(self, items: list[int]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(5)  # hold the first batch so the others queue up behind it
        self.batches.append(list(items))
        return [x * 10 for x in items]


def _run(items: list[int], budget: float, max_batch: int = 32) -> Recorder:
    gate = threading.Event()
    rec = Recorder(gate)

    async def main() -> None:
        b: Batcher[int, int] = Batcher(
            rec, "t", max_batch_size=max_batch, cost=float, max_batch_cost=budget
        )
        first = asyncio.ensure_future(b.submit(0))  # occupies the worker until the gate opens
        await asyncio.sleep(0.05)
        rest = asyncio.gather(*(b.submit(x) for x in items))
        await asyncio.sleep(0.05)
        gate.set()
        assert await first == 0
        assert await rest == [x * 10 for x in items]  # every caller gets its own answer
        await b.close()

    asyncio.run(main())
    return rec


def test_batches_stop_at_the_cost_budget() -> None:
    rec = _run([3, 4, 2, 5, 1, 1], budget=8)
    later = rec.batches[1:]
    assert sorted(x for b in later for x in b) == [1, 1, 2, 3, 4, 5]
    assert all(sum(b) <= 8 for b in later), later
    assert later[0] == [3, 4]  # 3 + 4 + 2 would pass 8: the 2 waits for the next batch
    assert later[1] == [2, 5, 1]


def test_an_item_over_the_budget_alone_still_runs() -> None:
    rec = _run([50, 2, 60], budget=10)
    assert rec.batches[1:] == [[50], [2], [60]]


def test_without_a_budget_the_batch_size_is_the_only_bound() -> None:
    rec = _run([50, 2, 60, 7], budget=0, max_batch=3)
    assert rec.batches[1:] == [[50, 2, 60], [7]]


def test_budget_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_batch_cost"):
        Batcher(lambda xs: xs, "t", cost=float, max_batch_cost=-1)


def test_memory_budget_setting_sizes_the_batchers(tiny_lm_models: Path) -> None:
    from app.services.next_word import NextWordService

    s = Settings(models_dir=tiny_lm_models, memory_budget_mb=64)
    m = Container.build(s).get(NextWordService).resolve(None)[1]
    assert m.score_batcher.max_batch_cost == m.next_batcher.max_batch_cost == 64_000_000
    assert m.score_batcher.on_idle is m.next_batcher.on_idle is release_free_memory
    with pytest.raises(ValueError):
        Settings(memory_budget_mb=1)


def test_a_reload_releases_the_replaced_model_and_its_sessions(
    tmp_path: Path, tiny_sentiment_models: Path
) -> None:
    import os
    import shutil

    root = tmp_path / "models"
    shutil.copytree(tiny_sentiment_models, root)
    settings = Settings(models_dir=root, reload_grace_seconds=0)

    async def main() -> tuple[weakref.ref[object], weakref.ref[object], ModelRecord]:
        c = Container.build(settings)
        service = c.get(SentimentService)
        ref, old = next(iter(service.by_ref.items()))
        old_rec = old.record
        session = weakref.ref(old_rec.sessions["model"].session)
        model = weakref.ref(old)
        del old
        onnx = next(root.glob("sentiment/*/*/model.onnx"))
        os.utime(onnx, (time.time() + 5, time.time() + 5))  # a changed fingerprint
        report = await c.reload()
        assert report["loaded"], report
        gc.disable()  # only the reload's own collection may free them
        try:
            for _ in range(50):
                await asyncio.sleep(0.02)
                if session() is None:
                    break
        finally:
            gc.enable()
        assert service.by_ref[ref].record is not old_rec  # the new version serves
        await c.close()
        return session, model, old_rec

    session, model, old_rec = asyncio.run(main())
    assert model() is None and session() is None
    assert old_rec.sessions == {}


def test_after_a_big_batch_the_idle_model_gives_memory_back() -> None:
    idle_calls: list[float] = []

    def slow(items: list[int]) -> list[int]:
        time.sleep(0.06 if items[0] else 0.0)  # item 0: a small batch; others: a big one
        return items

    async def main() -> None:
        b: Batcher[int, int] = Batcher(slow, "t", on_idle=lambda: idle_calls.append(1))
        await b.submit(0)
        await asyncio.sleep(0.7)
        assert idle_calls == []  # small batches leave the allocator alone
        await b.submit(1)
        await asyncio.sleep(0.2)
        assert idle_calls == []  # not idle long enough yet
        await asyncio.sleep(0.6)
        assert idle_calls == [1]  # once, then it waits for the next big batch
        await asyncio.sleep(0.6)
        assert idle_calls == [1]
        await b.close()

    asyncio.run(main())


def test_batchers_sharing_a_pool_never_run_past_its_budget() -> None:
    pool = MemoryPool(10)
    running: list[float] = []
    peak: list[float] = [0.0]
    lock = threading.Lock()

    def work(items: list[int]) -> list[int]:
        with lock:
            running.append(sum(items))
            peak[0] = max(peak[0], sum(running))
        time.sleep(0.02)
        with lock:
            running.remove(sum(items))
        return items

    async def main() -> None:
        a: Batcher[int, int] = Batcher(work, "a", cost=float, max_batch_cost=10, pool=pool)
        b: Batcher[int, int] = Batcher(work, "b", cost=float, max_batch_cost=10, pool=pool)
        outs = await asyncio.gather(*(x.submit(6) for x in (a, b, a, b)), b.submit(30))
        assert outs == [6, 6, 6, 6, 30]  # an item over the whole budget still runs, alone
        await a.close()
        await b.close()

    asyncio.run(main())
    assert peak[0] <= 10 or peak[0] == 30
    assert pool.used == 0


# --- the shared pool: first come, first served; a waiting batch gives up ----------------------


class PoolUser:
    """Another model's batches, in a thread: take ``cost``, hold it ``hold_s``, give it back."""

    def __init__(self, pool: MemoryPool, cost: float, hold_s: float, offset_s: float) -> None:
        self.pool, self.cost, self.hold_s, self.offset_s = pool, cost, hold_s, offset_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        time.sleep(self.offset_s)
        while not self.stop.is_set():
            taken = self.pool.take(self.cost)
            assert taken is not None
            time.sleep(self.hold_s)
            self.pool.give(taken)

    def __enter__(self) -> PoolUser:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def test_a_waiting_take_is_not_overtaken_by_later_smaller_ones() -> None:
    pool = MemoryPool(10)
    assert pool.take(4) == 4  # another model's batch is running
    order: list[str] = []

    def take(name: str, cost: float) -> None:
        taken = pool.take(cost)
        order.append(name)
        time.sleep(0.05)
        assert taken is not None
        pool.give(taken)

    big = threading.Thread(target=take, args=("big", 10))
    big.start()
    time.sleep(0.1)  # the big take is waiting
    small = threading.Thread(target=take, args=("small", 4))  # would fit beside the first
    small.start()
    time.sleep(0.2)
    assert order == []  # it queues behind the big take instead of overtaking it
    pool.give(4)
    big.join(5)
    small.join(5)
    assert order == ["big", "small"]
    assert pool.used == 0 and pool.waiting == 0


def test_a_whole_budget_batch_is_not_starved_by_other_models_overlapping_batches() -> None:
    pool = MemoryPool(10)
    ran: list[list[int]] = []

    def work(items: list[int]) -> list[int]:
        ran.append(items)
        return items

    async def main() -> None:
        b: Batcher[int, int] = Batcher(work, "big", cost=float, max_batch_cost=10, pool=pool)
        # two other models keep the pool busy with batches that always overlap: it never empties
        with PoolUser(pool, 5, 0.03, 0.0), PoolUser(pool, 5, 0.03, 0.015):
            await asyncio.sleep(0.1)
            assert await asyncio.wait_for(b.submit(10), 3) == 10
        await b.close()

    asyncio.run(main())
    assert ran == [[10]]
    assert pool.used == 0


def test_a_batch_whose_callers_left_stops_waiting_for_room_and_is_skipped() -> None:
    from app.batching import Limits
    from app.errors import DeadlineExceeded

    pool = MemoryPool(10)
    ran: list[list[int]] = []

    def work(items: list[int]) -> list[int]:
        ran.append(items)
        return items

    async def main() -> None:
        b: Batcher[int, int] = Batcher(
            work, "t", cost=float, max_batch_cost=10, pool=pool, limits=Limits(deadline_s=0.2)
        )
        held = pool.take(10)  # another model holds the whole budget
        with pytest.raises(DeadlineExceeded):
            await b.submit(8)  # 503 at the deadline ...
        for _ in range(100):  # ... and the inference thread stops waiting too
            if not pool.waiting:
                break
            await asyncio.sleep(0.01)
        assert pool.waiting == 0
        assert held is not None
        pool.give(held)
        assert await b.submit(3) == 3  # the thread serves the next request
        t0 = time.monotonic()
        await b.close()
        assert time.monotonic() - t0 < 1

    asyncio.run(main())
    assert ran == [[3]]  # the abandoned batch never ran
    assert pool.used == 0


def test_closing_a_batcher_waiting_for_room_does_not_wait_for_the_pool() -> None:
    from app.errors import NotReady

    pool = MemoryPool(10)

    async def main() -> None:
        b: Batcher[int, int] = Batcher(lambda xs: xs, "t", cost=float, max_batch_cost=10, pool=pool)
        held = pool.take(10)
        call = asyncio.ensure_future(b.submit(5))  # no deadline: it would wait forever
        for _ in range(100):
            if pool.waiting:
                break
            await asyncio.sleep(0.01)
        assert pool.waiting == 1
        t0 = time.monotonic()
        await b.close()
        assert time.monotonic() - t0 < 1  # not the 5 s join
        with pytest.raises(NotReady):  # its caller hears of it (a 503), it does not hang
            await asyncio.wait_for(call, 1)
        assert pool.waiting == 0
        assert held is not None
        pool.give(held)

    asyncio.run(main())
    assert pool.used == 0
