"""Dynamic batching: one queue and one inference thread per model session.

Each submitted item gets its own future. The items submitted during one turn of the event
loop are handed to the inference thread together at the end of that turn (one queue operation
and at most one wake-up per turn, not per request), where they wait in a heap, oldest request
first. The thread takes whatever is waiting, up to ``max_batch_size`` items, optionally waiting
up to ``max_wait_ms`` for more (default 0: an idle server adds no latency), runs it, and hands
all results back to the event loop in one hop; a failure is set on every waiter of that batch.

The batch size adapts to load by itself: a batch holds what arrived while the previous one
ran. Alone, a request is a batch of one (with ``inline_if``, small work runs directly on the
event loop: a sub-millisecond model costs less than the thread hop around it); under load
batches grow with the number of requests in flight, so the cost per item falls as load rises.
Batches form in the thread, so an event loop drowning in a burst does not slow the model down.
With ``max_batch_size == 1`` the batcher is a pass-through: one item per inference call. The
thread starts on first use, never at import time.

Memory is bounded by construction: with ``cost`` (an item's working memory, e.g. rows x tokens
x bytes per token) and ``max_batch_cost``, the collector stops adding items once the next one
would pass the budget and keeps it for the next batch; one item alone always runs (services
read long inputs in pieces, so an item's cost is one piece's, see ``app.services.next_word``).
Batchers given the same ``MemoryPool`` also share the budget: a batch waits in its thread until
the batches of other models running meanwhile leave room, so one process stays within one
budget whatever mix of tasks arrives. The pool serves waiting batches in arrival order (a batch
needing the whole budget is not starved by other models' overlapping batches), and a waiting
batch is dropped once all its callers have left (deadline, disconnect) or the batcher closes.

The deadline is per request, not per call: inside a request (``app.observability.CURRENT``)
every call gets what is left of ``deadline_s`` since the request started, so a request of many
steps (a completion, a text in pieces) gives up as a whole; outside one (in-process use) each
call gets the full ``deadline_s``. Work is taken oldest request first (by the request's start),
so the later steps of a multi-step request (a completion) do not queue behind newer requests:
under overload the oldest finish and the newest time out, instead of all of them timing out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

from app import metrics
from app.errors import DeadlineExceeded, InferenceError, NotReady, QueueFull
from app.observability import CURRENT, note_batch, note_time

# After a batch this long (or one costing an eighth of the budget), ``on_idle`` runs once the
# model has been idle this long: big batches free big buffers, and the allocator keeps them.
BIG_BATCH_S = 0.05
IDLE_S = 0.5

In = TypeVar("In")
Out = TypeVar("Out")
# A queued item: (its request's start, arrival number, the item, its caller's future).
_Entry = tuple[float, int, In, "asyncio.Future[Any]"]


class MemoryPool:
    """A budget shared by the batches of several batchers (threads): ``take(cost)`` blocks until
    the cost fits beside what is running; a cost larger than the whole budget runs alone.

    Takes are served first come, first served: once one waits, later ones queue behind it even
    when they would fit, so a batch needing the whole budget is not starved by the overlapping
    smaller batches of other models (the pool empties while it waits at the head). A wait checks
    ``give_up`` every ``POLL_S`` (and on ``wake``) and returns None when it says so (its callers
    left, the batcher is closing)."""

    POLL_S = 0.05

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.used = 0.0
        self._cond = threading.Condition()
        self._waiting: collections.deque[object] = collections.deque()  # FIFO of waiting takes

    def take(self, cost: float, give_up: Callable[[], bool] | None = None) -> float | None:
        """Reserve ``cost`` (capped at the budget) and return it, or None when ``give_up()``
        turned true while waiting (nothing is reserved then)."""
        cost = min(cost, self.budget)  # an oversized batch waits for an empty pool, then runs
        with self._cond:
            if not self._waiting and self.used + cost <= self.budget:
                self.used += cost
                return cost
            ticket = object()
            self._waiting.append(ticket)
            try:
                while self._waiting[0] is not ticket or self.used + cost > self.budget:
                    if give_up is not None and give_up():
                        return None
                    self._cond.wait(self.POLL_S if give_up is not None else None)
                self.used += cost
                return cost
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()  # the next in line may fit now

    def give(self, cost: float) -> None:
        with self._cond:
            self.used -= cost
            self._cond.notify_all()

    def wake(self) -> None:
        """Waiting takes check their ``give_up`` now (e.g. a batcher is closing)."""
        with self._cond:
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Takes waiting for room."""
        with self._cond:
            return len(self._waiting)


_POOLS: dict[float, MemoryPool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(budget: float) -> MemoryPool:
    """The process's pool for ``budget`` (one per budget value: every model of one settings
    object shares it)."""
    with _POOLS_LOCK:
        return _POOLS.setdefault(budget, MemoryPool(budget))


@dataclass(frozen=True)
class Limits:
    """How much work may wait on one batcher, and how long a request may wait for it."""

    max_waiting: int = 0  # items accepted and not yet answered; 0 = unbounded
    deadline_s: float = 0.0  # 0 = no deadline

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(settings.max_queue_items, settings.request_deadline_ms / 1000.0)


def remaining_s(deadline_s: float) -> float | None:
    """Seconds left for the current request (None: no deadline). Inside a request the
    deadline counts from its start, across all its steps; outside one, per call."""
    if not deadline_s:
        return None
    info = CURRENT.get()
    if info is None:
        return deadline_s
    return deadline_s - (time.monotonic() - info.started)


def deadline_exceeded(deadline_s: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"not answered within the {deadline_s:g} s deadline; the server is busy"
    )


class Batcher(Generic[In, Out]):
    def __init__(
        self,
        predict: Callable[[list[In]], list[Out]],
        name: str,
        max_batch_size: int = 32,
        max_wait_ms: float = 0.0,
        inline_if: Callable[[Sequence[In]], bool] | None = None,
        limits: Limits | None = None,
        cost: Callable[[In], float] | None = None,
        max_batch_cost: float = 0.0,
        on_idle: Callable[[], None] | None = None,
        pool: MemoryPool | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_batch_cost < 0:
            raise ValueError("max_batch_cost must be >= 0")
        self.predict = predict
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        # One inference thread per batcher. Items reach it in groups: those submitted during
        # one turn of the event loop are handed over together at its end (one queue operation
        # and at most one wake-up of the thread per turn, not per request), and wait in the
        # thread's heap, ordered by (request start, arrival). None in the inbox closes it.
        # Each item travels with the future of (output, batch seconds, batch size).
        self._inbox: queue.SimpleQueue[list[_Entry[In]] | None] = queue.SimpleQueue()
        # This loop turn's items, per event loop (in-process callers may run loops of their own).
        self._outboxes: dict[asyncio.AbstractEventLoop, list[_Entry[In]]] = {}
        self._heap: list[_Entry[In]] = []  # the inference thread's only
        self._closed = False  # the thread saw the close: it stops once its heap is empty
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self.cost = cost
        self.max_batch_cost = max_batch_cost if cost is not None else 0.0  # 0 = no budget
        self._last_cost = 0.0
        self.pool = pool if self.max_batch_cost else None
        self.on_idle = on_idle  # e.g. runtime.release_free_memory, after big batches
        self._big_batch_ran = False
        self.inline_if = inline_if
        self._busy = False  # a batch is running in the executor
        self._closing = False  # close() was called: a batch waiting for pool room gives up
        limits = limits or Limits()
        self.max_waiting = limits.max_waiting  # items accepted and not finished; 0 = unbounded
        self.deadline_s = limits.deadline_s  # per request (remaining_s); 0 = none
        self.pending = 0
        # Labelled metric children resolved once (a labels() lookup per request adds up).
        self._queue_depth = metrics.QUEUE_DEPTH.labels(name)
        self._batch_size = metrics.BATCH_SIZE.labels(name)
        self._inference_seconds = metrics.INFERENCE_SECONDS.labels(name)

    async def submit(self, item: In) -> Out:
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[In]) -> list[Out]:
        """Results in the order of ``items``; each item may land in a different batch.

        Beyond ``max_waiting`` items the call is refused at once (QueueFull, a 429); past
        ``deadline_s`` it gives up (DeadlineExceeded, a 503) and its queued items are dropped.
        A caller that is cancelled (its client went away) leaves nothing behind either.
        """
        remaining = self.remaining_s()
        if remaining is not None and remaining <= 0:
            self._deadline_passed()
        # An idle model takes any one request (a big /forecast may exceed the bound alone).
        if self._may_inline(items):
            # Give requests that arrived meanwhile one loop turn to show up; if none did, this
            # one is alone and tiny: run it on the loop (the hop to the inference thread and
            # back would cost more than the model, and no batch could have formed).
            await asyncio.sleep(0)
            if self._may_inline(items):
                t0 = time.perf_counter()
                outs = self._run_batch(list(items))
                note_time("inference", time.perf_counter() - t0)
                note_batch(len(items))
                return outs
        self.admit(len(items))
        self.pending += len(items)
        self._queue_depth.inc(len(items))
        try:
            return await self._submit(items, remaining)
        except _Expired:
            self._deadline_passed()
        finally:
            self.pending -= len(items)
            self._queue_depth.dec(len(items))

    def remaining_s(self) -> float | None:
        return remaining_s(self.deadline_s)

    def _deadline_passed(self) -> NoReturn:
        metrics.REJECTED.labels(self.name, "deadline").inc()
        raise deadline_exceeded(self.deadline_s)

    def admit(self, n: int) -> None:
        """Raise QueueFull if ``n`` more items would pass the bound. Services call it before
        their own preprocessing too, so a refused request costs no tokenizing."""
        # An idle model takes any one request (a big /forecast may exceed the bound alone).
        if self.max_waiting and self.pending and self.pending + n > self.max_waiting:
            metrics.REJECTED.labels(self.name, "queue_full").inc()
            raise QueueFull(self.name, self.max_waiting)

    def _may_inline(self, items: Sequence[In]) -> bool:
        return (
            self.inline_if is not None
            and not self._busy
            and self.pending == 0
            and self.inline_if(items)
        )

    async def _submit(self, items: Sequence[In], remaining: float | None) -> list[Out]:
        loop = asyncio.get_running_loop()
        self._ensure_worker()
        info = CURRENT.get()
        started = info.started if info is not None else time.monotonic()
        futures: list[asyncio.Future[tuple[Out, float, int]]] = []
        outbox = self._outboxes.get(loop)
        if outbox is None:  # the first items of this loop turn: hand the turn's items over
            outbox = self._outboxes[loop] = []
            loop.call_soon(self._hand_over, loop)
        for item in items:
            fut: asyncio.Future[tuple[Out, float, int]] = loop.create_future()
            outbox.append((started, next(self._seq), item, fut))
            futures.append(fut)
        # The deadline fails the futures themselves (a timer, not a Timeout context per call).
        timer = None if remaining is None else loop.call_later(remaining, _expire, futures)
        t0 = time.perf_counter()
        try:
            done = [await futures[0]] if len(futures) == 1 else await asyncio.gather(*futures)
        finally:  # cancelled or timed out: mark the items so the worker skips them
            if timer is not None:
                timer.cancel()
            for fut in futures:
                if not fut.cancel() and not fut.cancelled():
                    fut.exception()  # an _Expired nobody awaited is not "never retrieved"
        batches = {(seconds, size) for _, seconds, size in done}  # the batches this request hit
        inference = sum(seconds for seconds, _ in batches)
        note_time("queue", max(0.0, time.perf_counter() - t0 - inference))
        note_time("inference", inference)
        for _, size in batches:
            note_batch(size)
        return [out for out, _, _ in done]

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        group = self._outboxes.pop(loop, None)
        if group:
            self._inbox.put(group)

    def _run_batch(self, items: list[In]) -> list[Out]:
        t0 = time.perf_counter()
        outs = self.predict(items)
        if len(outs) != len(items):
            raise InferenceError(
                f"{self.name}: predict returned {len(outs)} outputs for {len(items)} inputs"
            )
        self._batch_size.observe(len(items))
        self._inference_seconds.observe(time.perf_counter() - t0)
        return outs

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._closing = False
            self._closed = False
            self._thread = threading.Thread(
                target=self._work, name=f"infer-{self.name}", daemon=True
            )
            self._thread.start()

    def _collect(self) -> list[tuple[In, asyncio.Future[Any]]] | None:
        """Worker thread: the next batch (None: closed). Batches form here, in the inference
        thread, so a busy event loop never slows the collecting: oldest request first, up to
        ``max_batch_size`` items and the cost budget (the rest stays for the next batch)."""
        while True:
            if not self._heap and (self._closed or not self._receive(self._next_when_idle())):
                return None
            while self._receive_nowait():  # everything handed over meanwhile
                pass
            if self.max_wait:
                self._wait_for_more(time.monotonic() + self.max_wait)
            batch: list[tuple[In, asyncio.Future[Any]]] = []
            cost = 0.0
            while self._heap and len(batch) < self.max_batch_size:
                _, _, item, fut = self._heap[0]
                if fut.done():  # its caller left: dropped
                    heapq.heappop(self._heap)
                    continue
                more = self._cost_of(item)
                if batch and self.max_batch_cost and cost + more > self.max_batch_cost:
                    break  # first of the next batch: the budget holds
                heapq.heappop(self._heap)
                batch.append((item, fut))
                cost += more
            if batch:  # else every waiting caller had left: wait for more
                self._last_cost = cost
                return batch

    def _wait_for_more(self, deadline: float) -> None:
        """``max_wait_ms``: wait for more items until the batch is full or the time is up."""
        while len(self._heap) < self.max_batch_size and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                self._receive(self._inbox.get(timeout=remaining))
            except queue.Empty:
                return

    def _receive(self, group: list[_Entry[In]] | None) -> bool:
        """Put a handed-over group in the heap; False once the batcher is closed."""
        if group is None:
            self._closed = True
            return False
        for entry in group:
            heapq.heappush(self._heap, entry)
        return True

    def _receive_nowait(self) -> bool:
        try:
            return self._receive(self._inbox.get_nowait())
        except queue.Empty:
            return False

    def _next_when_idle(self) -> list[_Entry[In]] | None:
        """The next group handed over (None: closed); after a big batch, once the model has
        been idle for ``IDLE_S``, ``on_idle`` runs first (it gives freed memory back)."""
        if self._big_batch_ran and self.on_idle is not None:
            try:
                return self._inbox.get(timeout=IDLE_S)
            except queue.Empty:
                self._big_batch_ran = False
                with contextlib.suppress(Exception):  # best effort: never stop the worker
                    self.on_idle()
        return self._inbox.get()

    def _cost_of(self, item: In) -> float:
        return self.cost(item) if self.cost is not None and self.max_batch_cost else 0.0

    def _close_queue(self) -> None:
        self._inbox.put(None)

    def _work(self) -> None:
        while (batch := self._collect()) is not None:
            live = [(item, fut) for item, fut in batch if not fut.done()]  # callers that left
            if not live:
                continue
            self._busy = True
            taken: float | None = 0.0
            if self.pool is not None:
                taken = self._take_room(self.pool, [fut for _, fut in live])
                if taken is None:  # every caller left (deadline, disconnect) or closing
                    self._busy = False
                    if self._closing:
                        self._hand_back(live, NotReady(f"model {self.name} closed; retry"), 0.0)
                    continue
                # callers may have left while the batch waited for room
                live = [(item, fut) for item, fut in live if not fut.done()]
            t0 = time.perf_counter()
            try:
                outs: list[Out] | BaseException = (
                    self._run_batch([i for i, _ in live]) if live else []
                )
            except Exception as exc:  # every waiter of the batch learns of the failure
                outs = exc
            finally:
                self._busy = False
                if self.pool is not None and taken:
                    self.pool.give(taken)
            seconds = time.perf_counter() - t0
            if seconds >= BIG_BATCH_S or (
                self.max_batch_cost and self._last_cost >= self.max_batch_cost / 8
            ):
                self._big_batch_ran = True
            self._hand_back(live, outs, seconds)

    def _take_room(self, pool: MemoryPool, futs: list[asyncio.Future[Any]]) -> float | None:
        """The batch's share of the pool, or None once no caller waits for it any more."""
        return pool.take(self._last_cost, lambda: self._closing or all(f.done() for f in futs))

    def _hand_back(
        self,
        live: list[tuple[In, asyncio.Future[Any]]],
        outs: list[Out] | BaseException,
        seconds: float,
    ) -> None:
        """One hop back per batch and event loop (results are set on the loop's thread)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for k, (_, fut) in enumerate(live):
            value = outs if isinstance(outs, BaseException) else (outs[k], seconds, len(live))
            by_loop.setdefault(fut.get_loop(), []).append((fut, value))
        for loop, pairs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(_resolve, pairs)

    async def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._closing = True  # a batch waiting for pool room gives up at once
            if self.pool is not None:
                self.pool.wake()
            self._close_queue()
            await asyncio.to_thread(self._thread.join, 5)


class _Expired(Exception):
    """Set on a caller's futures when its deadline passes (raised as DeadlineExceeded)."""


def _expire(futures: list[asyncio.Future[Any]]) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_exception(_Expired())


def _resolve(pairs: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, value in pairs:
        if fut.done():
            continue
        if isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)
