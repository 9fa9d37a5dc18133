"""Transient transport failures: which errors to retry, with what delay, and
how to log them without flooding the log while a server is down."""

from __future__ import annotations

import logging
import random
import sqlite3
import time

from ..errors import ConveyorError, StoreUnavailable, TransportError

logger = logging.getLogger(__name__)

FIRST_RETRY_DELAY_S = 0.1
MAX_RETRY_DELAY_S = 5.0
REPEAT_LOG_INTERVAL_S = 30.0


def is_transient(exc: BaseException) -> bool:
    """Tell whether a failed call may succeed later without any change.

    Connection failures, timeouts, a store that is busy and server errors
    (5xx) are transient. Invalid requests, missing queues and rejected
    tokens are not.
    """
    if isinstance(exc, (TransportError, StoreUnavailable, OSError, sqlite3.OperationalError)):
        return True
    return isinstance(exc, ConveyorError) and exc.status >= 500


class RetryState:
    """Retry delays and rate-limited logs for one repeated operation.

    The first failure after a success is logged at WARNING, repeats at most
    once per REPEAT_LOG_INTERVAL_S with a count, and the first success after
    failures at INFO. Delays double from 0.1 s up to 5 s, and each is drawn
    between half and all of that value so that workers do not retry in step.
    """

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.failures = 0
        self._last_log_at = 0.0

    def failed(self, exc: BaseException) -> float:
        """Record a failure, log it if due, and return the delay before retrying."""
        self.failures += 1
        delay_s = min(MAX_RETRY_DELAY_S, FIRST_RETRY_DELAY_S * 2 ** min(self.failures - 1, 16))
        delay_s = random.uniform(delay_s / 2, delay_s)
        now = time.monotonic()
        if self.failures == 1:
            logger.warning(
                "%s failed; retrying in %.1f s: %s: %s",
                self.operation, delay_s, type(exc).__name__, exc,
            )
            self._last_log_at = now
        elif now - self._last_log_at >= REPEAT_LOG_INTERVAL_S:
            logger.warning(
                "%s still fails after %d attempts; retrying in %.1f s: %s: %s",
                self.operation, self.failures, delay_s, type(exc).__name__, exc,
            )
            self._last_log_at = now
        return delay_s

    def succeeded(self) -> None:
        """Record a success; log the recovery if there were failures."""
        if self.failures:
            logger.info("%s works again after %d failures", self.operation, self.failures)
            self.failures = 0
