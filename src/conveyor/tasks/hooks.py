"""Task hooks: functions the app calls around enqueueing and running tasks.

| event | called with | where |
| --- | --- | --- |
| before_enqueue | task, message | the enqueuing process, before the post; `message` is the NewMessage and a hook may set its headers |
| after_enqueue | task, message, handle | the enqueuing process, after the post returned |
| before_run | run | the process and thread (or event loop) that runs the task, just before the function is called |
| after_run | run, result, error | the same place, when the function ends; `error` is None on success |
| on_retry | run, error, delay_s | the worker process, once the queue service confirmed the retry |
| on_dead_letter | run, error | the worker process, once the queue service moved the message to the DLQ |

Hooks of one event run in the order they were added. A hook that raises is
logged with its traceback and skipped, so the enqueue, the task and the
other hooks go on. With no hook registered, firing an event costs one
truth test of an empty list.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ValidationError
from ..reports import MAX_PROGRESS_TEXT, check_progress

logger = logging.getLogger(__name__)

EVENTS = (
    "before_enqueue",
    "after_enqueue",
    "before_run",
    "after_run",
    "on_retry",
    "on_dead_letter",
)


@dataclass(slots=True)
class TaskRun:
    """One attempt of a task message, as hooks and `conveyor.current_run()` see it.

    `attempt` counts deliveries from 1, and `max_attempts` is the message's
    or its queue's limit. `args` and `kwargs` are the decoded call.
    `control` is the worker's link to the running attempt: its cancel flag,
    progress and log capture. It is None outside a worker. It is not
    pickled, so each process attaches its own.
    """

    task_name: str
    message_id: str
    queue: str
    attempt: int
    max_attempts: int
    args: list[Any]
    kwargs: dict[str, Any]
    headers: dict[str, str]
    control: Any = field(default=None, repr=False, compare=False)

    @property
    def cancelled(self) -> bool:
        """True once someone asked to cancel this message while it runs.

        The worker learns of a cancel at its next lease renewal, within
        about a second. A task checks this between steps and returns or
        raises to stop early. In child processes the worker kills the
        child instead, so this stays False there.
        """
        return self.control is not None and self.control.cancelled

    def progress(self, fraction: float, text: str | None = None) -> None:
        """Report how far the attempt is: `fraction` from 0 to 1 and an optional text.

        The worker sends the latest value at most once a second, and always
        the last one with the outcome. Text longer than 1,024 characters is
        cut. Raises ValidationError for a fraction outside 0 to 1. Outside a
        worker it checks the values and does nothing else.
        """
        if text is not None and len(text) > MAX_PROGRESS_TEXT:
            text = text[: MAX_PROGRESS_TEXT - 1] + "…"
        fraction, text = check_progress(fraction, text, f"the progress of task {self.task_name}")
        if self.control is not None:
            self.control.report_progress(fraction, text)

    def __getstate__(self) -> tuple:
        return tuple(getattr(self, name) for name in _PICKLED_FIELDS)

    def __setstate__(self, state: tuple) -> None:
        for name, value in zip(_PICKLED_FIELDS, state):
            setattr(self, name, value)
        self.control = None


_PICKLED_FIELDS = tuple(f.name for f in fields(TaskRun) if f.name != "control")


class Hooks:
    """The hook functions of one app, in one list per event."""

    def __init__(self) -> None:
        self.before_enqueue: list[Callable[..., Any]] = []
        self.after_enqueue: list[Callable[..., Any]] = []
        self.before_run: list[Callable[..., Any]] = []
        self.after_run: list[Callable[..., Any]] = []
        self.on_retry: list[Callable[..., Any]] = []
        self.on_dead_letter: list[Callable[..., Any]] = []

    def add(self, event: str, fn: Callable[..., Any]) -> None:
        """Append fn to an event's hooks; raise ValidationError for a bad event or fn."""
        if event not in EVENTS:
            raise ValidationError(
                f"unknown hook event {event!r}; use one of: {', '.join(EVENTS)}"
            )
        if not callable(fn):
            raise ValidationError(f"hook for {event} must be a function, not {fn!r}")
        getattr(self, event).append(fn)

    def fire(self, event: str, *args: Any) -> None:
        """Call every hook of an event with args, logging and skipping those that raise."""
        for fn in getattr(self, event):
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a broken hook must not break the task
                logger.exception(
                    "Hook %s for %s raised; ignoring it and going on",
                    getattr(fn, "__qualname__", repr(fn)), event,
                )
