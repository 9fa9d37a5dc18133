"""The attempt that the calling code runs in: `conveyor.current_run()`.

The worker sets it around each task call, in a context variable, so it
follows the task's thread or asyncio task (and asyncio tasks it starts)
but not threads the task starts itself.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from .hooks import TaskRun

_current: ContextVar[TaskRun | None] = ContextVar("conveyor_current_run", default=None)


def current_run() -> TaskRun | None:
    """Return the TaskRun of the task being run, or None outside a worker's task call.

    A batch task gets None, because one call serves several messages.
    Use `run.progress(fraction, text)` and `run.cancelled` on the result.
    """
    return _current.get()


class running:  # noqa: N801 - used like a function: `with running(run):`
    """Make `run` the current run for the code inside the block.

    A class rather than a generator-based context manager, because the
    worker enters one around every task call.
    """

    __slots__ = ("_run", "_token")

    def __init__(self, run: TaskRun | None) -> None:
        self._run = run
        self._token: Token[TaskRun | None] | None = None

    def __enter__(self) -> None:
        self._token = _current.set(self._run)

    def __exit__(self, *exc_info: object) -> None:
        assert self._token is not None
        _current.reset(self._token)
