"""The main function of a worker child process (`conveyor worker --processes N`).

A child imports the app, runs the task units its parent sends, and sends
back one result per run. It leases, acks and extends nothing: the parent
does all of that. The one exception is a completion record (see
completions.py), which the child stores itself with the receipt the parent
sent, before the after_run hooks.

Messages from the parent: ("run", unit_id, task_name, runs, receipts),
where a receipt is None for a run without an idempotency key,
("interrupt", unit_id) and ("stop",). Messages to the parent: ("ready",
pid), ("progress", unit_id, index, fraction, text) and ("done", unit_id,
items, duration_ms, resident_bytes, logs), where an item is ("ok", value)
or ("error", description, permanent, traceback_text, retry_after_s),
retry_after_s being None unless the task raised RetryAfter, and logs is
the unit's captured log text or None.
"""

from __future__ import annotations

import asyncio
import faulthandler
import importlib
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from ..errors import Reject, RetryAfter, TaskTimeout
from ..log_format import configure_logging
from ..tasks.app import Conveyor
from ..tasks.hooks import TaskRun
from ..tasks.task import Task
from .completions import make_recorder
from .execution import ItemResult, run_async_unit, run_sync_unit
from .interrupt import CallSlot
from .jobs import describe_error, is_permanent, requested_retry_after_s
from .run_control import LogCapture, install_capture_handler

logger = logging.getLogger(__name__)

# The format of the `conveyor` command's log records, with the child's pid.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [child %(process)d]: %(message)s"
# A task's progress goes to the parent at most this often, and its last
# value always before the unit's results. The parent sends it on at most
# once a second.
PIPE_PROGRESS_INTERVAL_S = 0.2


@dataclass(frozen=True)
class ChildConfig:
    """The settings a child gets at start: the app to import and how to reach its queues.

    The URL and token let task code enqueue other tasks from the child.
    """

    app_path: str
    url: str
    token: str | None
    concurrency: int
    log_level: int


def child_main(config: ChildConfig, commands: Connection, results: Connection) -> None:
    """Run in a new child process until the parent sends stop or goes away."""
    # The parent decides when children stop: a Ctrl-C or a SIGTERM sent to
    # the whole process group must not kill tasks before the grace period.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # On a crash in C code, print the Python stack; the exit status still
    # names the signal.
    faulthandler.enable()
    configure_logging(config.log_level, LOG_FORMAT)
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    install_capture_handler()

    app = import_app(config.app_path)
    app.configure(url=config.url, token=config.token)
    executor = ChildExecutor(app, config.concurrency, results)
    executor.start()
    executor.send(("ready", os.getpid()))
    executor.serve(commands)


def import_app(app_path: str) -> Conveyor:
    """Import MODULE:APP; the parent checked the path already."""
    module_name, _, attribute = app_path.partition(":")
    app: Any = importlib.import_module(module_name)
    for part in (attribute or "app").split("."):
        app = getattr(app, part)
    return app


def resident_bytes() -> int:
    """Return this process's resident memory, or its peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # ru_maxrss is in KiB on Linux and in bytes on macOS.
        return peak if sys.platform == "darwin" else peak * 1024


class ChildRunControl:
    """A run's control inside a child: its progress goes to the parent over the pipe.

    The parent kills the child to cancel a run, so `cancelled` stays False.
    """

    def __init__(self, send: Callable[[tuple[Any, ...]], None], unit_id: int, index: int) -> None:
        self._send = send
        self._unit_id = unit_id
        self._index = index
        self._lock = threading.Lock()
        self._pending: tuple[float, str | None] | None = None
        self._sent_at = 0.0
        self.cancelled = False
        self.in_call = False
        self.logs: LogCapture | None = None

    def report_progress(self, fraction: float, text: str | None) -> None:
        with self._lock:
            self._pending = (fraction, text)
            now = time.monotonic()
            if now - self._sent_at < PIPE_PROGRESS_INTERVAL_S:
                return
            self._sent_at = now
        self.flush()

    def flush(self) -> None:
        """Send the progress not sent yet, if any."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._send(("progress", self._unit_id, self._index, *pending))


class ChildExecutor:
    """Threads for sync units and an event loop for async ones, inside a child."""

    def __init__(self, app: Conveyor, concurrency: int, results: Connection) -> None:
        self._app = app
        self._results = results
        self._send_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[tuple[int, Task, list[TaskRun], list[str | None]]] = (
            queue.SimpleQueue()
        )
        self._slots_lock = threading.Lock()
        self._slots: dict[int, CallSlot] = {}
        self._early_interrupts: set[int] = set()
        self._threads = [
            threading.Thread(target=self._serve_sync, name=f"conveyor-task-{i}", daemon=True)
            for i in range(concurrency)
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        if any(task.is_async for task in app.tasks.values()):
            self._loop = asyncio.new_event_loop()
            self._threads.append(
                threading.Thread(target=self._loop.run_forever, name="conveyor-async-tasks", daemon=True)
            )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def send(self, message: tuple[Any, ...]) -> None:
        """Send one message to the parent; exit at once if the parent is gone."""
        try:
            with self._send_lock:
                self._results.send(message)
        except OSError:
            os._exit(1)

    def serve(self, commands: Connection) -> None:
        """Read the parent's commands until stop, or exit when the parent is gone."""
        while True:
            try:
                message = commands.recv()
            except (EOFError, OSError):
                logger.warning("The worker process is gone, so this child process exits now")
                logging.shutdown()
                os._exit(1)
            kind = message[0]
            if kind == "run":
                self._start_unit(*message[1:])
            elif kind == "interrupt":
                self._interrupt(message[1])
            elif kind == "stop":
                return

    def _start_unit(
        self, unit_id: int, task_name: str, runs: list[TaskRun], receipts: list[str | None]
    ) -> None:
        task = self._app.tasks.get(task_name)
        if task is None:
            error = LookupError(f"unknown task {task_name!r} in the worker child process")
            self._send_done(unit_id, None, runs, [ItemResult(error=error) for _ in runs], 0.0)
            return
        for index, run in enumerate(runs):
            run.control = ChildRunControl(self.send, unit_id, index)
        if task.is_async and self._loop is not None:
            coroutine = self._run_async(unit_id, task, runs, receipts)
            asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        else:
            self._inbox.put((unit_id, task, runs, receipts))

    def _recorder(self, receipts: list[str | None]) -> Callable[..., None] | None:
        return make_recorder(self._app.client, receipts)

    def _interrupt(self, unit_id: int) -> None:
        with self._slots_lock:
            slot = self._slots.get(unit_id)
            if slot is None:
                self._early_interrupts.add(unit_id)
                return
        slot.interrupt(unit_id)

    def _serve_sync(self) -> None:
        slot = CallSlot()
        while True:
            unit_id, task, runs, receipts = self._inbox.get()
            slot.prepare([unit_id])
            with self._slots_lock:
                self._slots[unit_id] = slot
                interrupted = unit_id in self._early_interrupts
                self._early_interrupts.discard(unit_id)
            if interrupted:
                slot.interrupt(unit_id)
            try:
                results, duration_ms = run_sync_unit(task, runs, slot, self._recorder(receipts))
            except Exception as exc:  # the parent must hear back, or the slot stays taken
                logger.exception("Running task %s failed in the worker child process", task.name)
                results, duration_ms = [ItemResult(error=exc) for _ in runs], 0.0
            finally:
                with self._slots_lock:
                    del self._slots[unit_id]
            self._send_done(unit_id, task, runs, results, duration_ms)

    async def _run_async(
        self, unit_id: int, task: Task, runs: list[TaskRun], receipts: list[str | None]
    ) -> None:
        results, duration_ms = await run_async_unit(task, runs, self._recorder(receipts))
        self._send_done(unit_id, task, runs, results, duration_ms)

    def _send_done(
        self,
        unit_id: int,
        task: Task | None,
        runs: list[TaskRun],
        results: list[ItemResult],
        duration_ms: float,
    ) -> None:
        """Send each run's last progress, then the unit's results and log text."""
        logs = None
        for run in runs:
            control = run.control
            if isinstance(control, ChildRunControl):
                control.flush()
                if control.logs is not None:
                    logs = control.logs.text()
        items = [_wire_item(task, result) for result in results]
        self.send(("done", unit_id, items, duration_ms, resident_bytes(), logs))


def _wire_item(task: Task | None, result: ItemResult) -> tuple[Any, ...]:
    """Encode a result for the pipe; an exception travels as its text."""
    exc = result.error
    if exc is None:
        return ("ok", result.value)
    text = ""
    if not isinstance(exc, (Reject, RetryAfter, TaskTimeout)):
        text = "".join(traceback.format_exception(exc))
    retry_after_s = requested_retry_after_s(exc)
    return ("error", describe_error(exc), is_permanent(task, exc), text, retry_after_s)
