"""The background loop that fires a store's due schedules in a server process.

Every `conveyor server` runs one. Each step fires every due schedule, one
transaction per schedule (store/schedules.py), then sleeps until the
earliest next tick of any schedule. It also wakes when this process
creates, changes or resumes a schedule, and at least every RECHECK_S, so
it finds schedules that other servers of the store changed. Servers that
share a store all run the loop; the store makes each tick fire once.

Only the engine's clock decides when a tick is due: clients never send
times that move a tick.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from .errors import ConveyorError

if TYPE_CHECKING:
    from .engine import Engine

logger = logging.getLogger(__name__)

# The maximum sleep between steps. It bounds how late this loop fires a
# schedule that another server created or resumed.
RECHECK_S = 5.0
# The minimum sleep, so a due schedule whose row another server has locked
# while it fires it does not make this loop spin.
MIN_WAIT_S = 0.05
# After a failed step (the store is down), the loop waits this long.
RETRY_S = 1.0
# Recorded ticks are pruned this often (see store/schedules.py).
PRUNE_INTERVAL_S = 3600.0
# A failing store is logged once per this many failed steps.
LOG_EVERY_FAILURES = 30


class Scheduler:
    """Fires due schedules on a thread until `close`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._failures = 0
        self._next_prune_at = 0.0
        self._thread = threading.Thread(target=self._run, name="conveyor-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Make the loop look at the store now, e.g. after a schedule changed."""
        self._wake.set()

    def close(self) -> None:
        """Stop after the current step."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        logger.debug("Scheduler started")
        while not self._stopping.is_set():
            wait_s = self._step()
            self._wake.wait(wait_s)
            self._wake.clear()
        logger.debug("Scheduler stopped")

    def _step(self) -> float:
        try:
            wait_s = self.run_once()
            self._failures = 0
            return wait_s
        except ConveyorError as exc:
            self._failures += 1
            if self._failures % LOG_EVERY_FAILURES == 1:
                logger.warning(
                    "Firing schedules failed (%d times in a row); retrying in %.0f s: %s",
                    self._failures, RETRY_S, exc,
                )
        except Exception:
            logger.exception("Firing schedules failed unexpectedly; retrying in %.0f s", RETRY_S)
        return RETRY_S

    def run_once(self) -> float:
        """Fire the due schedules; return how long to sleep until the next is due."""
        self._engine.run_schedules()
        if time.monotonic() >= self._next_prune_at:
            self._next_prune_at = time.monotonic() + PRUNE_INTERVAL_S
            self._engine.prune_schedule_ticks()
        next_due_at = self._engine.next_schedule_due_at()
        if next_due_at is None:
            return RECHECK_S
        return min(max(next_due_at - self._engine.clock(), MIN_WAIT_S), RECHECK_S)
