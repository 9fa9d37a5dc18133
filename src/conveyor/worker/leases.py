"""The lease keeper: extends leases in batches, fails and interrupts sync
tasks that run past their timeout, sends running tasks' progress, and
refreshes queue settings.

A lease is extended when 40% of it has passed, so a touch has more than
half the visibility timeout to arrive before the lease would end, and at
least every CANCEL_CHECK_INTERVAL_S, because each touch result reports
whether someone asked to cancel the message. Touches that come due within
the next tick go in the same batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING

from ..validation import MAX_ENTRY_BATCH
from .jobs import Job
from .transient import RetryState, is_transient

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger(__name__)

TOUCH_AT_FRACTION = 0.4
MIN_TICK_S = 0.02
MAX_TICK_S = 0.5
TIMEOUT_TICK_S = 0.1
# A worker learns of a cancel request for a message it has leased within
# about this long (plus a tick and a round trip). Each message leased for
# longer costs one touch entry, a store write, this often.
CANCEL_CHECK_INTERVAL_S = 1.0


def touch_at(lease_start: float, visibility_timeout_s: float) -> float:
    """Return when a lease that started at lease_start should be extended."""
    return lease_start + min(visibility_timeout_s * TOUCH_AT_FRACTION, CANCEL_CHECK_INTERVAL_S)


class LeaseKeeper:
    """A thread that touches held messages and enforces sync task timeouts."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._stop = threading.Event()
        self._retry = RetryState("Extending leases")
        self._next_touch_at = 0.0
        self._thread = threading.Thread(target=self._run, name="conveyor-leases", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def _tick_s(self) -> float:
        tick_s = self._worker.settings.min_visibility_timeout_s() / 10
        if self._worker.has_timeouts:
            tick_s = min(tick_s, TIMEOUT_TICK_S)
        return min(MAX_TICK_S, max(MIN_TICK_S, tick_s))

    def _run(self) -> None:
        while not self._stop.wait(self._tick_s()):
            try:
                for job in self._worker.jobs.expire_overdue():
                    self._worker.interrupt(job)
                self._touch_due_leases()
                self._send_progress()
                self._worker.settings.refresh_if_due()
            except Exception:  # the keeper must outlive a bug
                logger.exception("Lease keeper failed; it continues at the next tick")

    def _touch_due_leases(self) -> None:
        now = time.monotonic()
        if now < self._next_touch_at:
            return
        due = self._worker.jobs.leases_due(now + self._tick_s())
        by_queue: dict[str, list[Job]] = defaultdict(list)
        for job in due:
            by_queue[job.queue].append(job)
        for queue, jobs in by_queue.items():
            for start in range(0, len(jobs), MAX_ENTRY_BATCH):
                if not self._touch(queue, jobs[start : start + MAX_ENTRY_BATCH]):
                    return

    def _touch(self, queue: str, jobs: list[Job]) -> bool:
        """Extend the leases of jobs of one queue; return False after a transient failure."""
        worker = self._worker
        visibility_timeout_s = worker.settings.get(queue).visibility_timeout_s
        entries = [
            {"id": job.message_id, "receipt": job.receipt,
             "visibility_timeout_s": visibility_timeout_s}
            for job in jobs
        ]
        sent_at = time.monotonic()
        try:
            results = worker.client.touch(queue, entries)
        except Exception as exc:  # noqa: BLE001 - classified just below
            if not is_transient(exc):
                logger.error("Extending %d leases on queue %s failed: %s", len(jobs), queue, exc)
            self._next_touch_at = sent_at + self._retry.failed(exc)
            return False
        self._retry.succeeded()
        for job, result in zip(jobs, results):
            if result.ok:
                job.lease_until = sent_at + visibility_timeout_s
                job.touch_at = touch_at(sent_at, visibility_timeout_s)
                if result.cancel_requested:
                    worker.cancel_job(job)
            else:
                worker.jobs.lease_lost(job, f"{result.error}: {result.detail}")
        return True

    def _send_progress(self) -> None:
        """Send the new progress of running tasks, at most once a second per task.

        A failure is only logged: the last progress goes with the outcome.
        """
        due = self._worker.jobs.progress_due(time.monotonic())
        by_queue: dict[str, list[tuple[Job, tuple[float, str | None]]]] = defaultdict(list)
        for job, progress in due:
            by_queue[job.queue].append((job, progress))
        for queue, items in by_queue.items():
            for start in range(0, len(items), MAX_ENTRY_BATCH):
                self._send_progress_batch(queue, items[start : start + MAX_ENTRY_BATCH])

    def _send_progress_batch(
        self, queue: str, items: list[tuple[Job, tuple[float, str | None]]]
    ) -> None:
        entries = [
            {"id": job.message_id, "receipt": job.receipt, "progress": fraction,
             "progress_text": text}
            for job, (fraction, text) in items
        ]
        try:
            results = self._worker.client.progress(queue, entries)
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            logger.warning(
                "Sending the progress of %d tasks on queue %s failed: %s: %s",
                len(items), queue, type(exc).__name__, exc,
            )
            return
        for (job, _progress), result in zip(items, results):
            if result.ok and result.cancel_requested:
                self._worker.cancel_job(job)
