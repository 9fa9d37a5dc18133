"""Tasks for test_worker_processes.py: tasks that crash, hang in C code,
leak memory or run past their soft timeout, one queue per case."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import time

from task_record import record

from conveyor import Conveyor, TaskTimeout

app = Conveyor()

FAST_RETRY = {"base_s": 0.1, "jitter": False}
LIBC = ctypes.CDLL(ctypes.util.find_library("c"))
LEAKED: list[bytes] = []


@app.task(queue="proc-pid", name="proc.pid")
def pid(index: int) -> int:
    return os.getpid()


@app.task(queue="proc-crash", name="proc.crash", max_attempts=1)
def crash() -> None:
    record("crash")
    ctypes.string_at(0)  # reads address 0: SIGSEGV in this thread


@app.task(queue="proc-crash", name="proc.add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(
    queue="proc-stuck", name="proc.stuck", hard_timeout_s=1.0, max_attempts=2,
    backoff=FAST_RETRY,
)
def stuck() -> None:
    record("stuck")
    # pause() blocks in C until a signal arrives, so TaskTimeout cannot stop it.
    LIBC.pause()


@app.task(queue="proc-stuck", name="proc.after_stuck")
def after_stuck() -> int:
    return os.getpid()


@app.task(queue="proc-leak", name="proc.leak")
def leak(mib: int) -> int:
    # Multiplying writes every byte, so the pages count as resident memory.
    LEAKED.append(b"\x01" * (mib * 1024 * 1024))
    return os.getpid()


@app.task(queue="proc-soft", name="proc.soft", timeout_s=0.5, max_attempts=1)
def soft(marker: str) -> None:
    try:
        while True:
            time.sleep(0.01)
    except TaskTimeout:
        record("cleanup", marker=marker)
        raise


@app.task(queue="proc-soft", name="proc.soft_async", timeout_s=0.5, max_attempts=1)
async def soft_async(marker: str) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        record("cleanup", marker=marker)
        raise


@app.task(queue="proc-lease", name="proc.slow_pid", backoff=FAST_RETRY)
def slow_pid(seconds: float) -> int:
    record("start")
    time.sleep(seconds)
    return os.getpid()
