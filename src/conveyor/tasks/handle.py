"""TaskHandle: the status and result of one enqueued task call."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import NotFound, ResultTimeout, TaskError
from ..models import DEAD, DELAYED, READY, RESERVED

if TYPE_CHECKING:
    from .app import Conveyor

# Task statuses as TaskHandle.status reports them.
SUCCEEDED = "succeeded"
FAILED = "failed"
RUNNING = "running"
UNKNOWN = "unknown"
STATUSES = (DELAYED, READY, RUNNING, SUCCEEDED, FAILED, UNKNOWN)

_STATUS_OF_STATE = {DELAYED: DELAYED, READY: READY, RESERVED: RUNNING, DEAD: FAILED}

FIRST_POLL_INTERVAL_S = 0.01
MAX_POLL_INTERVAL_S = 0.5


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
        """Return delayed, ready, running, succeeded, failed or unknown.

        `failed` means the message is dead in a DLQ (or its dead result is
        still kept after the DLQ dropped it). `unknown` means neither the
        message nor its result is stored: the id is wrong, the result's
        time to live passed, or the task keeps no result (result_ttl_s=0).
        """
        return self._poll()[0]

    def result(self, timeout_s: float | None = 30.0) -> Any:
        """Wait for the task to finish and return its return value.

        Raises TaskError with the task's last error if it ended in the DLQ,
        ResultTimeout if it has not finished within timeout_s seconds (None
        waits without limit), and NotFound if neither the message nor its
        result is stored.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        interval_s = FIRST_POLL_INTERVAL_S
        while True:
            status, value, error = self._poll()
            if status == SUCCEEDED:
                return value
            if status == FAILED:
                raise TaskError(f"{self._label()} failed: {error}")
            if status == UNKNOWN:
                raise NotFound(
                    f"no message or result with id {self.id!r} is stored: the id is "
                    "wrong, its result expired, or the task keeps no result "
                    "(result_ttl_s=0)"
                )
            interval_s = self._sleep_before_poll(deadline, interval_s, status)

    def _sleep_before_poll(self, deadline: float | None, interval_s: float, status: str) -> float:
        if deadline is not None:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise ResultTimeout(
                    f"{self._label()} is still {status}; wait "
                    "longer with result(timeout_s=...) or check status() later"
                )
            interval_s = min(interval_s, remaining_s)
        time.sleep(interval_s)
        return min(interval_s * 2, MAX_POLL_INTERVAL_S)

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
        return FAILED, None, result.error
