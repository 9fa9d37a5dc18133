"""Tasks for test_worker_runs.py: idempotency keys, cancellation, progress
and logs, one queue per case.

Tasks that wait do so until the test creates the file RELEASE_SUFFIX names
next to the record file, or until they are cancelled, and give up after
WAIT_LIMIT_S so that a broken test cannot hang a worker for long.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from typing import Any

from task_record import first_time, record

import conveyor
from conveyor import Conveyor, TaskRun

app = Conveyor()
logger = logging.getLogger("run_tasks")

WAIT_LIMIT_S = 60.0
RELEASE_SUFFIX = ".release"
FAST_RETRY = {"base_s": 0.1, "jitter": False}


def released() -> bool:
    return os.path.exists(os.environ["TASKS_RECORD"] + RELEASE_SUFFIX)


# Idempotency ---------------------------------------------------------------


@app.task(queue="runs-idem", name="runs.double")
def double(value: int) -> int:
    record("body", value=value)
    return value * 2


@app.after_run
def kill_worker_once(run: TaskRun, result: Any, error: BaseException | None) -> None:
    """Kill the worker with SIGKILL after the first `runs.double` ends.

    after_run runs after the completion record is stored and before the
    ack is sent. In a child process the worker is the parent, and the
    child exits once its parent is gone.
    """
    if run.task_name != "runs.double" or error is not None or not first_time("kill-worker"):
        return
    record("kill", id=run.message_id)
    in_child = multiprocessing.parent_process() is not None
    os.kill(os.getppid() if in_child else os.getpid(), signal.SIGKILL)


# Cancellation ----------------------------------------------------------------


@app.task(queue="runs-cancel", name="runs.until_cancelled")
def until_cancelled(marker: str) -> str:
    run = conveyor.current_run()
    assert run is not None
    record("started", marker=marker)
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not run.cancelled and not released() and time.monotonic() < deadline:
        time.sleep(0.02)
    record("stopping", marker=marker, cancelled=run.cancelled)
    return "stopped"


@app.task(queue="runs-cancel", name="runs.async_until_cancelled")
async def async_until_cancelled(marker: str) -> str:
    record("started", marker=marker)
    deadline = time.monotonic() + WAIT_LIMIT_S
    try:
        while not released() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        record("async-cancelled", marker=marker)
        raise
    return "slept"


@app.task(queue="runs-cancel", name="runs.blocked")
def blocked(marker: str) -> str:
    """Ignore cancel requests, so only a killed child process stops it."""
    record("started", marker=marker)
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not released() and time.monotonic() < deadline:
        time.sleep(0.02)
    record("finished", marker=marker)
    return "finished"


# Progress and logs -------------------------------------------------------------


@app.task(queue="runs-progress", name="runs.halfway")
def halfway() -> str:
    run = conveyor.current_run()
    assert run is not None
    run.progress(0.5, "halfway there")
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not released() and time.monotonic() < deadline:
        time.sleep(0.02)
    run.progress(1.0, "all done")
    return "done"


@app.task(queue="runs-logs", name="runs.flaky_logs", backoff=FAST_RETRY)
def flaky_logs() -> str:
    run = conveyor.current_run()
    assert run is not None
    logger.info("attempt %d is working", run.attempt)
    if first_time("flaky-logs"):
        logger.warning("attempt %d fails on purpose", run.attempt)
        raise ValueError("first attempt fails")
    return "ok"


@app.task(queue="runs-logs", name="runs.async_flaky_logs", backoff=FAST_RETRY)
async def async_flaky_logs() -> str:
    run = conveyor.current_run()
    assert run is not None
    await asyncio.sleep(0)
    logger.info("attempt %d is working", run.attempt)
    if first_time("async-flaky-logs"):
        logger.warning("attempt %d fails on purpose", run.attempt)
        raise ValueError("first attempt fails")
    return "ok"
