"""The job registry: every job the worker holds, and its state moves.

A job moves QUEUED -> RUNNING -> DONE, or QUEUED -> DONE when it is
released before it starts. Each move happens under the registry's lock, so
exactly one of the runner, the timeout check and the shutdown settles a
job and hands its outcome to the reporter. A job stays registered, and its
lease keeps being extended, until the reporter has delivered its outcome.
"""

from __future__ import annotations

import logging
import threading
import time

from . import jobs as outcomes
from .capacity import Capacity
from .jobs import DONE, QUEUED, RUNNING, Job
from .queue_settings import QueueSettingsCache
from .reporter import Reporter

logger = logging.getLogger(__name__)


class JobRegistry:
    """The held jobs by receipt, and the running sync jobs that have a timeout."""

    def __init__(
        self,
        capacity: Capacity,
        reporter: Reporter,
        settings: QueueSettingsCache,
        stopping: threading.Event,
    ) -> None:
        self._capacity = capacity
        self._reporter = reporter
        self._settings = settings
        self._stopping = stopping
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._timed: dict[str, Job] = {}

    def register(self, jobs: list[Job]) -> bool:
        """Add newly leased jobs; return True if the worker is stopping.

        Jobs without a task, jobs whose completion an earlier attempt
        recorded, and every job once the worker is stopping, are marked
        DONE at once, because they must not run.
        """
        with self._lock:
            stopping = self._stopping.is_set()
            for job in jobs:
                self._jobs[job.receipt] = job
                if stopping or job.task is None or job.completed:
                    job.state = DONE
        return stopping

    def begin(self, job: Job) -> bool:
        """Move a waiting job to RUNNING; return False if it must not run.

        A runner calls this when it takes a job. After a stop the job is
        released instead of started. A job whose lease lapsed while it
        waited (touches failed while the server was down) is dropped: the
        queue may already have given the message to another worker.
        """
        self._capacity.started()
        with self._lock:
            if job.state != QUEUED:
                return False
            lapsed = job.lease_until <= time.monotonic()
            if not lapsed and not self._stopping.is_set():
                self._start(job)
                return True
            job.state = DONE
            if lapsed:
                self._jobs.pop(job.receipt, None)

        if lapsed:
            logger.info(
                "Skipped task %s %s: its lease ended before it could start, so the "
                "queue will deliver it again",
                job.task_name, job.message_id,
            )
        else:
            self._reporter.add(outcomes.release(job))
        return False

    def _start(self, job: Job) -> None:
        job.state = RUNNING
        job.started_at = time.monotonic()
        task = job.task
        if task is not None and task.timeout_s is not None and not task.is_async:
            job.deadline = job.started_at + task.timeout_s
            self._timed[job.receipt] = job

    def abandon(self, job: Job) -> None:
        """Release a job whose runner gave it up before starting it."""
        self._capacity.started()
        with self._lock:
            if job.state != QUEUED:
                return
            job.state = DONE
        self._reporter.add(outcomes.release(job))

    def settle(self, job: Job, outcome: outcomes.Outcome) -> bool:
        """Report outcome for a running job; return False if it was settled already."""
        with self._lock:
            if job.state != RUNNING:
                return False
            job.state = DONE
            self._timed.pop(job.receipt, None)
        self._reporter.add(outcome)
        return True

    def complete(self, job: Job, outcome: outcomes.Outcome) -> None:
        """Report a finished run, unless a timeout or the shutdown already settled it."""
        if self.settle(job, outcome):
            return
        logger.info(
            "Task %s %s returned after its outcome was settled (timeout, lost "
            "lease or shutdown); this run's result is discarded",
            job.task_name, job.message_id,
        )

    def expire_overdue(self) -> list[Job]:
        """Fail the sync jobs that ran past their timeout_s and return them.

        The caller interrupts their calls. A call stuck in C code runs on
        until it returns, or until a hard timeout kills its child process,
        and whatever it returns is discarded.
        """
        if not self._timed:
            return []
        now = time.monotonic()
        with self._lock:
            overdue = [job for job in self._timed.values() if job.deadline and job.deadline <= now]
            for job in overdue:
                job.state = DONE
                del self._timed[job.receipt]
        for job in overdue:
            assert job.task is not None
            elapsed_ms = (now - job.started_at) * 1000.0
            error = outcomes.timeout_error(job.task)
            self._reporter.add(outcomes.failure(job, error, elapsed_ms, self._settings.get(job.queue)))
        return overdue

    def cancel_queued(self, job: Job) -> bool:
        """Finish a job that has not started as cancelled; return False if it started."""
        with self._lock:
            if job.state != QUEUED:
                return False
            job.state = DONE
        self._reporter.add(outcomes.cancelled(job, 0.0))
        return True

    def progress_due(self, now: float) -> list[tuple[Job, tuple[float, str | None]]]:
        """Return the running jobs whose new progress is due to be sent, with that progress."""
        with self._lock:
            running = [job for job in self._jobs.values() if job.state == RUNNING]
        due = []
        for job in running:
            progress = job.control.take_progress(now)
            if progress is not None:
                due.append((job, progress))
        return due

    def leases_due(self, horizon: float) -> list[Job]:
        """Return the held jobs whose lease should be extended by `horizon`."""
        with self._lock:
            return [job for job in self._jobs.values() if job.touch_at <= horizon]

    def lease_lost(self, job: Job, reason: str) -> None:
        """Stop tracking a job whose lease the queue service no longer accepts."""
        with self._lock:
            if self._jobs.pop(job.receipt, None) is None:
                return
            previous_state = job.state
            job.state = DONE
            self._timed.pop(job.receipt, None)
        if previous_state == DONE:
            # Its ack or nack is on the way and will report the stale receipt.
            return
        logger.warning(
            "Lost the lease of message %s (task %s) on queue %s: %s; another "
            "worker may run it, and this worker will not report its outcome",
            job.message_id, job.task_name, job.queue, reason,
        )

    def forget(self, job: Job) -> None:
        """Stop extending a job's lease once its outcome was delivered."""
        with self._lock:
            self._jobs.pop(job.receipt, None)

    def release(self, state: str) -> int:
        """Release every job in `state` for redelivery; return how many."""
        with self._lock:
            chosen = [job for job in self._jobs.values() if job.state == state]
            for job in chosen:
                job.state = DONE
                self._timed.pop(job.receipt, None)
        for job in chosen:
            self._reporter.add(outcomes.release(job))
        return len(chosen)

    def count(self, state: str) -> int:
        with self._lock:
            return sum(1 for job in self._jobs.values() if job.state == state)
