"""The exception tree shared by the engine, the server and the SDK.

Every class has an HTTP status and a problem type, so the server maps each
error to one RFC 9457 response and the HTTP client maps it back to the same
class. A message quotes the bad value and states how to fix it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

# Problem types are URNs: names, not addresses, so nothing suggests a page to
# fetch. The suffix is the class's `code`.
PROBLEM_BASE = "urn:conveyor:problem:"
# The maximum delay of a RetryAfter or of a nack's retry_after_s.
MAX_RETRY_AFTER_S = 86_400.0


class ConveyorError(Exception):
    """Base class of every error Conveyor raises on purpose."""

    status = 500
    code = "internal-error"
    title = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or (self.__doc__ or self.title).strip()
        self.extra = extra
        super().__init__(self.detail)

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.code

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """Build the RFC 9457 problem document for this error."""
        problem: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            problem["instance"] = instance
        problem.update(self.extra)
        return problem


class ValidationError(ConveyorError):
    """A request, setting or argument is invalid; nothing was changed."""

    status = 422
    code = "invalid-request"
    title = "Invalid request"


class PayloadTooLarge(ConveyorError):
    """A message or request body is larger than the configured limit."""

    status = 413
    code = "payload-too-large"
    title = "Payload too large"


class NotFound(ConveyorError):
    """The named queue, message or result does not exist."""

    status = 404
    code = "not-found"
    title = "Not found"


class QueueNotFound(NotFound):
    """The named queue does not exist; create it first."""

    code = "queue-not-found"
    title = "Queue not found"


class MessageNotFound(NotFound):
    """No message with this id is stored in the queue."""

    code = "message-not-found"
    title = "Message not found"


class RedriveJobNotFound(NotFound):
    """No redrive job with this id is stored."""

    code = "redrive-job-not-found"
    title = "Redrive job not found"


class ScheduleNotFound(NotFound):
    """No schedule with this name is stored."""

    code = "schedule-not-found"
    title = "Schedule not found"


class ScheduleAlreadyExists(ConveyorError):
    """A schedule with this name exists already."""

    status = 409
    code = "schedule-exists"
    title = "Schedule already exists"
class WorkflowNotFound(NotFound):
    """No workflow with this id is stored."""

    code = "workflow-not-found"
    title = "Workflow not found"


class WorkflowNotRetryable(ConveyorError):
    """The workflow has no step whose post failed, so a retry has nothing to post."""

    status = 409
    code = "workflow-not-retryable"
    title = "Workflow not retryable"


class QueueAlreadyExists(ConveyorError):
    """A queue with this name exists already."""

    status = 409
    code = "queue-exists"
    title = "Queue already exists"


class StaleReceipt(ConveyorError):
    """The receipt is not the message's current lease.

    The lease expired or the message was acked, nacked or reserved again, so
    the caller no longer owns it and the request changed nothing.
    """

    status = 409
    code = "stale-receipt"
    title = "Stale receipt"


class MessageFinished(ConveyorError):
    """The message finished already (acked, dead or cancelled), so it cannot be cancelled."""

    status = 409
    code = "message-finished"
    title = "Message finished"


class Unauthorized(ConveyorError):
    """The request has no valid bearer token."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class StoreUnavailable(ConveyorError):
    """The store could not complete the operation; retry later."""

    status = 503
    code = "store-unavailable"
    title = "Store unavailable"


class TransportError(ConveyorError):
    """The SDK could not reach the server or could not parse its response."""

    status = 502
    code = "transport-error"
    title = "Transport error"


class TaskError(ConveyorError):
    """A task failed; the message carries the task's last error text."""

    status = 500
    code = "task-failed"
    title = "Task failed"


class TaskCancelled(TaskError):
    """A task was cancelled before it finished, so it has no result."""

    code = "task-cancelled"
    title = "Task cancelled"


class ResultTimeout(ConveyorError):
    """A task's result was not ready within the requested time."""

    status = 504
    code = "result-timeout"
    title = "Result timeout"


class Reject(Exception):
    """Raised by a task to fail permanently: the message goes to the DLQ now.

    It is not a ConveyorError because task code raises it, not Conveyor.
    """


class RetryAfter(Exception):
    """Raised by a task to try again later without using up an attempt.

    The worker nacks the message with `retry_after_s`: it comes back after
    `seconds` (a number, or a timedelta, from more than 0 up to one day),
    its attempt is given back, and its queue's circuit breaker counts a
    failure. Raise it when the service a task calls pushes back, such as
    an HTTP 429 or 503 with a Retry-After header. It is not a ConveyorError
    because task code raises it, not Conveyor.
    """

    def __init__(self, seconds: float | timedelta, reason: str | None = None) -> None:
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(
                f"RetryAfter takes seconds as a number or a timedelta, got {seconds!r}"
            )
        if not 0 < seconds <= MAX_RETRY_AFTER_S:
            raise ValueError(
                f"invalid RetryAfter delay {seconds!r}: use more than 0 and at most "
                f"{MAX_RETRY_AFTER_S:g} seconds (one day)"
            )
        self.seconds = float(seconds)
        super().__init__(reason or f"retry after {self.seconds:g} s")


class TaskTimeout(Exception):
    """Raised when a task runs longer than its timeout."""


ERROR_CLASSES: dict[str, type[ConveyorError]] = {
    cls.code: cls
    for cls in (
        ConveyorError,
        ValidationError,
        PayloadTooLarge,
        NotFound,
        QueueNotFound,
        MessageNotFound,
        RedriveJobNotFound,
        WorkflowNotFound,
        QueueAlreadyExists,
        StaleReceipt,
        MessageFinished,
        ScheduleNotFound,
        ScheduleAlreadyExists,
        Unauthorized,
        StoreUnavailable,
        TransportError,
        TaskError,
        TaskCancelled,
        ResultTimeout,
    )
}


def error_from_problem(problem: dict[str, Any]) -> ConveyorError:
    """Rebuild the exception a server reported as a problem document."""
    type_uri = str(problem.get("type", ""))
    code = type_uri.removeprefix(PROBLEM_BASE)
    cls = ERROR_CLASSES.get(code, ConveyorError)
    known = {"type", "title", "status", "detail", "instance"}
    extra = {k: v for k, v in problem.items() if k not in known}
    return cls(str(problem.get("detail") or cls.title), **extra)
