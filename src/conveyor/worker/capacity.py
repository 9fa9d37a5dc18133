"""Capacity: the number of messages the worker may reserve now.

The worker keeps at most `limit` = concurrency + prefetch unfinished
messages. Reserve requests in flight count against the limit too, so
several queue fetchers never lease more than the limit between them.

To avoid one reserve request per finished task, a fetcher waits until a
refill batch of slots is free, unless no message is waiting to start: then
any free slot is worth filling at once.
"""

from __future__ import annotations

import threading

from ..validation import MAX_RESERVE_BATCH


class Capacity:
    """Counts of unfinished, waiting and requested messages, under one condition."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.refill_batch = max(1, min(MAX_RESERVE_BATCH, limit // 2))
        self._cond = threading.Condition()
        self._unfinished = 0
        self._waiting = 0
        self._requested = 0
        self._blocked_fetchers = 0
        self._closed = False

    def request(self, max_batch: int) -> int:
        """Wait until slots may be filled, claim up to max_batch and return how many.

        Returns 0 once close() was called. The caller must call settle()
        with the claimed count after its reserve request ends.
        """
        with self._cond:
            while not self._closed and not self._may_fill():
                self._blocked_fetchers += 1
                try:
                    self._cond.wait()
                finally:
                    self._blocked_fetchers -= 1
            if self._closed:
                return 0
            count = min(max_batch, MAX_RESERVE_BATCH, self._free())
            self._requested += count
            return count

    def settle(self, requested: int, dispatched: int) -> None:
        """Record that a reserve of `requested` slots ended with `dispatched` jobs waiting."""
        with self._cond:
            self._requested -= requested
            self._unfinished += dispatched
            self._waiting += dispatched
            if requested > dispatched:
                self._wake()

    def started(self) -> None:
        """Record that a runner took a waiting job (to run or to skip)."""
        with self._cond:
            self._waiting -= 1
            if self._waiting == 0:
                self._wake()

    def finished(self) -> None:
        """Record that a job no longer occupies a slot."""
        with self._cond:
            self._unfinished -= 1
            if self._free() >= self.refill_batch:
                self._wake()

    def close(self) -> None:
        """Make every request() return 0, now and later."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _free(self) -> int:
        return self.limit - self._unfinished - self._requested

    def _may_fill(self) -> bool:
        free = self._free()
        return free > 0 and (self._waiting == 0 or free >= self.refill_batch)

    def _wake(self) -> None:
        if self._blocked_fetchers:
            self._cond.notify_all()
