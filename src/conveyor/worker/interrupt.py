"""Raising TaskTimeout inside a sync task's thread at its soft timeout.

CPython can raise an exception in another thread through
PyThreadState_SetAsyncExc. The exception arrives at the thread's next
Python bytecode, so it stops Python code, but not a long C call (a
blocking read, time.sleep, a big regular expression): those see it only
once the call returns. A hard timeout in a child process covers those.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any

from ..errors import TaskTimeout


class TaskInterrupted(TaskTimeout):
    """Raised inside a sync task when it runs past its timeout_s."""

    def __init__(self, *args: Any) -> None:
        # The thread that raises it can only pass the class, not an instance.
        super().__init__(*(args or ("the task ran longer than its timeout_s",)))


def _set_async_exc(thread_id: int, exc_class: type[BaseException] | None) -> None:
    """Schedule exc_class in a thread, or clear a scheduled one with None."""
    exc = ctypes.py_object(exc_class) if exc_class is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), exc)


class CallSlot:
    """One runner thread's current task call, which a timeout may interrupt.

    `prepare(members)` names what the next call runs: jobs, or unit ids in
    a child process. `interrupt(member)` raises TaskInterrupted in the
    call if it still runs that member. An interrupt that comes before the
    call starts keeps it from starting. One that comes as the call returns
    is dropped, so the exception never lands in the runner's own code.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_id = 0
        self._members: list[Any] = []
        self._in_call = False
        self.interrupted = False

    def prepare(self, members: list[Any]) -> None:
        with self._lock:
            self._members = members
            self.interrupted = False

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call fn in this thread; raise TaskInterrupted if interrupted."""
        with self._lock:
            if self.interrupted:
                raise TaskInterrupted()
            self._thread_id = threading.get_ident()
            self._in_call = True
        try:
            return fn(*args)
        finally:
            self._leave()

    def _leave(self) -> None:
        with self._lock:
            self._in_call = False
            self._members = []
            if self.interrupted:
                _set_async_exc(self._thread_id, None)

    def interrupt(self, member: Any) -> bool:
        """Interrupt the call that runs member, once; return whether it was interrupted."""
        with self._lock:
            if self.interrupted or member not in self._members:
                return False
            self.interrupted = True
            if self._in_call:
                _set_async_exc(self._thread_id, TaskInterrupted)
            return True
