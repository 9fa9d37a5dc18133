"""Child processes that run tasks for the worker (`--processes N`).

The worker process keeps fetching, leasing, extending leases and sending
acks, and children only call task functions (child.py). One supervisor
thread owns the children. It hands each unit to a child with a free slot
and turns the results into outcomes. It kills a child whose task passed
its hard_timeout_s and replaces a child that died. It recycles a child
after max_tasks_per_child calls, or once its resident memory passed
max_memory_per_child_mib. A recycled child takes no new units and exits
once its running ones finished, while its replacement already starts.

Children start with multiprocessing's `spawn` method, a fresh interpreter
that imports the app, because a child forked from a parent that runs
threads can inherit a lock that another thread held and deadlock.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from ..errors import ConveyorError, TaskTimeout
from ..tasks.task import Task
from . import jobs as outcomes
from .child import ChildConfig, child_main
from .execution import ItemResult
from .jobs import Job, RemoteTaskError
from .run_control import LogCapture
from .runners import begin_unit, complete_unit
from .transient import RetryState

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
CHILD_START_TIMEOUT_S = 60.0
# How long a stopping worker waits for idle children to exit before it kills them.
CHILD_STOP_TIMEOUT_S = 10.0
MAX_SUPERVISOR_WAIT_S = 1.0


class ChildProcessExited(Exception):
    """A worker child process died while it ran the task."""


class HardTimeout(TaskTimeout):
    """A task ran past its hard_timeout_s, so the worker killed its child process."""


class ChildStartFailed(Exception):
    """A worker child process exited before it was ready to run tasks."""


def describe_exit(exitcode: int | None) -> str:
    """Return `signal SIGSEGV` or `exit code 3` for a child's exit status."""
    if exitcode is None:
        return "an unknown status"
    if exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


@dataclass(eq=False)
class RunningUnit:
    """A unit a child runs; `hard_deadline` is time.monotonic() seconds.

    `cancelled` is set when the child was killed because every job of the
    unit was cancelled.
    """

    id: int
    task: Task
    jobs: list[Job]
    hard_deadline: float | None
    interrupted: bool = False
    cancelled: bool = False


class ChildProcess:
    """The worker's side of one child process: its pipes, its units and its state.

    A sender thread writes to the child, so that a child that is stuck in C
    code and reads nothing blocks that thread only, never the supervisor.
    """

    def __init__(
        self, runner: ProcessRunner, process: Any, commands: Connection, results: Connection
    ) -> None:
        self.process = process
        self.pid: int = process.pid
        self.results = results
        self.units: dict[int, RunningUnit] = {}
        self.ready = False
        self.reading = True
        self.calls_started = 0
        self.calls_done = 0
        self.retiring = False
        self.stop_sent = False
        self.killed_unit: int | None = None
        self._runner = runner
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(
            target=self._send_loop, args=(commands,), name=f"conveyor-child-{self.pid}", daemon=True
        )
        self._sender.start()

    def send(self, message: tuple[Any, ...]) -> None:
        self._outbox.put(message)

    def close(self) -> None:
        self._outbox.put(None)
        self.results.close()

    def interrupt(self, job: Job) -> None:
        """Ask the child to raise TaskTimeout in the call that runs job."""
        self._runner.request(("interrupt", self, job))

    def cancel(self, job: Job) -> None:
        """Ask the supervisor to kill the child if every job of job's unit was cancelled."""
        self._runner.request(("cancel", self, job))

    def _send_loop(self, commands: Connection) -> None:
        while (message := self._outbox.get()) is not None:
            try:
                commands.send(message)
            except (OSError, ValueError):
                break
        commands.close()


class ProcessRunner:
    """The children of one worker and the supervisor thread that owns them.

    Other threads talk to the supervisor through `request()`, so only the
    supervisor thread reads or changes the children's state.
    """

    def __init__(
        self,
        worker: Worker,
        processes: int,
        max_tasks_per_child: int | None,
        max_memory_per_child_mib: int | None,
        config: ChildConfig,
    ) -> None:
        self._worker = worker
        self._processes = processes
        self._concurrency = config.concurrency
        self._max_tasks = max_tasks_per_child
        self._max_memory_bytes = max_memory_per_child_mib * MIB if max_memory_per_child_mib else None
        self._config = config
        self._context = multiprocessing.get_context("spawn")
        self._children: list[ChildProcess] = []
        self._pending: deque[list[Job]] = deque()
        self._requests: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._next_unit_id = 0
        self._closing = False
        self._stop_deadline = 0.0
        self._respawn_at: list[float] = []
        self._start_retry = RetryState("Starting a worker child process")
        self._starting = True
        self._not_ready = processes
        self._started = threading.Event()
        self._start_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="conveyor-children", daemon=True)

    # Called from other threads -------------------------------------------

    def start(self) -> None:
        """Start the children and wait until each is ready.

        Raises ConveyorError if one exits first or they take longer than
        CHILD_START_TIMEOUT_S; the children are stopped then.
        """
        for _ in range(self._processes):
            self._spawn()
        self._thread.start()
        if not self._started.wait(CHILD_START_TIMEOUT_S):
            self._start_error = (
                f"worker child processes did not start within {CHILD_START_TIMEOUT_S:g} s; "
                "check that the app module imports quickly"
            )
        if self._start_error is not None:
            self.stop(0.0)
            raise ConveyorError(self._start_error)
        logger.info(
            "Started %d worker child processes (pids %s); each runs at most %d tasks at once",
            self._processes, ", ".join(str(c.pid) for c in self._children), self._concurrency,
        )

    def submit(self, unit: list[Job]) -> None:
        self.request(("unit", unit))

    def request(self, request: tuple[Any, ...]) -> None:
        self._requests.put(request)
        try:
            os.write(self._wake_write, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def stop(self, timeout_s: float) -> None:
        """Stop every child: idle ones exit, busy ones are killed; wait up to timeout_s more."""
        self.request(("close",))
        self._thread.join(timeout_s + CHILD_STOP_TIMEOUT_S + 5.0)
        for child in list(self._children):
            child.process.kill()

    # The supervisor thread -----------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._handle_requests()
                if self._closing and not self._children:
                    return
                now = time.monotonic()
                self._dispatch()
                self._enforce_hard_timeouts(now)
                self._stop_idle_retired()
                self._kill_after_stop_deadline(now)
                self._respawn_due(now)
                self._wait_and_handle(now)
        except Exception:  # noqa: BLE001 - reported; the worker cannot go on without it
            logger.exception(
                "The supervisor of the worker child processes failed; no more tasks will run. "
                "Stop the worker and report this bug"
            )
        finally:
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _handle_requests(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            kind = request[0]
            if kind == "unit":
                self._pending.append(request[1])
            elif kind == "interrupt":
                self._interrupt(request[1], request[2])
            elif kind == "cancel":
                self._cancel(request[1], request[2])
            elif kind == "close":
                self._close()

    def _wait_and_handle(self, now: float) -> None:
        by_object: dict[Any, tuple[str, ChildProcess | None]] = {self._wake_read: ("wake", None)}
        for child in self._children:
            by_object[child.process.sentinel] = ("exit", child)
            if child.reading:
                by_object[child.results] = ("result", child)
        for ready in wait(list(by_object), self._wait_s(now)):
            kind, child = by_object[ready]
            if kind == "wake":
                os.read(self._wake_read, 4096)
            elif kind == "result" and child in self._children:
                self._read_results(child)  # type: ignore[arg-type]
        # Exits go last, so that results a child sent before it died count.
        for ready in wait([o for o, (k, _) in by_object.items() if k == "exit"], 0):
            child = by_object[ready][1]
            if child in self._children:
                self._on_exit(child)  # type: ignore[arg-type]

    def _wait_s(self, now: float) -> float:
        wakeups = [now + MAX_SUPERVISOR_WAIT_S, *self._respawn_at]
        if self._closing:
            wakeups.append(self._stop_deadline)
        for child in self._children:
            wakeups.extend(u.hard_deadline for u in child.units.values() if u.hard_deadline)
        return max(0.0, min(wakeups) - now)

    # Starting and stopping children ----------------------------------------

    def _spawn(self) -> None:
        commands_read, commands_write = self._context.Pipe(duplex=False)
        results_read, results_write = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=child_main,
            args=(self._config, commands_read, results_write),
            name="conveyor-worker-child",
        )
        process.start()
        # The parent keeps only its own ends, so a child's death reads as EOF.
        commands_read.close()
        results_write.close()
        self._children.append(ChildProcess(self, process, commands_write, results_read))

    def _respawn_due(self, now: float) -> None:
        due = [at for at in self._respawn_at if at <= now]
        if not due or self._closing:
            return
        self._respawn_at = [at for at in self._respawn_at if at > now]
        for _ in due:
            self._spawn()

    def _retire(self, child: ChildProcess, reason: str) -> None:
        """Take no new units on child, and start its replacement now."""
        child.retiring = True
        logger.info(
            "Recycling worker child process %d %s; it finishes its %d running tasks "
            "and a new child process takes its place",
            child.pid, reason, len(child.units),
        )
        self._spawn()

    def _stop_idle_retired(self) -> None:
        for child in self._children:
            if child.retiring and not child.units and not child.stop_sent and child.killed_unit is None:
                child.send(("stop",))
                child.stop_sent = True

    def _kill_after_stop_deadline(self, now: float) -> None:
        if self._closing and now >= self._stop_deadline:
            for child in self._children:
                child.process.kill()

    def _close(self) -> None:
        """Stop every child; the worker released their jobs already."""
        self._closing = True
        self._stop_deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
        self._pending.clear()
        self._respawn_at = []
        for child in self._children:
            if child.units or not child.ready:
                child.process.kill()
            elif not child.stop_sent:
                child.send(("stop",))
                child.stop_sent = True

    # Units -------------------------------------------------------------------

    def _dispatch(self) -> None:
        if self._closing:
            return
        while self._pending:
            child = self._free_child()
            if child is None:
                return
            self._start_unit(child, self._pending.popleft())

    def _free_child(self) -> ChildProcess | None:
        free = [
            child for child in self._children
            if child.ready and not child.retiring and len(child.units) < self._concurrency
            and not self._out_of_calls(child)
        ]
        return min(free, key=lambda child: len(child.units), default=None)

    def _out_of_calls(self, child: ChildProcess) -> bool:
        """Tell whether the child was given max_tasks_per_child calls already.

        Counting calls when they start, not when they end, keeps a child with
        several threads from taking more calls than the limit.
        """
        return self._max_tasks is not None and child.calls_started >= self._max_tasks

    def _start_unit(self, child: ChildProcess, unit: list[Job]) -> None:
        for job in unit:
            job.executor = child
        started = begin_unit(self._worker, unit)
        if not started:
            return
        task = started[0].task
        assert task is not None
        self._next_unit_id += 1
        hard_deadline = None
        if task.hard_timeout_s is not None:
            hard_deadline = time.monotonic() + task.hard_timeout_s
        child.calls_started += 1
        child.units[self._next_unit_id] = RunningUnit(self._next_unit_id, task, started, hard_deadline)
        # The child stores completion records itself, with these receipts.
        receipts = [job.receipt if job.idempotent else None for job in started]
        child.send(("run", self._next_unit_id, task.name, outcomes.runs_of(started), receipts))

    def _interrupt(self, child: ChildProcess, job: Job) -> None:
        for unit in child.units.values():
            if job in unit.jobs and not unit.interrupted:
                unit.interrupted = True
                child.send(("interrupt", unit.id))
                return

    def _cancel(self, child: ChildProcess, job: Job) -> None:
        """Kill the child that runs job, once every job of its unit was cancelled.

        A batch unit with other jobs left runs on; the cancelled job's
        result is discarded when the batch ends.
        """
        if child not in self._children or child.killed_unit is not None:
            return
        for unit in child.units.values():
            if job in unit.jobs and all(j.control.cancelled for j in unit.jobs):
                unit.cancelled = True
                logger.info(
                    "Task %s (message %s) was cancelled; killing worker child process %d "
                    "that runs it and starting a new one",
                    unit.task.name, job.message_id, child.pid,
                )
                self._kill_child(child, unit)
                return

    def _read_results(self, child: ChildProcess) -> None:
        """Handle every message the child sent so far; mark it unreadable at EOF."""
        try:
            while child.reading and child.results.poll():
                self._on_message(child, child.results.recv())
        except (EOFError, OSError):
            child.reading = False

    def _on_message(self, child: ChildProcess, message: tuple[Any, ...]) -> None:
        if message[0] == "ready":
            self._on_ready(child)
            return
        if message[0] == "progress":
            self._on_progress(child, *message[1:])
            return
        _, unit_id, items, duration_ms, resident_bytes, logs = message
        unit = child.units.pop(unit_id, None)
        if unit is None:
            return
        if logs is not None:
            capture = LogCapture(logs)
            for job in unit.jobs:
                job.control.logs = capture
        results = [_item_result(item) for item in items]
        complete_unit(self._worker, unit.jobs, results, duration_ms)
        child.calls_done += 1
        self._check_recycling(child, resident_bytes)

    def _on_progress(
        self, child: ChildProcess, unit_id: int, index: int, fraction: float, text: str | None
    ) -> None:
        unit = child.units.get(unit_id)
        if unit is not None and index < len(unit.jobs):
            unit.jobs[index].control.report_progress(fraction, text)

    def _on_ready(self, child: ChildProcess) -> None:
        child.ready = True
        self._start_retry.succeeded()
        logger.debug("Worker child process %d is ready", child.pid)
        if self._starting:
            self._not_ready -= 1
            if self._not_ready == 0:
                self._starting = False
                self._started.set()

    def _check_recycling(self, child: ChildProcess, resident_bytes: int) -> None:
        if child.retiring or self._closing:
            return
        if self._max_tasks is not None and child.calls_done >= self._max_tasks:
            self._retire(child, f"after {child.calls_done} task calls (max_tasks_per_child)")
        elif self._max_memory_bytes is not None and resident_bytes > self._max_memory_bytes:
            self._retire(
                child,
                f"because its resident memory of {resident_bytes / MIB:.0f} MiB is over "
                f"max_memory_per_child_mib ({self._max_memory_bytes // MIB} MiB)",
            )

    # Hard timeouts and exits ------------------------------------------------

    def _enforce_hard_timeouts(self, now: float) -> None:
        for child in self._children:
            if child.killed_unit is not None:
                continue
            for unit in child.units.values():
                if unit.hard_deadline is not None and unit.hard_deadline <= now:
                    self._kill_for_hard_timeout(child, unit)
                    break

    def _kill_for_hard_timeout(self, child: ChildProcess, unit: RunningUnit) -> None:
        logger.warning(
            "Task %s (message %s) ran longer than its hard_timeout_s of %g s; killing "
            "worker child process %d and starting a new one",
            unit.task.name, unit.jobs[0].message_id, unit.task.hard_timeout_s, child.pid,
        )
        self._kill_child(child, unit)

    def _kill_child(self, child: ChildProcess, unit: RunningUnit) -> None:
        """Kill a child because of `unit` and start its replacement; other units are released."""
        child.killed_unit = unit.id
        child.process.kill()
        if not child.retiring and not self._closing:
            child.retiring = True
            self._spawn()

    def _on_exit(self, child: ChildProcess) -> None:
        self._read_results(child)
        child.process.join(5.0)
        exitcode = child.process.exitcode
        self._children.remove(child)
        child.close()
        if not child.ready:
            self._on_start_failure(child, exitcode)
            return
        lost = list(child.units.values())
        expected = child.killed_unit is not None or child.stop_sent or self._closing
        if not expected:
            running = ", ".join(
                f"task {unit.task.name} {job.message_id}" for unit in lost for job in unit.jobs
            )
            logger.error(
                "Worker child process %d exited with %s while running %s; starting a new one",
                child.pid, describe_exit(exitcode), running or "no task",
            )
            if not child.retiring:
                self._spawn()
        for unit in lost:
            self._settle_lost(child, unit, exitcode)

    def _settle_lost(self, child: ChildProcess, unit: RunningUnit, exitcode: int | None) -> None:
        """Fail the jobs of a unit whose child died, or release them if another unit caused it."""
        task = unit.task
        error: BaseException | None = None
        if unit.cancelled:
            for job in unit.jobs:
                elapsed_ms = (time.monotonic() - job.started_at) * 1000.0
                self._worker.jobs.settle(job, outcomes.cancelled(job, elapsed_ms))
                self._worker.capacity.finished()
            return
        if child.killed_unit == unit.id:
            error = HardTimeout(
                f"task {task.name} ran longer than its hard_timeout_s of "
                f"{task.hard_timeout_s:g} s, so the worker killed the child process "
                "that ran it"
            )
        elif child.killed_unit is None and not self._closing:
            error = ChildProcessExited(
                f"worker child process exited with {describe_exit(exitcode)} while "
                f"running task {task.name}"
            )
        if error is None and child.killed_unit is not None:
            logger.warning(
                "Released %s (task %s) for redelivery: it ran in worker child "
                "process %d, which was killed for another task's hard timeout",
                ", ".join(job.message_id for job in unit.jobs), task.name, child.pid,
            )
        for job in unit.jobs:
            if error is None:
                outcome = outcomes.release(job)
            else:
                settings = self._worker.settings.get(job.queue)
                outcome = outcomes.failure(job, error, 0.0, settings)
            self._worker.jobs.settle(job, outcome)
            self._worker.capacity.finished()

    def _on_start_failure(self, child: ChildProcess, exitcode: int | None) -> None:
        description = (
            f"worker child process {child.pid} exited with {describe_exit(exitcode)} "
            "before it was ready; its error output is above"
        )
        if self._starting:
            self._start_error = description
            self._started.set()
            return
        if self._closing:
            return
        delay_s = self._start_retry.failed(ChildStartFailed(description))
        self._respawn_at.append(time.monotonic() + delay_s)


def _item_result(item: tuple[Any, ...]) -> ItemResult:
    if item[0] == "ok":
        return ItemResult(value=item[1])
    _, description, permanent, traceback_text, retry_after_s = item
    error = RemoteTaskError(description, permanent, traceback_text, retry_after_s)
    return ItemResult(error=error)
