"""record(): the task modules' way to tell a test what happened.

Each call appends one JSON line to the file named by TASKS_RECORD with a
single write, so lines from the test process, the worker and its child
processes do not mix.
"""

from __future__ import annotations

import json
import os
from typing import Any


def record(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n"
    fd = os.open(os.environ["TASKS_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def first_time(name: str) -> bool:
    """Return True the first time a name is passed in this test, across processes."""
    marker = os.environ["TASKS_RECORD"] + f".{name}.seen"
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    return True
