"""Jobs (one leased message each), running them, and the outcome to report.

A job's state moves QUEUED -> RUNNING -> DONE; registry.py makes each move.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..errors import Reject, TaskTimeout
from ..models import Message
from ..policy import retry_delay_s
from ..settings import QueueSettings
from ..tasks.serialization import TaskBody, check_result
from ..tasks.task import Task

QUEUED = "queued"
RUNNING = "running"
DONE = "done"

ACK = "ack"
NACK = "nack"
RELEASE = "release"

MAX_ERROR_CHARS = 2000


class ResultNotJSON(TypeError):
    """A task returned a value that is not JSON; retrying cannot fix that."""


class Job:
    """One leased message and the state of its run.

    `task` is None when the body names no task of this app; `invalid` is
    the reason when the body is not a task call at all. Times are
    time.monotonic() seconds.
    """

    __slots__ = (
        "attempt",
        "call",
        "deadline",
        "invalid",
        "lease_until",
        "max_attempts",
        "message_id",
        "queue",
        "receipt",
        "started_at",
        "state",
        "task",
        "task_name",
        "touch_at",
    )

    def __init__(
        self,
        message: Message,
        task: Task | None,
        call: TaskBody | None,
        invalid: str | None,
        max_attempts: int,
        lease_until: float,
        touch_at: float,
    ) -> None:
        self.message_id = message.id
        self.queue = message.queue
        self.receipt: str = message.receipt or ""
        self.attempt = message.receive_count
        self.max_attempts = max_attempts
        self.task_name = call.task_name if call is not None else "(invalid)"
        self.task = task
        self.call = call
        self.invalid = invalid
        self.state = QUEUED
        self.lease_until = lease_until
        self.touch_at = touch_at
        self.started_at = 0.0
        self.deadline: float | None = None


class Outcome:
    """The ack, nack or release entry to send for a finished job.

    `error` is the text sent as the message's last error; `exc` is kept
    for the log's traceback.
    """

    __slots__ = ("delay_s", "duration_ms", "entry", "error", "exc", "job", "kind", "permanent")

    def __init__(
        self,
        job: Job,
        kind: str,
        entry: dict[str, Any],
        duration_ms: float = 0.0,
        error: str | None = None,
        permanent: bool = False,
        delay_s: float | None = None,
        exc: BaseException | None = None,
    ) -> None:
        self.job = job
        self.kind = kind
        self.entry = entry
        self.duration_ms = duration_ms
        self.error = error
        self.permanent = permanent
        self.delay_s = delay_s
        self.exc = exc


# Outcomes -----------------------------------------------------------------


def success(job: Job, value: Any, duration_ms: float) -> Outcome:
    entry: dict[str, Any] = {"id": job.message_id, "receipt": job.receipt}
    ttl_s = job.task.result_ttl_s if job.task is not None else 0.0
    # An ack with a result or status stores it (for a day by default), so a
    # task that keeps no result sends neither.
    if ttl_s > 0:
        entry.update(result=value, result_ttl_s=ttl_s, status="succeeded")
    return Outcome(job, ACK, entry, duration_ms)


def failure(job: Job, exc: BaseException, duration_ms: float, settings: QueueSettings) -> Outcome:
    """Build the nack for a failed attempt: dead at once if permanent, else a retry.

    A retry waits for the task's own backoff if it has one, else the queue's.
    """
    error = describe_error(exc)
    entry: dict[str, Any] = {"id": job.message_id, "receipt": job.receipt, "error": error}
    task = job.task
    if task is not None and task.result_ttl_s > 0:
        # The store keeps this result only if the nack dead-letters the message.
        entry["result_ttl_s"] = task.result_ttl_s
    if is_permanent(job, exc):
        entry["dead"] = True
        return Outcome(job, NACK, entry, duration_ms, error, permanent=True, exc=exc)

    if task is not None and task.backoff is not None:
        delay_s = task.backoff.delay_s(job.attempt)
    else:
        delay_s = retry_delay_s(settings, job.attempt)
    entry["delay_s"] = delay_s
    return Outcome(job, NACK, entry, duration_ms, error, delay_s=delay_s, exc=exc)


def invalid_message(job: Job) -> Outcome:
    """Build the nack that dead-letters a message whose body is not a task call."""
    error = f"invalid task message: {job.invalid}"
    entry = {"id": job.message_id, "receipt": job.receipt, "error": error, "dead": True}
    return Outcome(job, NACK, entry, 0.0, error, permanent=True)


def release(job: Job) -> Outcome:
    entry = {"id": job.message_id, "receipt": job.receipt, "release": True}
    return Outcome(job, RELEASE, entry)


def is_permanent(job: Job, exc: BaseException) -> bool:
    if isinstance(exc, (Reject, ResultNotJSON)):
        return True
    return job.task is not None and isinstance(exc, job.task.permanent_errors)


def describe_error(exc: BaseException) -> str:
    """Return `Type: message`, cut to MAX_ERROR_CHARS characters."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure
        text = "(the exception's message could not be formatted)"
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(described) > MAX_ERROR_CHARS:
        described = described[: MAX_ERROR_CHARS - 1] + "…"
    return described


def timeout_error(job: Job) -> TaskTimeout:
    timeout_s = job.task.timeout_s if job.task is not None else None
    return TaskTimeout(f"task {job.task_name} ran longer than its timeout_s of {timeout_s:g} s")


# Running ------------------------------------------------------------------


def run_sync(job: Job, settings: QueueSettings) -> Outcome:
    """Call a sync task's function in this thread and return its outcome."""
    task, call = job.task, job.call
    assert task is not None and call is not None
    started = time.perf_counter()
    try:
        value = task.fn(*call.args, **call.kwargs)
        _check_value(task, value)
    except BaseException as exc:  # noqa: BLE001 - any failure of task code is reported
        return failure(job, exc, _elapsed_ms(started), settings)
    return success(job, value, _elapsed_ms(started))


async def run_async(job: Job, settings: QueueSettings) -> Outcome:
    """Await an async task's coroutine, cancelling it after the task's timeout_s."""
    task, call = job.task, job.call
    assert task is not None and call is not None
    started = time.perf_counter()
    try:
        value = await _await_with_timeout(job, task.fn(*call.args, **call.kwargs))
        _check_value(task, value)
    except BaseException as exc:  # noqa: BLE001 - includes CancelledError, reported as a failure
        return failure(job, exc, _elapsed_ms(started), settings)
    return success(job, value, _elapsed_ms(started))


async def _await_with_timeout(job: Job, coroutine: Any) -> Any:
    timeout_s = job.task.timeout_s if job.task is not None else None
    if timeout_s is None:
        return await coroutine
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            return await coroutine
    except TimeoutError:
        # A TimeoutError that the task raised itself is its own failure.
        if deadline.expired():
            raise timeout_error(job) from None
        raise


def _check_value(task: Task, value: Any) -> None:
    if value is None:
        return
    try:
        check_result(task.name, value)
    except TypeError as exc:
        raise ResultNotJSON(str(exc)) from None


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
