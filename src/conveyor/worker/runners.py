"""Task runners in the worker process: a fixed pool of threads for sync
tasks, and one event loop thread for async tasks.

Each takes units: one job of a plain task, or the jobs of one batch. Both
call back into the job registry (`begin`, `complete`, `abandon`), which
alone decides whether a job may start and whose outcome counts.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import TYPE_CHECKING

from . import jobs as outcomes
from .completions import make_recorder
from .execution import ItemResult, run_async_unit, run_sync_unit
from .interrupt import CallSlot
from .jobs import Job
from .run_control import RunControl

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger(__name__)


def begin_unit(worker: Worker, unit: list[Job]) -> list[Job]:
    """Start the jobs of a unit that may run; free the slots of those that may not."""
    started = [job for job in unit if worker.jobs.begin(job)]
    for _ in range(len(unit) - len(started)):
        worker.capacity.finished()
    return started


def unit_recorder(worker: Worker, unit: list[Job]):
    """Return the completion recorder of a unit, or None if no job has an idempotency key."""
    if len(unit) == 1 and not unit[0].idempotent:
        return None  # most units: one job without an idempotency key
    receipts = [job.receipt if job.idempotent else None for job in unit]
    return make_recorder(worker.client, receipts)


def complete_unit(
    worker: Worker, unit: list[Job], results: list[ItemResult], duration_ms: float
) -> None:
    """Report each job's outcome and free its slot."""
    for job, result in zip(unit, results):
        try:
            settings = worker.settings.get(job.queue)
            outcome = outcomes.result_outcome(job, result.value, result.error, duration_ms, settings)
            worker.jobs.complete(job, outcome)
        except Exception:  # one job's report must not lose the others
            logger.exception("Runner failed to report message %s", job.message_id)
        finally:
            worker.capacity.finished()


class ThreadRunner:
    """N long-lived daemon threads that take sync units from one queue.

    Threads are created once, not per task. They are daemon threads
    because a task stuck in a C call ignores its timeout and must not keep
    the process alive at exit.
    """

    def __init__(self, worker: Worker, threads: int) -> None:
        self._worker = worker
        self._inbox: queue.SimpleQueue[list[Job] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(
                target=self._serve, args=(i,), name=f"conveyor-task-{i}", daemon=True
            )
            for i in range(threads)
        ]
        # One flag per thread, written only by that thread, so that marking a
        # call takes no lock, because storing one list item is atomic.
        self._in_call = [False] * threads

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, unit: list[Job]) -> None:
        self._inbox.put(unit)

    def busy_threads(self) -> int:
        """Return how many threads are inside a task function now."""
        return sum(self._in_call)

    def stop(self) -> None:
        """Ask every thread to exit once its current task returns."""
        for _ in self._threads:
            self._inbox.put(None)

    def _serve(self, index: int) -> None:
        """Run units from the inbox until stop(). `index` is this thread's flag in `_in_call`."""
        slot = CallSlot()
        while True:
            unit = self._inbox.get()
            if unit is None:
                return
            # The slot is set before begin(), so a timeout can always find it.
            slot.prepare(unit)
            for job in unit:
                job.executor = slot
            started = begin_unit(self._worker, unit)
            if started:
                self._run(index, slot, started)

    def _run(self, index: int, slot: CallSlot, unit: list[Job]) -> None:
        task = unit[0].task
        assert task is not None
        self._in_call[index] = True
        try:
            recorder = unit_recorder(self._worker, unit)
            results, duration_ms = run_sync_unit(task, outcomes.runs_of(unit), slot, recorder)
        except Exception as exc:  # the thread must survive a worker bug
            logger.exception("Runner failed to run task %s", task.name)
            results, duration_ms = [ItemResult(error=exc) for _ in unit], 0.0
        finally:
            self._in_call[index] = False
        complete_unit(self._worker, unit, results, duration_ms)


class AsyncRunner:
    """One event loop thread running async units, at most N at once."""

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

    def submit(self, units: list[list[Job]]) -> None:
        """Hand units to the loop with one thread-safe call."""
        self._loop.call_soon_threadsafe(self._spawn, units)

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

    def _spawn(self, units: list[list[Job]]) -> None:
        for unit in units:
            task = self._loop.create_task(self._run(unit))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _run(self, unit: list[Job]) -> None:
        worker = self._worker
        assert self._slots is not None
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:
            # Cancelled while waiting for a slot, so the unit never started.
            for job in unit:
                worker.jobs.abandon(job)
                worker.capacity.finished()
            return
        try:
            started = begin_unit(worker, unit)
            if not started:
                return
            task = started[0].task
            assert task is not None
            if not task.is_batch:
                self._cancel_on_request(started[0].control)
            recorder = unit_recorder(worker, started)
            results, duration_ms = await run_async_unit(
                task, outcomes.runs_of(started), recorder
            )
            complete_unit(worker, started, results, duration_ms)
        except Exception:  # one unit's bug must not stop the loop
            logger.exception("Async runner failed to report a unit of %d messages", len(unit))
        finally:
            for job in unit:
                job.control.set_on_cancel(None)
            self._slots.release()

    def _cancel_on_request(self, control: RunControl) -> None:
        """Make a cancel request cancel this asyncio task while it is in the task's call."""
        task = asyncio.current_task()
        assert task is not None

        def cancel_in_call() -> None:
            if control.in_call and not task.done():
                task.cancel()

        control.set_on_cancel(lambda: self._loop.call_soon_threadsafe(cancel_in_call))
