"""The background loop that runs a store's redrive jobs in a server process.

Every `conveyor server` runs one. It claims active jobs that no other
server holds (a lease on the job row, renewed by every chunk), runs them a
chunk at a time at each job's rate, and gives its leases back when it
stops. A server that crashes keeps its leases until they end, after
LEASE_S, and then any server of the store takes the jobs over from their
stored cursors.

The pacing lives in this process's memory: a job's rate applies while one
server runs it, and after a takeover the new server starts its bucket
afresh, so the rate may be exceeded by up to one second's worth of
messages at that moment.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConveyorError
from .models import RedriveJob
from .store.redrive_jobs import ACTIVE

if TYPE_CHECKING:
    from .engine import Engine

logger = logging.getLogger(__name__)

LEASE_S = 30.0
# A lease is renewed once less than this much of it is left, even when the
# job's rate allows no message yet.
RENEW_BEFORE_S = 20.0
TICK_S = 0.2
CLAIM_INTERVAL_S = 1.0
MAX_JOBS = 8
# Messages per chunk of a job without a rate: one transaction each.
UNPACED_CHUNK = 500
# A failing store is logged once per this many failed ticks.
LOG_EVERY_FAILURES = 50


@dataclass
class _RunningJob:
    """A claimed job and its pacing: a token bucket of `rate_per_s`."""

    job: RedriveJob
    tokens: float
    refilled_at: float
    renew_at: float

    def allowed(self, now: float) -> int:
        """Return how many messages the job may move now."""
        rate = self.job.rate_per_s
        if rate is None:
            return UNPACED_CHUNK
        burst = max(1.0, math.ceil(rate))
        self.tokens = min(burst, self.tokens + (now - self.refilled_at) * rate)
        self.refilled_at = now
        return min(int(self.tokens + 1e-9), UNPACED_CHUNK)


class RedriveRunner:
    """Runs active redrive jobs on a thread until `close`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.owner = secrets.token_hex(8)
        self._running: dict[str, _RunningJob] = {}
        self._stopping = threading.Event()
        self._next_claim_at = 0.0
        self._failures = 0
        self._thread = threading.Thread(
            target=self._run, name="conveyor-redrive-jobs", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop after the current chunk and give the leases back."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        try:
            released = self._engine.release_redrive_jobs(self.owner)
        except ConveyorError as exc:
            logger.warning(
                "Could not give back the leases of %d redrive jobs; other servers "
                "take them over after %.0f s: %s", len(self._running), LEASE_S, exc,
            )
            return
        if released:
            logger.info("Gave back the leases of %d running redrive jobs", released)

    def _run(self) -> None:
        while not self._stopping.wait(TICK_S):
            try:
                self.run_once()
                self._failures = 0
            except ConveyorError as exc:
                self._failures += 1
                if self._failures % LOG_EVERY_FAILURES == 1:
                    logger.warning(
                        "Running redrive jobs failed (%d times in a row); retrying: %s",
                        self._failures, exc,
                    )
            except Exception:
                logger.exception("Running redrive jobs failed unexpectedly")

    def run_once(self) -> None:
        """Claim jobs when due, then run one chunk of each job its rate allows."""
        now = time.monotonic()
        if now >= self._next_claim_at and len(self._running) < MAX_JOBS:
            self._next_claim_at = now + CLAIM_INTERVAL_S
            self._claim(now)
        for job_id in list(self._running):
            if self._stopping.is_set():
                return
            self._run_chunk(self._running[job_id], time.monotonic())

    def _claim(self, now: float) -> None:
        claimed = self._engine.claim_redrive_jobs(
            self.owner, MAX_JOBS - len(self._running), LEASE_S
        )
        for job in claimed:
            # A new job starts with one second's worth of tokens.
            self._running[job.id] = _RunningJob(job, 0.0, now - 1.0, now + LEASE_S - RENEW_BEFORE_S)

    def _run_chunk(self, running: _RunningJob, now: float) -> None:
        allowed = running.allowed(now)
        if allowed == 0 and now < running.renew_at:
            return
        job = self._engine.run_redrive_chunk(running.job.id, self.owner, allowed, LEASE_S)
        moved = job.moved - running.job.moved
        running.tokens = max(running.tokens - moved, 0.0)
        running.renew_at = now + LEASE_S - RENEW_BEFORE_S
        running.job = job
        if job.state != ACTIVE or job.claimed_until is None:
            del self._running[job.id]
