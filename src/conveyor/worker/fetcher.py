"""One fetcher thread per served queue: reserve messages over long polls.

Each fetcher claims free slots from the shared Capacity before it reserves,
so the worker never leases more messages than concurrency + prefetch. When
the worker serves several queues, a fetcher whose last poll came back empty
requests one message only, so that an idle queue's long poll does not keep
slots from a busy one. Its first message makes it request full batches again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..errors import ConveyorError
from ..validation import MAX_RESERVE_BATCH
from .transient import RetryState, is_transient

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger(__name__)

# After an error that retrying cannot fix (the queue was deleted, the token
# was revoked), the fetcher waits this long before it tries again, so a
# re-created queue is served within seconds.
PERMANENT_ERROR_PAUSE_S = 5.0
# The same permanent error is logged again after this many repeats (about a
# minute), not at every try.
PERMANENT_ERROR_LOG_EVERY = 12


class Fetcher:
    """Reserves messages of one queue and hands them to the worker."""

    def __init__(self, worker: Worker, queue: str, shares_capacity: bool) -> None:
        self._worker = worker
        self.queue = queue
        self._shares_capacity = shares_capacity
        self._busy = True
        self._retry = RetryState(f"Reserving from queue {queue}")
        self._permanent_error = ""
        self._permanent_repeats = 0
        self._thread = threading.Thread(
            target=self._run, name=f"conveyor-fetch-{queue}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        """Wait for the thread to end; return whether it did."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        worker = self._worker
        while not worker.stopping.is_set():
            max_batch = MAX_RESERVE_BATCH if self._busy or not self._shares_capacity else 1
            requested = worker.capacity.request(max_batch)
            if requested == 0:
                return
            try:
                self._reserve(requested)
            except Exception:  # the fetcher must outlive a bug
                logger.exception("Fetcher of queue %s failed", self.queue)
                worker.stopping.wait(1.0)

    def _reserve(self, requested: int) -> None:
        worker = self._worker
        visibility_timeout_s = worker.settings.get(self.queue).visibility_timeout_s
        requested_at = time.monotonic()
        try:
            messages = worker.client.reserve(
                self.queue,
                max_messages=requested,
                wait_s=worker.poll_wait_s,
                visibility_timeout_s=visibility_timeout_s,
            )
        except Exception as exc:  # noqa: BLE001 - classified just below
            worker.capacity.settle(requested, 0)
            self._pause_after(exc)
            return
        self._retry.succeeded()
        self._permanent_error = ""
        self._busy = bool(messages)
        lease_started_at = estimate_lease_start(requested_at, time.monotonic(), visibility_timeout_s)
        # accept() settles the claimed slots before any job can start.
        worker.accept(messages, requested, lease_started_at, visibility_timeout_s)

    def _pause_after(self, exc: Exception) -> None:
        if is_transient(exc):
            self._worker.stopping.wait(self._retry.failed(exc))
            return
        text = f"{type(exc).__name__}: {exc}"
        if text == self._permanent_error:
            self._permanent_repeats += 1
        else:
            self._permanent_error, self._permanent_repeats = text, 0
        if self._permanent_repeats % PERMANENT_ERROR_LOG_EVERY == 0:
            logger.error(
                "Reserving from queue %s failed and retrying will not help until "
                "the cause is fixed; trying again every %.0f s (%d tries so far): %s",
                self.queue, PERMANENT_ERROR_PAUSE_S, self._permanent_repeats + 1, text,
                exc_info=not isinstance(exc, ConveyorError),
            )
        self._worker.stopping.wait(PERMANENT_ERROR_PAUSE_S)


def estimate_lease_start(requested_at: float, received_at: float, visibility_timeout_s: float) -> float:
    """Return a monotonic time no later than the moment the service leased the messages.

    A long poll leases messages when they arrive, which may be long after the
    request was sent, and then responds at once. Counting the lease from 10%
    of the visibility timeout before the response arrived is safe as long as
    the response took less than that to travel. The estimate is never earlier
    than the request.
    """
    return max(requested_at, received_at - 0.1 * visibility_timeout_s)
