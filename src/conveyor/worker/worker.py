"""The worker: runs the tasks of one app from its queues until stopped.

Threads, all started by `run()`:
- one fetcher per queue reserves messages over long polls (fetcher.py);
- N task threads run sync tasks, one event loop runs async tasks
  (runners.py), or, with `processes`, a supervisor hands every task to
  child processes (processes.py);
- the batcher gathers the messages of batch tasks (batcher.py);
- the reporter sends acks, nacks and releases in batches (reporter.py);
- the lease keeper extends leases and enforces sync timeouts (leases.py).

The job registry (registry.py) decides every job's state, so each job gets
exactly one outcome: from its runner, from the timeout check, from a dead
child process, or from the shutdown, which releases what did not finish.
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
from ..models import Message
from ..tasks.app import Conveyor
from ..tasks.serialization import parse_body
from ..text import plural
from ..validation import MAX_WAIT_S
from . import jobs as outcomes
from .batcher import Batcher
from .capacity import Capacity
from .checks import (
    check_child_limit,
    check_int,
    check_no_hard_timeouts,
    check_queues,
    check_seconds,
    resolve_app_path,
    warn_about_large_batches,
)
from .child import ChildConfig
from .fetcher import Fetcher
from .jobs import QUEUED, RUNNING, Job
from .leases import LeaseKeeper, touch_at
from .processes import ProcessRunner
from .queue_settings import QueueSettingsCache
from .registry import JobRegistry
from .reporter import Reporter
from .run_control import install_capture_handler
from .runners import AsyncRunner, ThreadRunner
from .transient import RetryState, is_transient

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8
# With child processes, each child runs this many tasks at once by default,
# which suits CPU-bound work.
DEFAULT_CHILD_CONCURRENCY = 1
DEFAULT_PREFETCH = 100
MAX_PROCESSES = 256
MAX_TASKS_PER_CHILD = 1_000_000_000
MAX_MEMORY_PER_CHILD_MIB = 1024 * 1024
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
    number of sync task threads and the max number of async tasks running
    at once (default 8). `prefetch` is how many messages it may hold beyond
    those running. `grace_period_s` is how long a stop waits for running
    tasks before it releases them. `poll_wait_s` is the long-poll wait of
    each reserve.

    With `processes` > 0, tasks run in that many child processes and
    `concurrency` applies to each child (default 1). A child is recycled
    after `max_tasks_per_child` task calls, or once its resident memory is
    over `max_memory_per_child_mib` MiB after a call. Children import the
    app from `app_path` (MODULE:APP); without it the worker looks for the
    app among the imported modules.
    """

    def __init__(
        self,
        app: Conveyor,
        queues: list[str] | None = None,
        concurrency: int | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        grace_period_s: float = DEFAULT_GRACE_PERIOD_S,
        poll_wait_s: float = DEFAULT_POLL_WAIT_S,
        processes: int = 0,
        max_tasks_per_child: int | None = None,
        max_memory_per_child_mib: int | None = None,
        app_path: str | None = None,
    ) -> None:
        self.app = app
        self.queues = check_queues(app, queues)
        self.processes = check_int("processes", processes, 0, MAX_PROCESSES)
        if concurrency is None:
            concurrency = DEFAULT_CHILD_CONCURRENCY if self.processes else DEFAULT_CONCURRENCY
        self.concurrency = check_int("concurrency", concurrency, 1, MAX_CONCURRENCY)
        self.prefetch = check_int("prefetch", prefetch, 0, MAX_PREFETCH)
        self.grace_period_s = check_seconds("grace_period_s", grace_period_s, 0.0, math.inf)
        self.poll_wait_s = check_seconds("poll_wait_s", poll_wait_s, 0.0, MAX_WAIT_S)
        self.max_tasks_per_child = check_child_limit(
            "max_tasks_per_child", max_tasks_per_child, MAX_TASKS_PER_CHILD, self.processes
        )
        self.max_memory_per_child_mib = check_child_limit(
            "max_memory_per_child_mib", max_memory_per_child_mib, MAX_MEMORY_PER_CHILD_MIB,
            self.processes,
        )
        served = [task for task in app.tasks.values() if task.queue in self.queues]
        if not self.processes:
            check_no_hard_timeouts(served)
        self.app_path = resolve_app_path(app, app_path) if self.processes else app_path
        self.stopping = threading.Event()
        self.capacity = Capacity(self.concurrency * max(1, self.processes) + self.prefetch)
        warn_about_large_batches(served, self.capacity.limit)
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
                "Worker started: queues %s, %s, prefetch %d, server %s",
                ", ".join(self.queues), self._describe_execution(), self.prefetch,
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
        """Return how many task threads of this process are still inside a task function."""
        runner = getattr(self, "_thread_runner", None)
        return runner.busy_threads() if runner is not None else 0

    def interrupt(self, job: Job) -> None:
        """Raise TaskTimeout in the call that runs a job past its timeout_s, if it still runs."""
        executor = job.executor
        if executor is not None:
            executor.interrupt(job)

    # Startup ------------------------------------------------------------

    def _prepare(self) -> bool:
        """Open the client, create missing queues, read their settings, store schedules.

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
        return self._sync_schedules()

    def _sync_schedules(self) -> bool:
        """Store the app's declared schedules of the served queues, retrying transient failures."""
        if not self.app.periodic_schedules:
            return True
        retry = RetryState("Storing the app's schedules")
        while not self._stop_requested.is_set():
            try:
                self.app.sync_schedules(self.queues)
                retry.succeeded()
                return True
            except Exception as exc:  # classified just below
                if not is_transient(exc):
                    raise
                self._stop_requested.wait(retry.failed(exc))
        return False

    def _describe_execution(self) -> str:
        if self.processes:
            return f"{self.processes} child processes with concurrency {self.concurrency} each"
        return f"concurrency {self.concurrency}"

    def _start_threads(self) -> None:
        install_capture_handler()
        self.reporter = Reporter(self.client, self._forget_job, self.app.hooks)
        self.jobs = JobRegistry(self.capacity, self.reporter, self.settings, self.stopping)
        self.lease_keeper = LeaseKeeper(self)
        self._thread_runner: ThreadRunner | None = None
        self._async_runner: AsyncRunner | None = None
        self._process_runner: ProcessRunner | None = None
        if self.processes:
            self._process_runner = self._make_process_runner()
            # Children start first: if they cannot, nothing gets leased.
            self._process_runner.start()
        else:
            self._thread_runner = ThreadRunner(self, self.concurrency)
            if any(task.is_async for task in self.app.tasks.values()):
                self._async_runner = AsyncRunner(self, self.concurrency)
        self._batcher = Batcher(self._submit)
        shares_capacity = len(self.queues) > 1
        self._fetchers = [Fetcher(self, queue, shares_capacity) for queue in self.queues]

        self.reporter.start()
        self.lease_keeper.start()
        self._batcher.start()
        if self._thread_runner is not None:
            self._thread_runner.start()
        if self._async_runner is not None:
            self._async_runner.start()
        for fetcher in self._fetchers:
            fetcher.start()

    def _make_process_runner(self) -> ProcessRunner:
        config = ChildConfig(
            app_path=self.app_path or "",
            url=self.app.url,
            token=self.app.token,
            concurrency=self.concurrency,
            log_level=logging.getLogger().getEffectiveLevel(),
        )
        return ProcessRunner(
            self, self.processes, self.max_tasks_per_child, self.max_memory_per_child_mib, config
        )

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
        outcome at once, and so does one whose completion an earlier
        attempt recorded. After a stop, every message is released.
        """
        lease_until = lease_started_at + visibility_timeout_s
        first_touch_at = touch_at(lease_started_at, visibility_timeout_s)
        jobs = [self._make_job(m, lease_until, first_touch_at) for m in messages]
        runnable = [job for job in jobs if job.task is not None and not job.completed]
        if self.jobs.register(jobs):
            self.capacity.settle(requested, 0)
            for job in jobs:
                self.reporter.add(outcomes.release(job))
            return

        for job in jobs:
            if job.task is None:
                self.reporter.add(self._unrunnable_outcome(job))
            elif job.completed:
                self._ack_recorded(job)
        self.capacity.settle(requested, len(runnable))
        batched = [job for job in runnable if job.task.is_batch]  # type: ignore[union-attr]
        single = [[job] for job in runnable if not job.task.is_batch]  # type: ignore[union-attr]
        self._submit_all(single)
        if batched:
            self._batcher.add(batched)

    def _submit(self, unit: list[Job]) -> None:
        self._submit_all([unit])

    def _submit_all(self, units: list[list[Job]]) -> None:
        """Hand units to the runner of their task: a child process, the loop or a thread."""
        async_units = []
        for unit in units:
            task = unit[0].task
            assert task is not None
            if self._process_runner is not None:
                self._process_runner.submit(unit)
            elif task.is_async and self._async_runner is not None:
                async_units.append(unit)
            elif self._thread_runner is not None:
                self._thread_runner.submit(unit)
        if async_units and self._async_runner is not None:
            self._async_runner.submit(async_units)

    def _forget_job(self, job: Job) -> None:
        self.jobs.forget(job)

    def _ack_recorded(self, job: Job) -> None:
        logger.info(
            "Task %s %s finished in an earlier attempt that recorded its result "
            "before the worker stopped; acking it without running it again",
            job.task_name, job.message_id,
        )
        self.reporter.add(outcomes.recorded_success(job))

    def cancel_job(self, job: Job) -> None:
        """Stop a job whose message someone asked to cancel, as far as its mode allows.

        A job that has not started finishes as cancelled at once. A running
        one gets its cancel flag set: an async task is also cancelled at its
        current await, and a task in a child process has its child killed.
        The job's outcome is then `cancelled`, whatever the call returns.
        """
        if self.jobs.cancel_queued(job):
            logger.info("Task %s %s cancelled before it started", job.task_name, job.message_id)
            return
        if job.state != RUNNING or not job.control.cancel():
            return
        logger.info(
            "Cancel requested for running task %s %s; stopping it", job.task_name, job.message_id
        )
        cancel = getattr(job.executor, "cancel", None)
        if cancel is not None:
            cancel(job)

    def _make_job(self, message: Message, lease_until: float, first_touch_at: float) -> Job:
        settings = self.settings.get(message.queue)
        max_attempts = message.max_attempts or settings.max_attempts
        try:
            call = parse_body(message.body)
        except ValueError as exc:
            return Job(message, None, None, str(exc), max_attempts, lease_until, first_touch_at)
        task = self.app.tasks.get(call.task_name)
        if task is not None and task.is_batch and (len(call.args) != 1 or call.kwargs):
            invalid = (
                f"batch task {task.name} takes one item per message, but the body "
                f"has {len(call.args)} args and {len(call.kwargs)} kwargs"
            )
            return Job(message, None, call, invalid, max_attempts, lease_until, first_touch_at)
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

        self._stop_runners()
        self.lease_keeper.stop()
        unsent = self.reporter.close(FINAL_FLUSH_TIMEOUT_S)
        logger.info(
            "Worker stopped: %s released for redelivery, %s not sent",
            plural(self.reporter.released, "message"), plural(unsent, "outcome"),
        )

    def _stop_runners(self) -> None:
        """Stop the runners; every job they still hold was released already."""
        self._batcher.close()
        if self._async_runner is not None:
            self._async_runner.cancel_all()
        if self._thread_runner is not None:
            self._thread_runner.stop()
        if self._async_runner is not None:
            self._async_runner.stop(1.0)
        if self._process_runner is not None:
            self._process_runner.stop(0.0)

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
