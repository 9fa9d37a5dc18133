"""TaskHandle: the status and result of one enqueued task call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import NotFound, TaskCancelled, TaskError
from ..models import DEAD, DELAYED, READY, RESERVED, AttemptLog
from ..validation import MAX_ATTEMPT_NUMBER, check_int
from .polling import ResultPoller

if TYPE_CHECKING:
    from .app import Conveyor

# Task statuses as TaskHandle.status reports them.
SUCCEEDED = "succeeded"
FAILED = "failed"
RUNNING = "running"
CANCELLED = "cancelled"
UNKNOWN = "unknown"
STATUSES = (DELAYED, READY, RUNNING, SUCCEEDED, FAILED, CANCELLED, UNKNOWN)

_STATUS_OF_STATE = {DELAYED: DELAYED, READY: READY, RESERVED: RUNNING, DEAD: FAILED}

FIRST_POLL_INTERVAL_S = 0.01
MAX_POLL_INTERVAL_S = 0.5


@dataclass(frozen=True)
class TaskProgress:
    """A task's last reported progress.

    `fraction` is from 0 to 1. `updated_at` is when it was reported (Unix
    seconds), or None once the task finished and only its result keeps it.
    """

    fraction: float
    text: str | None
    updated_at: float | None


class TaskHandle:
    """A reference to one posted task message, by id.

    `deduplicated` is true when the post matched an earlier dedup_id and
    this handle points at that earlier message.
    """

    def __init__(
        self,
        app: Conveyor,
        id: str,
        queue: str | None = None,
        task_name: str | None = None,
        deduplicated: bool = False,
    ) -> None:
        self.app = app
        self.id = id
        self.queue = queue
        self.task_name = task_name
        self.deduplicated = deduplicated

    def __repr__(self) -> str:
        return f"<TaskHandle {self.task_name or 'task'} {self.id}>"

    def status(self) -> str:
        """Return delayed, ready, running, succeeded, failed, cancelled or unknown.

        `failed` means the message is dead in a DLQ (or its dead result is
        still kept after the DLQ dropped it). `unknown` means neither the
        message nor its result is stored: the id is wrong, the result's
        time to live passed, or the task keeps no result (result_ttl_s=0).
        A task whose cancel was requested stays `running` until its worker
        stops it.
        """
        return self._poll()[0]

    def cancel(self) -> str:
        """Cancel the task and return `cancelled` or `cancel-requested`.

        A task that has not started is removed at once (`cancelled`) and
        never runs. A running one is flagged (`cancel-requested`): its
        worker learns of it within about a second and stops it, and the
        task ends with status `cancelled`. Raises MessageFinished if the
        task finished already (succeeded, failed or cancelled) and NotFound
        for an unknown id.
        """
        return self.app.client.cancel(self.id, self._result_ttl_s()).outcome

    def progress(self) -> TaskProgress | None:
        """Return the task's last reported progress, or None if it reported none."""
        client = self.app.client
        try:
            message = client.get_message(self.id)
        except NotFound:
            message = None
        if message is not None:
            if message.progress is None:
                return None
            return TaskProgress(message.progress, message.progress_text, message.progress_at)
        result = client.get_result(self.id)
        if result is None or result.progress is None:
            return None
        return TaskProgress(result.progress, result.progress_text, None)

    def logs(self, attempt: int | None = None) -> list[AttemptLog]:
        """Return the logs the task's attempts captured, or those of one attempt.

        Each AttemptLog has `attempt` (from 1) and `text`. They are kept as
        long as the task's result; an empty list means none are stored.
        Raises ValidationError for an attempt below 1, on either transport.
        """
        if attempt is not None:
            check_int("attempt", attempt, 1, MAX_ATTEMPT_NUMBER)
        return self.app.client.get_logs(self.id, attempt)

    def result(self, timeout_s: float | None = 30.0) -> Any:
        """Wait for the task to finish and return its return value.

        Raises TaskError with the task's last error if it ended in the DLQ,
        TaskCancelled (a TaskError) if it was cancelled, ResultTimeout if it
        has not finished within timeout_s seconds (None waits without
        limit), and NotFound if neither the message nor its result is stored.
        A read that fails with TransportError or StoreUnavailable (a server
        restarting) is retried until the deadline, and the last such error
        is raised if reads still fail then.
        """
        poller = ResultPoller(
            timeout_s, self._label(), FIRST_POLL_INTERVAL_S, MAX_POLL_INTERVAL_S
        )
        while True:
            status, value, error = poller.read(self._poll)
            if status == SUCCEEDED:
                return value
            if status == FAILED:
                raise TaskError(f"{self._label()} failed: {error}")
            if status == CANCELLED:
                raise TaskCancelled(f"{self._label()} was cancelled: {error}")
            if status == UNKNOWN:
                raise NotFound(
                    f"no message or result with id {self.id!r} is stored: the id is "
                    "wrong, its result expired, or the task keeps no result "
                    "(result_ttl_s=0)"
                )
            poller.wait(status)

    def _result_ttl_s(self) -> float | None:
        """Return how long the task keeps results, when this app defines the task."""
        task = self.app.tasks.get(self.task_name) if self.task_name else None
        return None if task is None else task.result_ttl_s

    def _label(self) -> str:
        if self.task_name:
            return f"task {self.task_name} {self.id}"
        return f"task {self.id}"

    def _poll(self) -> tuple[str, Any, str | None]:
        """Return (status, value, error) from the message, else its stored result.

        The message is read first: a redriven message is live again even
        though its dead result may still be stored.
        """
        client = self.app.client
        try:
            message = client.get_message(self.id)
        except NotFound:
            message = None
        if message is not None:
            return _STATUS_OF_STATE.get(message.state, UNKNOWN), None, message.last_error

        result = client.get_result(self.id)
        if result is None:
            return UNKNOWN, None, None
        if result.status == SUCCEEDED:
            return SUCCEEDED, result.value, None
        if result.status == CANCELLED:
            return CANCELLED, None, result.error
        return FAILED, None, result.error
