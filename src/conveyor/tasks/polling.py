"""Polling for a result until a deadline, through transient errors.

`TaskHandle.result` and `WorkflowHandle.result` read a status again and
again. A server that restarts, or a store that cannot commit for a moment,
fails a read with TransportError or StoreUnavailable. Such a read is
retried with the same backoff until the deadline, and when the deadline
passes while reads still fail, the last error is raised.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from ..errors import ResultTimeout, StoreUnavailable, TransportError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Errors of a server or store that is briefly away, which a later read may not repeat.
TRANSIENT_ERRORS = (TransportError, StoreUnavailable)


class ResultPoller:
    """Reads with exponential backoff until a deadline.

    `timeout_s` is the total wait in seconds (None waits without limit).
    Intervals start at `first_interval_s` and double up to `max_interval_s`.
    `label` names what is awaited in logs and errors, such as `task add 0a1b`.
    """

    def __init__(
        self, timeout_s: float | None, label: str, first_interval_s: float,
        max_interval_s: float,
    ) -> None:
        self.timeout_s = timeout_s
        self.label = label
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.interval_s = first_interval_s
        self.max_interval_s = max_interval_s
        self.failed_reads = 0

    def read(self, read: Callable[[], T]) -> T:
        """Return read(), retrying transient errors until the deadline.

        Raises the last transient error once the deadline has passed, and
        any other error at once.
        """
        while True:
            try:
                value = read()
            except TRANSIENT_ERRORS as exc:
                self._log_failed_read(exc)
                if self._remaining_s() <= 0:
                    raise
                self._sleep()
                continue
            if self.failed_reads:
                logger.info(
                    "Reading %s works again after %d failed reads", self.label, self.failed_reads
                )
                self.failed_reads = 0
            return value

    def wait(self, still: str) -> None:
        """Sleep before the next read, or raise ResultTimeout once the deadline passed.

        `still` is the state the last read found, such as `running`.
        """
        if self._remaining_s() <= 0:
            raise ResultTimeout(
                f"{self.label} is still {still} after {self.timeout_s}s; wait longer "
                "with result(timeout_s=...) or check status() later"
            )
        self._sleep()

    def _remaining_s(self) -> float:
        if self.deadline is None:
            return float("inf")
        return self.deadline - time.monotonic()

    def _sleep(self) -> None:
        time.sleep(max(0.0, min(self.interval_s, self._remaining_s())))
        self.interval_s = min(self.interval_s * 2, self.max_interval_s)

    def _log_failed_read(self, exc: Exception) -> None:
        """Log the first failed read of a run as a warning and the rest at DEBUG."""
        self.failed_reads += 1
        level = logging.WARNING if self.failed_reads == 1 else logging.DEBUG
        logger.log(
            level, "Reading %s failed (%s: %s); retrying until the deadline",
            self.label, type(exc).__name__, exc,
        )
