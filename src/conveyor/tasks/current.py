"""The attempt that the calling code runs in: `conveyor.current_run()`.

The worker sets it around each task call, in a context variable, so it
follows the task's thread or asyncio task (and asyncio tasks it starts)
but not threads the task starts itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

from .hooks import TaskRun

_current: ContextVar[TaskRun | None] = ContextVar("conveyor_current_run", default=None)


def current_run() -> TaskRun | None:
    """Return the TaskRun of the task being run, or None outside a worker's task call.

    A batch task gets None, because one call serves several messages.
    Use `run.progress(fraction, text)` and `run.cancelled` on the result.
    """
    return _current.get()


@contextlib.contextmanager
def running(run: TaskRun | None) -> Iterator[None]:
    """Make `run` the current run for the code inside the block."""
    token = _current.set(run)
    try:
        yield
    finally:
        _current.reset(token)
