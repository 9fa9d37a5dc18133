"""Tasks for the workers of test_postgres_cluster.py.

Each task appends one line naming the message it ran to the file that
CLUSTER_RECORD names. Every worker process opens that file with O_APPEND and
writes each line with one write() call. POSIX requires such a write to move
to the end of the file and write with no other change in between, so lines
of different workers never overlap and the file lists runs in the order
they wrote. A line is in the page cache once write() returns, so it
survives a SIGKILL of the worker without an fsync.
"""

from __future__ import annotations

import os
import threading

from conveyor import Conveyor

app = Conveyor()

_record_fd: int | None = None
_record_lock = threading.Lock()


def _append(line: str) -> None:
    global _record_fd
    with _record_lock:
        if _record_fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            _record_fd = os.open(os.environ["CLUSTER_RECORD"], flags, 0o644)
    os.write(_record_fd, line.encode())


@app.task(queue="ordered", name="record_fifo")
def record_fifo(group: str, seq: int) -> None:
    _append(f"fifo {group} {seq}\n")


@app.task(queue="plain", name="record_plain")
def record_plain(key: str) -> None:
    _append(f"plain {key}\n")
