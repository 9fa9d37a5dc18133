"""The reporter: sends acks, nacks and releases in batches and logs each
task's end once the queue service has confirmed it.

Outcomes collect in an outbox. A flusher thread sends them when
FLUSH_BATCH are waiting or FLUSH_INTERVAL_S after the first one arrived,
grouped per queue into calls of up to 1000 entries. If the service cannot
be reached, the outcomes stay and are retried with a capped backoff until
their lease ends. After that the service counts the attempt as failed, and
sending the outcome would only fail with a stale receipt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from ..errors import QueueNotFound, Reject, TaskTimeout
from ..models import EntryResult
from ..tasks.hooks import Hooks
from ..validation import MAX_ENTRY_BATCH
from .jobs import ACK, NACK, RELEASE, Job, Outcome, RemoteTaskError
from .transient import RetryState, is_transient

logger = logging.getLogger(__name__)

FLUSH_BATCH = 100
FLUSH_INTERVAL_S = 0.005


class Reporter:
    """The outbox of finished jobs and the thread that flushes it."""

    def __init__(
        self, client: Any, on_delivered: Callable[[Job], None], hooks: Hooks | None = None
    ) -> None:
        """`on_delivered` is called with each job whose outcome the service
        confirmed or rejected, or that was given up, so its lease is no longer
        extended. `hooks` get on_retry and on_dead_letter once the service
        confirmed a nack."""
        self._client = client
        self._on_delivered = on_delivered
        self._hooks = hooks or Hooks()
        self._cond = threading.Condition()
        self._outbox: list[Outcome] = []
        self._retries: list[Outcome] = []
        self._retry_at = 0.0
        self._retry_state = RetryState("Sending acks and nacks")
        self._closing = False
        self._close_deadline = 0.0
        self._thread = threading.Thread(target=self._run, name="conveyor-reporter", daemon=True)
        self.released = 0

    def start(self) -> None:
        self._thread.start()

    def add(self, outcome: Outcome) -> None:
        with self._cond:
            self._outbox.append(outcome)
            size = len(self._outbox)
            if size == 1 or size >= FLUSH_BATCH:
                self._cond.notify()

    def close(self, timeout_s: float) -> int:
        """Flush everything, retrying for up to timeout_s; return how many were not sent."""
        with self._cond:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout_s
            self._cond.notify()
        self._thread.join(timeout_s + 5.0)
        return len(self._outbox) + len(self._retries)

    # Flusher ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._send(batch)
            except Exception:  # the flusher must outlive a bug
                logger.exception("Reporter failed to send %d outcomes", len(batch))

    def _next_batch(self) -> list[Outcome] | None:
        """Wait for outcomes to send; return None when closed with nothing left.

        Waits FLUSH_INTERVAL_S more after the first outcome so that a batch
        can grow, unless FLUSH_BATCH are waiting already.
        """
        with self._cond:
            while True:
                if self._closing and (self._close_expired() or self._empty()):
                    return None
                if self._outbox or self._retry_due():
                    break
                self._cond.wait(self._idle_wait_s())
            if not self._closing and len(self._outbox) < FLUSH_BATCH:
                self._cond.wait(FLUSH_INTERVAL_S)
            batch, self._outbox = self._outbox, []
            if self._retry_due():
                batch = self._retries + batch
                self._retries = []
            return batch

    def _empty(self) -> bool:
        return not self._outbox and not self._retries

    def _retry_due(self) -> bool:
        return bool(self._retries) and time.monotonic() >= self._retry_at

    def _idle_wait_s(self) -> float | None:
        """Return how long to sleep with nothing to send: until a retry or the close deadline."""
        wakeups = []
        if self._retries:
            wakeups.append(self._retry_at)
        if self._closing:
            wakeups.append(self._close_deadline)
        if not wakeups:
            return None
        return max(0.0, min(wakeups) - time.monotonic())

    def _close_expired(self) -> bool:
        return time.monotonic() >= self._close_deadline

    def _send(self, batch: list[Outcome]) -> None:
        groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
        for outcome in batch:
            method = "ack" if outcome.kind == ACK else "nack"
            groups[(method, outcome.job.queue)].append(outcome)
        failed: list[Outcome] = []
        error: BaseException | None = None
        for (method, queue), outcomes in groups.items():
            for start in range(0, len(outcomes), MAX_ENTRY_BATCH):
                chunk = outcomes[start : start + MAX_ENTRY_BATCH]
                retry, chunk_error = self._send_chunk(method, queue, chunk)
                failed.extend(retry)
                error = chunk_error or error
        if error is not None:
            self._schedule_retries(failed, error)

    def _send_chunk(
        self, method: str, queue: str, chunk: list[Outcome]
    ) -> tuple[list[Outcome], BaseException | None]:
        """Send one call; return the outcomes to retry after a transient failure, and its error.

        If the service rejects the whole call (one result too large, say),
        the chunk is split in halves and sent again, so that only the
        entries it rejects on their own are dropped.
        """
        call = getattr(self._client, method)
        try:
            results = call(queue, [outcome.entry for outcome in chunk])
        except Exception as exc:  # noqa: BLE001 - classified just below
            if is_transient(exc):
                return chunk, exc
            if isinstance(exc, QueueNotFound):
                self._drop_for_missing_queue(queue, chunk, exc)
                return [], None
            if len(chunk) == 1:
                self._drop(chunk[0], exc)
                return [], None
            middle = len(chunk) // 2
            first_retry, first_error = self._send_chunk(method, queue, chunk[:middle])
            second_retry, second_error = self._send_chunk(method, queue, chunk[middle:])
            return first_retry + second_retry, first_error or second_error
        self._retry_state.succeeded()
        if len(results) != len(chunk):
            logger.error(
                "The queue service returned %d results for %d %s entries on queue %s; "
                "the entries without a result count as not sent",
                len(results), len(chunk), method, queue,
            )
        for outcome, result in zip(chunk, results):
            self._settle(outcome, result)
        return [], None

    def _schedule_retries(self, failed: list[Outcome], error: BaseException) -> None:
        now = time.monotonic()
        alive = [o for o in failed if o.job.lease_until > now]
        for outcome in failed:
            if outcome.job.lease_until <= now:
                self._lease_ended(outcome)
        if not alive:
            return
        delay_s = self._retry_state.failed(error)
        with self._cond:
            self._retries = alive + self._retries
            self._retry_at = now + delay_s

    # Outcome of each entry ------------------------------------------------

    def _settle(self, outcome: Outcome, result: EntryResult) -> None:
        job = outcome.job
        self._on_delivered(job)
        if not result.ok:
            self._log_rejected_entry(outcome, result)
            return
        if outcome.kind == ACK:
            logger.info(
                "Task %s %s succeeded in %.1f ms", job.task_name, job.message_id, outcome.duration_ms
            )
        elif result.outcome == "cancelled":
            # A cancelled nack, or a retry the service turned into a cancel
            # because the cancel request arrived before the worker saw it.
            logger.info(
                "Task %s %s cancelled after %.1f ms", job.task_name, job.message_id,
                outcome.duration_ms,
            )
        elif outcome.kind == RELEASE:
            self.released += 1
            logger.debug("Message %s on queue %s released", job.message_id, job.queue)
        else:
            self._log_failure(outcome, result)
            self._fire_nack_hooks(outcome, result)

    def _fire_nack_hooks(self, outcome: Outcome, result: EntryResult) -> None:
        run = outcome.job.run
        if run is None:
            return
        if result.outcome == "dead" and self._hooks.on_dead_letter:
            self._hooks.fire("on_dead_letter", run, outcome.error)
        elif result.outcome == "retried" and self._hooks.on_retry:
            self._hooks.fire("on_retry", run, outcome.error, outcome.delay_s or 0.0)

    def _log_failure(self, outcome: Outcome, result: EntryResult) -> None:
        job = outcome.job
        # Only the last failure logs a traceback, so retries stay one line each.
        traceback = outcome.exc if _wants_traceback(outcome) else None
        # A failure in a child process brings its traceback as text.
        remote_traceback = ""
        if isinstance(outcome.exc, RemoteTaskError) and outcome.exc.traceback_text:
            remote_traceback = "\nTraceback in the worker child process:\n" + outcome.exc.traceback_text
        if result.outcome == "dead" and outcome.permanent:
            logger.warning(
                "Task %s %s rejected permanently: %s%s",
                job.task_name, job.message_id, outcome.error, remote_traceback,
                exc_info=traceback,
            )
        elif result.outcome == "dead":
            logger.warning(
                "Task %s %s dead-lettered after %d attempts: %s%s",
                job.task_name, job.message_id, job.attempt, outcome.error, remote_traceback,
                exc_info=traceback,
            )
        elif outcome.entry.get("retry_after_s"):
            logger.info(
                "Task %s %s asked to run again in %.1f s (RetryAfter); attempt %d "
                "is not counted: %s",
                job.task_name, job.message_id, outcome.entry["retry_after_s"],
                job.attempt, outcome.error,
            )
        else:
            logger.info(
                "Task %s %s failed (attempt %d of %d, retry in %.1f s): %s",
                job.task_name, job.message_id, job.attempt, job.max_attempts,
                outcome.delay_s or 0.0, outcome.error,
            )

    def _log_rejected_entry(self, outcome: Outcome, result: EntryResult) -> None:
        job = outcome.job
        logger.warning(
            "Could not %s message %s (task %s) on queue %s: %s: %s; the task may "
            "run again, because delivery is at least once",
            outcome.kind, job.message_id, job.task_name, job.queue, result.error,
            result.detail,
        )

    def _lease_ended(self, outcome: Outcome) -> None:
        job = outcome.job
        self._on_delivered(job)
        logger.warning(
            "Gave up sending the %s of message %s (task %s) on queue %s: its lease "
            "ended while the queue service was unreachable, so the message will "
            "be delivered again",
            outcome.kind, job.message_id, job.task_name, job.queue,
        )

    def _drop_for_missing_queue(
        self, queue: str, chunk: list[Outcome], exc: QueueNotFound
    ) -> None:
        """Drop a whole chunk at once: its queue, with its messages, is gone."""
        for outcome in chunk:
            self._on_delivered(outcome.job)
        logger.warning(
            "Queue %s no longer exists, so %d outcomes for it were dropped: %s",
            queue, len(chunk), exc,
        )

    def _drop(self, outcome: Outcome, exc: BaseException) -> None:
        job = outcome.job
        self._on_delivered(job)
        logger.error(
            "The queue service rejected the %s of message %s (task %s) on queue %s, "
            "so it is dropped and the message will be delivered again after its "
            "lease ends: %s: %s",
            outcome.kind, job.message_id, job.task_name, job.queue,
            type(exc).__name__, exc,
        )


def _wants_traceback(outcome: Outcome) -> bool:
    """Log a traceback for unexpected exceptions that were raised here, not for
    deliberate rejections or errors built by the worker (a dead child process)."""
    exc: Any = outcome.exc
    if exc is None or outcome.kind != NACK or exc.__traceback__ is None:
        return False
    return not isinstance(exc, (Reject, TaskTimeout))
