"""Rate-limited logging of schedules whose ticks fail to post.

A schedule whose queue was deleted fails at every tick, and a 1-second
schedule would log a WARNING each second. This log writes a WARNING when a
schedule's error starts or changes, then at most once per REPEAT_S while
it stays the same, with the count of failed ticks meanwhile, and an INFO
when the schedule posts again. The state lives in this process: each
server rate-limits its own log.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from ..schedule_times import to_iso

logger = logging.getLogger("conveyor.store.schedules")

# A failure that repeats unchanged is logged at most this often, in seconds.
REPEAT_S = 300.0


@dataclass
class _Failure:
    error: str
    logged_at: float
    unlogged: int = 0


class PostErrorLog:
    """Remembers, per schedule, the last post error logged and when."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, _Failure] = {}

    def failed(
        self, schedule: str, queue: str, tick_at: float, error: str, now: float
    ) -> None:
        """Log a failed post unless the same error was logged less than REPEAT_S ago.

        `now` is the engine's clock in Unix seconds.
        """
        with self._lock:
            failure = self._failures.get(schedule)
            if failure is not None and failure.error == error and (
                now - failure.logged_at < REPEAT_S
            ):
                failure.unlogged += 1
                logger.debug("Schedule %s could not post its tick %s: %s",
                             schedule, to_iso(tick_at), error)
                return
            repeated = 0 if failure is None or failure.error != error else failure.unlogged
            self._failures[schedule] = _Failure(error, now)
        logger.warning(
            "Schedule %s could not post its tick %s to queue %s: %s%s",
            schedule, to_iso(tick_at), queue, error,
            _repeats(repeated),
        )

    def posted(self, schedule: str) -> None:
        """Note that a schedule posted again; log it if it was failing."""
        with self._lock:
            failure = self._failures.pop(schedule, None)
        if failure is not None:
            logger.info("Schedule %s posts again after the error: %s", schedule, failure.error)


def _repeats(count: int) -> str:
    if count == 0:
        return ""
    ticks = "tick" if count == 1 else "ticks"
    return f" ({count} more failed {ticks} since the last report)"


POST_ERRORS = PostErrorLog()
