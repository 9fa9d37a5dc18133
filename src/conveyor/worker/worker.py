"""The worker: runs the tasks of one app from its queues until stopped.

Threads, all started by `run()`:
- one fetcher per queue reserves messages over long polls (fetcher.py);
- N task threads run sync tasks, one event loop runs async tasks (runners.py);
- the reporter sends acks, nacks and releases in batches (reporter.py);
- the lease keeper extends leases and enforces sync timeouts (leases.py).

The job registry (registry.py) decides every job's state, so each job gets
exactly one outcome: from its runner, from the timeout check, or from the
shutdown, which releases what did not finish.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from ..client.http import redact_url
from ..errors import ValidationError
from ..models import Message
from ..settings import validate_queue_name
from ..tasks.app import Conveyor
from ..tasks.serialization import parse_body
from ..validation import MAX_WAIT_S
from . import jobs as outcomes
from .capacity import Capacity
from .fetcher import Fetcher
from .jobs import QUEUED, RUNNING, Job
from .leases import LeaseKeeper, touch_at
from .queue_settings import QueueSettingsCache
from .registry import JobRegistry
from .reporter import Reporter
from .runners import AsyncRunner, ThreadRunner
from .transient import RetryState, is_transient

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8
DEFAULT_PREFETCH = 100
DEFAULT_GRACE_PERIOD_S = 30.0
DEFAULT_POLL_WAIT_S = 2.0
MAX_CONCURRENCY = 1024
MAX_PREFETCH = 10_000
# How long the shutdown may spend sending the last acks and releases.
FINAL_FLUSH_TIMEOUT_S = 10.0
# How long a forced stop waits for a long poll in flight to return.
FORCED_FETCHER_WAIT_S = 1.0
SHUTDOWN_POLL_S = 0.05


class Worker:
    """Runs an app's tasks from its queues; `run()` blocks until `stop()`.

    `queues` defaults to the queues of the app's tasks. `concurrency` is the
    number of sync task threads and the max number of async tasks running at once.
    `prefetch` is how many messages it may hold beyond those running.
    `grace_period_s` is how long a stop waits for running tasks before it
    releases them. `poll_wait_s` is the long-poll wait of each reserve.
    """

    def __init__(
        self,
        app: Conveyor,
        queues: list[str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        prefetch: int = DEFAULT_PREFETCH,
        grace_period_s: float = DEFAULT_GRACE_PERIOD_S,
        poll_wait_s: float = DEFAULT_POLL_WAIT_S,
    ) -> None:
        self.app = app
        self.queues = _check_queues(app, queues)
        self.concurrency = _check_int("concurrency", concurrency, 1, MAX_CONCURRENCY)
        self.prefetch = _check_int("prefetch", prefetch, 0, MAX_PREFETCH)
        self.grace_period_s = _check_seconds("grace_period_s", grace_period_s, 0.0, math.inf)
        self.poll_wait_s = _check_seconds("poll_wait_s", poll_wait_s, 0.0, MAX_WAIT_S)
        self.stopping = threading.Event()
        self.capacity = Capacity(self.concurrency + self.prefetch)
        self.has_timeouts = any(
            t.timeout_s is not None and not t.is_async for t in app.tasks.values()
        )
        self._stop_requested = threading.Event()
        self._force = threading.Event()
        self._ran = False
        self.client: Any = None
        self.settings: QueueSettingsCache

    # Public API ---------------------------------------------------------

    def run(self) -> None:
        """Serve the queues until stop() or SIGTERM/SIGINT, then shut down.

        In the main thread, the first SIGTERM or SIGINT stops gracefully and
        a second one forces a faster stop. Raises the error of a startup
        step that retrying cannot fix (an invalid URL or token).
        """
        if self._ran:
            raise RuntimeError("a Worker runs once; create a new one to run again")
        self._ran = True
        with self._signal_handlers():
            if not self._prepare():
                return
            self._start_threads()
            logger.info(
                "Worker started: queues %s, concurrency %d, prefetch %d, server %s",
                ", ".join(self.queues), self.concurrency, self.prefetch,
                redact_url(self.app.url),
            )
            while not self._stop_requested.wait(1.0):
                pass
            self._shutdown()

    def stop(self, force: bool = False) -> None:
        """Ask run() to stop; with force, release running tasks without a grace period."""
        if force:
            self._force.set()
        self._stop_requested.set()

    def busy_threads(self) -> int:
        """Return how many task threads are still inside a task function."""
        runner = getattr(self, "_thread_runner", None)
        return runner.busy_threads() if runner is not None else 0

    # Startup ------------------------------------------------------------

    def _prepare(self) -> bool:
        """Open the client, create missing queues and read their settings.

        Transient failures are retried until they pass or a stop is
        requested; return False if stopped first.
        """
        self.client = self.app.client
        self.settings = QueueSettingsCache(self.client, self.queues)
        for queue in self.queues:
            retry = RetryState(f"Preparing queue {queue}")
            while True:
                if self._stop_requested.is_set():
                    return False
                try:
                    self.app.ensure_queue(queue)
                    self.settings.load(queue)
                    break
                except Exception as exc:  # classified just below
                    if not is_transient(exc):
                        raise
                    self._stop_requested.wait(retry.failed(exc))
            retry.succeeded()
        return True

    def _start_threads(self) -> None:
        self.reporter = Reporter(self.client, on_delivered=self._forget_job)
        self.jobs = JobRegistry(self.capacity, self.reporter, self.settings, self.stopping)
        self.lease_keeper = LeaseKeeper(self)
        self._thread_runner = ThreadRunner(self, self.concurrency)
        self._async_runner: AsyncRunner | None = None
        if any(task.is_async for task in self.app.tasks.values()):
            self._async_runner = AsyncRunner(self, self.concurrency)
        shares_capacity = len(self.queues) > 1
        self._fetchers = [Fetcher(self, queue, shares_capacity) for queue in self.queues]

        self.reporter.start()
        self.lease_keeper.start()
        self._thread_runner.start()
        if self._async_runner is not None:
            self._async_runner.start()
        for fetcher in self._fetchers:
            fetcher.start()

    # Reserved messages ----------------------------------------------------

    def accept(
        self,
        messages: list[Message],
        requested: int,
        lease_started_at: float,
        visibility_timeout_s: float,
    ) -> None:
        """Turn reserved messages into jobs and hand them to the runners.

        Settles the `requested` capacity slots before any job can start.
        A message that cannot run (not a task call, unknown task) gets its
        outcome at once. After a stop, every message is released.
        """
        lease_until = lease_started_at + visibility_timeout_s
        first_touch_at = touch_at(lease_started_at, visibility_timeout_s)
        jobs = [self._make_job(m, lease_until, first_touch_at) for m in messages]
        runnable = [job for job in jobs if job.task is not None]
        if self.jobs.register(jobs):
            self.capacity.settle(requested, 0)
            for job in jobs:
                self.reporter.add(outcomes.release(job))
            return

        for job in jobs:
            if job.task is None:
                self.reporter.add(self._unrunnable_outcome(job))
        self.capacity.settle(requested, len(runnable))
        async_jobs = []
        for job in runnable:
            if job.task.is_async and self._async_runner is not None:  # type: ignore[union-attr]
                async_jobs.append(job)
            else:
                self._thread_runner.submit(job)
        if async_jobs and self._async_runner is not None:
            self._async_runner.submit(async_jobs)

    def _forget_job(self, job: Job) -> None:
        self.jobs.forget(job)

    def _make_job(self, message: Message, lease_until: float, first_touch_at: float) -> Job:
        settings = self.settings.get(message.queue)
        max_attempts = message.max_attempts or settings.max_attempts
        try:
            call = parse_body(message.body)
        except ValueError as exc:
            return Job(message, None, None, str(exc), max_attempts, lease_until, first_touch_at)
        task = self.app.tasks.get(call.task_name)
        return Job(message, task, call, None, max_attempts, lease_until, first_touch_at)

    def _unrunnable_outcome(self, job: Job) -> outcomes.Outcome:
        if job.invalid is not None:
            return outcomes.invalid_message(job)
        error = LookupError(
            f"unknown task {job.task_name!r}: this worker's app has no task of "
            "that name; deploy the code that defines it, or check the task name"
        )
        return outcomes.failure(job, error, 0.0, self.settings.get(job.queue))

    # Shutdown -----------------------------------------------------------

    def _shutdown(self) -> None:
        forced = self._force.is_set()
        running = self.jobs.count(RUNNING)
        logger.info(
            "Worker stopping: no new messages; waiting up to %.1f s for %d running tasks",
            0.0 if forced else self.grace_period_s, running,
        )
        deadline = time.monotonic() + self.grace_period_s
        self.stopping.set()
        self.capacity.close()

        # A long poll still in flight would lease released messages again at
        # once, so the fetchers stop before anything waiting is released.
        self._join_fetchers()
        self.jobs.release(QUEUED)

        self._wait_for_running(deadline)
        unfinished = self.jobs.release(RUNNING)
        if unfinished:
            logger.warning(
                "Released %d tasks that did not finish %s; they will run again",
                unfinished,
                "before the forced stop" if self._force.is_set() else "within the grace period",
            )

        if self._async_runner is not None:
            self._async_runner.cancel_all()
        self._thread_runner.stop()
        if self._async_runner is not None:
            self._async_runner.stop(1.0)
        self.lease_keeper.stop()
        unsent = self.reporter.close(FINAL_FLUSH_TIMEOUT_S)
        logger.info(
            "Worker stopped: %d messages released for redelivery, %d outcomes not sent",
            self.reporter.released, unsent,
        )

    def _wait_for_running(self, deadline: float) -> None:
        while self.jobs.count(RUNNING) and time.monotonic() < deadline:
            if self._force.wait(SHUTDOWN_POLL_S):
                logger.warning("Forced stop: releasing running tasks now")
                return

    def _join_fetchers(self) -> None:
        """Wait for long polls in flight; whatever they return is released."""
        for fetcher in self._fetchers:
            wait_s = FORCED_FETCHER_WAIT_S if self._force.is_set() else self.poll_wait_s + 2.0
            if not fetcher.join(wait_s):
                # NOTE: messages that this poll leases after the worker exits stay
                # reserved until their lease ends, which counts as a failed attempt.
                logger.warning(
                    "Fetcher of queue %s is still in a long poll; not waiting for it",
                    fetcher.queue,
                )

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._stop_requested.is_set():
            logger.warning("Received a second stop signal (%s): forcing a fast stop", name)
            self.stop(force=True)
        else:
            logger.info("Received %s: stopping gracefully; send it again to force", name)
            self.stop()


def _check_queues(app: Conveyor, queues: list[str] | None) -> list[str]:
    chosen = list(dict.fromkeys(queues)) if queues else app.queues()
    if not chosen:
        raise ValidationError(
            "the app has no tasks, so the worker has no queues to serve; "
            "register tasks with @app.task or name queues explicitly"
        )
    used = set(app.queues())
    for queue in chosen:
        validate_queue_name(queue)
        if queue not in used:
            logger.warning(
                "Queue %s has no task of this app; its messages will fail as "
                "unknown tasks. Check the --queues list for a typo",
                queue,
            )
    return chosen


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"invalid {name} {value!r}: use an integer from {low} to {high}")
    return value


def _check_seconds(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValidationError(f"invalid {name} {value!r}: expected a number of seconds")
    if not low <= value <= high:
        raise ValidationError(f"invalid {name} {value!r}: use {low:g} to {high:g} seconds")
    return float(value)
