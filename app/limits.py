"""Cap on requests in flight, with a short, bounded waiting room in front of it.

Past the limit, a request (its body already read) may wait, in arrival order, for a slot: at
most ``wait_s`` and behind at most ``max_waiting`` others whose bodies total at most
``max_waiting_bytes``; otherwise the edge answers 'overloaded' (429) instead of queueing without
bound. Waiting costs a future, not a loop iteration: clients that would resend at once on a 429
wait instead, so under overload the event loop serves admitted requests rather than refusals.

``BodyBudget`` bounds the bytes of request bodies one process holds (read, waiting, served).
"""

from __future__ import annotations

import asyncio
from collections import deque

from app import metrics

# Bodies of the requests in the waiting room, in total (each is at most SEQSERVE_MAX_BODY_BYTES).
MAX_WAITING_BYTES = 64_000_000


class InflightLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0
        self.waiting = 0
        self.waiting_bytes = 0
        # Futures of the waiting requests, oldest first; a waiter that gave up is left in place
        # (cancelled) and skipped by release().
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def full(self) -> bool:
        return self.current >= self.limit

    def try_acquire(self) -> bool:
        """Take a slot if one is free (event loop only, so a plain counter is race-free)."""
        if self.current >= self.limit:
            return False
        self.current += 1
        metrics.IN_FLIGHT.inc()
        return True

    def room_for(
        self, size: int, max_waiting: int, max_waiting_bytes: int = MAX_WAITING_BYTES
    ) -> bool:
        """Whether one more waiter of ``size`` body bytes fits in the waiting room."""
        return self.waiting < max_waiting and self.waiting_bytes + size <= max_waiting_bytes

    async def acquire(
        self,
        wait_s: float,
        size: int = 0,
        max_waiting: int = 0,
        max_waiting_bytes: int = MAX_WAITING_BYTES,
    ) -> bool:
        """A slot now, or within ``wait_s`` if the waiting room has space; False otherwise."""
        if self.try_acquire():
            return True
        if wait_s <= 0 or not self.room_for(size, max_waiting, max_waiting_bytes):
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.waiting += 1
        self.waiting_bytes += size
        try:
            async with asyncio.timeout(wait_s):
                await waiter
            return True
        except TimeoutError:
            self._give_up(waiter)
            return False
        except BaseException:  # cancelled while waiting (shutdown, client gone)
            self._give_up(waiter)
            raise
        finally:
            self.waiting -= 1
            self.waiting_bytes -= size

    def _give_up(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done() and not waiter.cancelled():
            self.release()  # handed a slot just as it gave up: pass it on
        waiter.cancel()

    def release(self) -> None:
        """Hand the slot to the oldest waiter still waiting, else free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands: still in flight
                return
        self.current -= 1
        metrics.IN_FLIGHT.dec()


def body_budget_bytes(memory_budget_mb: int, max_body_bytes: int) -> int:
    """Bytes of request bodies one process holds at once (read, waiting for a slot or for the
    large-body gate, being served): half of SEQSERVE_MEMORY_BUDGET_MB, the other half being the
    parsed bodies and batches; never less than one body of SEQSERVE_MAX_BODY_BYTES."""
    return max(memory_budget_mb * 1_000_000 // 2, max_body_bytes)


class BodyBudget:
    """Bytes of request bodies in memory, reserved before (``Content-Length``) or while (as the
    chunks arrive) a body is read and released when its request is done. Past ``limit`` the
    edge answers 429 instead of reading: stalled uploads cannot hold unbounded memory. A body
    on an otherwise empty budget always fits (the largest allowed request works when idle)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def try_reserve(self, n: int) -> bool:
        """Reserve ``n`` more bytes (event loop only, so a plain counter is race-free)."""
        if n > 0 and self.used and self.used + n > self.limit:
            return False
        self.used += n
        return True

    def release(self, n: int) -> None:
        self.used -= n
