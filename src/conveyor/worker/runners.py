"""Task runners: a fixed pool of threads for sync tasks, and one event loop
thread for async tasks.

Both call back into the job registry (`begin`, `complete`, `abandon`), which
alone decides whether a job may start and whose outcome counts.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import TYPE_CHECKING

from .jobs import Job, run_async, run_sync

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger(__name__)


class ThreadRunner:
    """N long-lived daemon threads that take sync jobs from one queue.

    Threads are created once, not per task. They are daemon threads
    because a task that overran its timeout cannot be stopped and must not
    keep the process alive at exit.
    """

    def __init__(self, worker: Worker, threads: int) -> None:
        self._worker = worker
        self._inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, name=f"conveyor-task-{i}", daemon=True)
            for i in range(threads)
        ]
        self._busy = 0
        self._busy_lock = threading.Lock()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        self._inbox.put(job)

    def busy_threads(self) -> int:
        """Return how many threads are inside a task function now."""
        return self._busy

    def stop(self) -> None:
        """Ask every thread to exit once its current task returns."""
        for _ in self._threads:
            self._inbox.put(None)

    def _serve(self) -> None:
        worker = self._worker
        while True:
            job = self._inbox.get()
            if job is None:
                return
            if not worker.jobs.begin(job):
                worker.capacity.finished()
                continue
            self._set_busy(1)
            try:
                outcome = run_sync(job, worker.settings.get(job.queue))
                worker.jobs.complete(job, outcome)
            except Exception:  # the thread must survive a worker bug
                logger.exception("Runner failed to report message %s", job.message_id)
            finally:
                self._set_busy(-1)
                worker.capacity.finished()

    def _set_busy(self, change: int) -> None:
        with self._busy_lock:
            self._busy += change


class AsyncRunner:
    """One event loop thread running async tasks, at most N at once."""

    def __init__(self, worker: Worker, concurrency: int) -> None:
        self._worker = worker
        self._concurrency = concurrency
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name="conveyor-async-tasks", daemon=True
        )
        self._tasks: set[asyncio.Task] = set()
        self._started = threading.Event()
        self._slots: asyncio.Semaphore | None = None

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def submit(self, jobs: list[Job]) -> None:
        """Hand a batch of jobs to the loop with one thread-safe call."""
        self._loop.call_soon_threadsafe(self._spawn, jobs)

    def cancel_all(self) -> None:
        """Cancel every task coroutine; their outcomes are discarded by then."""
        self._loop.call_soon_threadsafe(self._cancel_all)

    def stop(self, timeout_s: float) -> None:
        if self._loop.is_closed() or not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._slots = asyncio.Semaphore(self._concurrency)
        self._loop.call_soon(self._started.set)
        try:
            self._loop.run_forever()
        finally:
            self._cancel_all()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    def _spawn(self, jobs: list[Job]) -> None:
        for job in jobs:
            task = self._loop.create_task(self._run(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _run(self, job: Job) -> None:
        worker = self._worker
        assert self._slots is not None
        began = False
        try:
            async with self._slots:
                began = True
                if not worker.jobs.begin(job):
                    return
                outcome = await run_async(job, worker.settings.get(job.queue))
                worker.jobs.complete(job, outcome)
        except asyncio.CancelledError:
            if not began:
                # Cancelled while waiting for a slot, so the job never started.
                worker.jobs.abandon(job)
        except Exception:  # one job's bug must not stop the loop
            logger.exception("Async runner failed to report message %s", job.message_id)
        finally:
            worker.capacity.finished()
