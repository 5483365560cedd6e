"""Cap on requests in flight: the edge answers 'overloaded' (429) at once instead of queueing
without bound."""

from __future__ import annotations

from app import metrics


class InflightLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0

    def try_acquire(self) -> bool:
        """Take a slot if one is free (event loop only, so a plain counter is race-free)."""
        if self.current >= self.limit:
            return False
        self.current += 1
        metrics.IN_FLIGHT.inc()
        return True

    def release(self) -> None:
        self.current -= 1
        metrics.IN_FLIGHT.dec()
