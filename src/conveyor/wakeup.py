"""Wake-ups for long polls: waiters per queue, woken after a commit.

Process memory holds only these wake-ups; whether a message can be reserved
is always decided by the store.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from typing import Iterable


class ThreadWaiter:
    """A waiter for a blocking caller."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout_s: float) -> bool:
        """Wait for a wake-up; return whether one came before the timeout."""
        woken = self._event.wait(timeout_s)
        self._event.clear()
        return woken


class AsyncWaiter:
    """A waiter for a coroutine on one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout_s: float) -> bool:
        """Wait for a wake-up; return whether one came before the timeout."""
        woken = True
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except asyncio.TimeoutError:
            woken = False
        self._event.clear()
        return woken


class Notifier:
    """Registry of waiters by queue name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set] = defaultdict(set)

    def register(self, queue: str, waiter: ThreadWaiter | AsyncWaiter) -> None:
        with self._lock:
            self._waiters[queue].add(waiter)

    def unregister(self, queue: str, waiter: ThreadWaiter | AsyncWaiter) -> None:
        with self._lock:
            waiters = self._waiters.get(queue)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[queue]

    def notify(self, queues: Iterable[str]) -> None:
        """Wake every waiter of the named queues."""
        with self._lock:
            woken = [w for q in queues for w in self._waiters.get(q, ())]
        for waiter in woken:
            waiter.wake()
