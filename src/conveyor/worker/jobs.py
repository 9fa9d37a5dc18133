"""Jobs (one leased message each) and the outcome to report for them.

A job's state moves QUEUED -> RUNNING -> DONE; registry.py makes each move.
execution.py runs the task functions.
"""

from __future__ import annotations

from typing import Any

from ..errors import Reject, RetryAfter, TaskTimeout
from ..models import Message
from ..policy import retry_delay_s
from ..settings import QueueSettings
from ..tasks.hooks import TaskRun
from ..tasks.serialization import TaskBody
from ..tasks.task import Task
from ..workflows.compiler import WORKFLOW_HEADER
from .run_control import RunControl

QUEUED = "queued"
RUNNING = "running"
DONE = "done"

ACK = "ack"
NACK = "nack"
RELEASE = "release"
# A nack with `cancelled`: the message finishes as cancelled.
CANCEL = "cancel"

MAX_ERROR_CHARS = 2000


class ResultNotJSON(TypeError):
    """A task returned a value that is not JSON; retrying cannot fix that."""


class RemoteTaskError(Exception):
    """A task failed in a worker child process; the exception stayed there.

    `description` is the original `Type: message` text, and `permanent` is
    true when the failure skips retries. `traceback_text` is the child's
    formatted traceback, or "" when none is worth logging. `retry_after_s`
    is the delay of a RetryAfter, or None for any other exception.
    """

    def __init__(
        self,
        description: str,
        permanent: bool,
        traceback_text: str,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.permanent = permanent
        self.traceback_text = traceback_text
        self.retry_after_s = retry_after_s


class Job:
    """One leased message and the state of its run.

    `task` is None when the body names no task of this app; `invalid` is
    the reason when the body is not a task call at all. `run` describes the
    attempt for hooks and child processes. `executor` is where the job
    runs (a thread's call slot or a child process), which can interrupt it
    at its timeout. `control` carries its cancel flag, progress and logs.
    `idempotent` is true for a message with an idempotency key, and
    `completed` when it arrived with a completion record of an earlier
    attempt. Times are time.monotonic() seconds.
    """

    __slots__ = (
        "attempt",
        "call",
        "completed",
        "completed_result",
        "control",
        "deadline",
        "executor",
        "idempotent",
        "invalid",
        "lease_until",
        "max_attempts",
        "message_id",
        "queue",
        "receipt",
        "run",
        "started_at",
        "state",
        "task",
        "task_name",
        "touch_at",
        "workflow_step",
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
        self.executor: Any = None
        self.control = RunControl()
        self.idempotent = message.idempotency_key is not None
        self.completed = message.completed_at is not None
        self.completed_result = message.completed_result
        # A workflow step's ack always carries its result, which the store
        # keeps in the step and passes to the steps after it.
        self.workflow_step = WORKFLOW_HEADER in (message.headers or {})
        self.run: TaskRun | None = None
        if call is not None:
            self.run = TaskRun(
                call.task_name, message.id, message.queue, message.receive_count,
                max_attempts, call.args, call.kwargs, message.headers or {},
                control=self.control,
            )


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


def runs_of(jobs: list[Job]) -> list[TaskRun]:
    """Return the runs of jobs that have a task call."""
    runs = [job.run for job in jobs if job.run is not None]
    assert len(runs) == len(jobs), "a job without a task call cannot run"
    return runs


# Outcomes -----------------------------------------------------------------


def success(job: Job, value: Any, duration_ms: float) -> Outcome:
    entry: dict[str, Any] = {"id": job.message_id, "receipt": job.receipt}
    ttl_s = job.task.result_ttl_s if job.task is not None else 0.0
    # An ack with a result or status stores it (for a day by default), so a
    # task that keeps no result sends neither.
    if ttl_s > 0:
        entry.update(result=value, result_ttl_s=ttl_s, status="succeeded")
    elif job.workflow_step:
        entry["result"] = value
    entry.update(job.control.final_report())
    return Outcome(job, ACK, entry, duration_ms)


def recorded_success(job: Job) -> Outcome:
    """Build the ack of a message whose earlier attempt recorded its completion."""
    return success(job, job.completed_result, 0.0)


def cancelled(job: Job, duration_ms: float) -> Outcome:
    """Build the nack that finishes a job as cancelled: no retry, no DLQ."""
    entry: dict[str, Any] = {
        "id": job.message_id,
        "receipt": job.receipt,
        "cancelled": True,
        "error": "cancelled by request while it ran",
        # 0 keeps no result, as the task asked; the store's default is a day.
        "result_ttl_s": job.task.result_ttl_s if job.task is not None else 0.0,
    }
    entry.update(job.control.final_report())
    return Outcome(job, CANCEL, entry, duration_ms)


def failure(job: Job, exc: BaseException, duration_ms: float, settings: QueueSettings) -> Outcome:
    """Build the nack for a failed attempt: dead at once if permanent, else a retry.

    A retry waits for the task's own backoff if it has one, else the queue's.
    """
    error = describe_error(exc)
    entry: dict[str, Any] = {"id": job.message_id, "receipt": job.receipt, "error": error}
    entry.update(job.control.final_report())
    task = job.task
    if task is not None and task.result_ttl_s > 0:
        # The store keeps this result only if the nack dead-letters the message.
        entry["result_ttl_s"] = task.result_ttl_s
    retry_after_s = requested_retry_after_s(exc)
    if retry_after_s is not None:
        # The store gives the attempt back, so no backoff applies.
        entry["retry_after_s"] = retry_after_s
        return Outcome(job, NACK, entry, duration_ms, error, delay_s=retry_after_s, exc=exc)
    if is_permanent(task, exc):
        entry["dead"] = True
        return Outcome(job, NACK, entry, duration_ms, error, permanent=True, exc=exc)

    if task is not None and task.backoff is not None:
        delay_s = task.backoff.delay_s(job.attempt)
    else:
        delay_s = retry_delay_s(settings, job.attempt)
    entry["delay_s"] = delay_s
    return Outcome(job, NACK, entry, duration_ms, error, delay_s=delay_s, exc=exc)


def result_outcome(
    job: Job, value: Any, error: BaseException | None, duration_ms: float,
    settings: QueueSettings,
) -> Outcome:
    """Build the ack for a run that returned value, or the nack when error is set.

    A job whose cancel arrived while it ran is cancelled, whatever it returned.
    """
    if job.control.cancelled:
        return cancelled(job, duration_ms)
    if error is None:
        return success(job, value, duration_ms)
    return failure(job, error, duration_ms, settings)


def invalid_message(job: Job) -> Outcome:
    """Build the nack that dead-letters a message whose body is not a task call."""
    error = f"invalid task message: {job.invalid}"
    entry = {"id": job.message_id, "receipt": job.receipt, "error": error, "dead": True}
    return Outcome(job, NACK, entry, 0.0, error, permanent=True)


def release(job: Job) -> Outcome:
    entry = {"id": job.message_id, "receipt": job.receipt, "release": True}
    return Outcome(job, RELEASE, entry)


def requested_retry_after_s(exc: BaseException) -> float | None:
    """Return the delay a task asked for by raising RetryAfter, else None."""
    if isinstance(exc, RemoteTaskError):
        return exc.retry_after_s
    if isinstance(exc, RetryAfter):
        return exc.seconds
    return None


def is_permanent(task: Task | None, exc: BaseException) -> bool:
    """Tell whether a failure skips retries: Reject, a non-JSON result or a listed error."""
    if isinstance(exc, RemoteTaskError):
        return exc.permanent
    if isinstance(exc, (Reject, ResultNotJSON)):
        return True
    return task is not None and isinstance(exc, task.permanent_errors)


def describe_error(exc: BaseException) -> str:
    """Return `Type: message`, cut to MAX_ERROR_CHARS characters."""
    if isinstance(exc, RemoteTaskError):
        return exc.description
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure
        text = "(the exception's message could not be formatted)"
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if len(described) > MAX_ERROR_CHARS:
        described = described[: MAX_ERROR_CHARS - 1] + "…"
    return described


def timeout_error(task: Task) -> TaskTimeout:
    """Build the error of an attempt that ran past the task's soft timeout_s."""
    return TaskTimeout(f"task {task.name} ran longer than its timeout_s of {task.timeout_s:g} s")
