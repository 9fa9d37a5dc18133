"""The batcher: gathers the jobs of batch tasks into units for the runners.

Jobs of one batch task wait until batch_size of them are held, or until
batch_wait_s passed since the first one arrived, and then go to a runner
as one unit. Waiting jobs are registered, so their leases are extended.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .jobs import Job


class Batcher:
    """Waiting jobs per batch task name, and the thread that sends partial batches."""

    def __init__(self, submit: Callable[[list[Job]], None]) -> None:
        self._submit = submit
        self._cond = threading.Condition()
        self._waiting: dict[str, list[Job]] = {}
        self._due_at: dict[str, float] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="conveyor-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def add(self, jobs: list[Job]) -> None:
        """Add jobs of batch tasks; submit every batch that is full or due."""
        now = time.monotonic()
        ready: list[list[Job]] = []
        with self._cond:
            for job in jobs:
                task = job.task
                assert task is not None and task.batch_size is not None
                waiting = self._waiting.setdefault(task.name, [])
                if not waiting:
                    self._due_at[task.name] = now + task.batch_wait_s
                waiting.append(job)
                if len(waiting) >= task.batch_size:
                    ready.append(self._waiting.pop(task.name))
                    del self._due_at[task.name]
            ready.extend(self._take_due(now))
            self._cond.notify()
        for unit in ready:
            self._submit(unit)

    def close(self) -> None:
        """Stop the thread; jobs still waiting are left to the shutdown's release."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5.0)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._due_now():
                    self._cond.wait(self._wait_s())
                if self._closed:
                    return
                ready = self._take_due(time.monotonic())
            for unit in ready:
                self._submit(unit)

    def _due_now(self) -> bool:
        now = time.monotonic()
        return any(due_at <= now for due_at in self._due_at.values())

    def _wait_s(self) -> float | None:
        if not self._due_at:
            return None
        return max(0.0, min(self._due_at.values()) - time.monotonic())

    def _take_due(self, now: float) -> list[list[Job]]:
        """Remove and return the batches whose wait is over."""
        due = [name for name, due_at in self._due_at.items() if due_at <= now]
        for name in due:
            del self._due_at[name]
        return [self._waiting.pop(name) for name in due]
