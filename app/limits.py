"""Cap on requests in flight: answer 'overloaded' at once instead of queueing without bound."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app import metrics
from app.errors import Overloaded


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

    @contextmanager
    def slot(self) -> Iterator[None]:
        # Runs on the event loop only, so a plain counter is race-free.
        if self.current >= self.limit:
            raise Overloaded(self.limit)
        self.current += 1
        metrics.IN_FLIGHT.inc()
        try:
            yield
        finally:
            self.current -= 1
            metrics.IN_FLIGHT.dec()
