"""The worker's log capture around one task call: which records reach
which run's control, and that a call that logs nothing gets no capture.

These use the real capture handler on the root logger, real RunControl
objects and real TaskRun objects, without a worker around them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from conveyor.tasks.hooks import TaskRun
from conveyor.reports import MAX_LOG_BYTES
from conveyor.worker.run_control import (
    LogCapture,
    RunControl,
    capturing,
    install_capture_handler,
)

LOGGER_NAME = "conveyor-test-capture"


@pytest.fixture
def task_logger() -> Iterator[logging.Logger]:
    """Return a logger that emits INFO records to the root logger's handlers."""
    install_capture_handler()
    logger = logging.getLogger(LOGGER_NAME)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield logger
    finally:
        logger.setLevel(old_level)


def make_run(message_id: str) -> TaskRun:
    return TaskRun(
        "capture_task", message_id, "capture-queue", 1, 3, [], {}, {}, control=RunControl()
    )


def test_silent_call_gets_no_capture(task_logger: logging.Logger) -> None:
    run = make_run("msg_silent")

    with capturing([run]):
        pass

    assert run.control.logs is None
    assert "logs" not in run.control.final_report()


def test_call_records_reach_its_run(task_logger: logging.Logger) -> None:
    run = make_run("msg_one")

    with capturing([run]):
        task_logger.info("step %d done", 1)
        task_logger.warning("almost out of %s", "disk")

    text = run.control.final_report()["logs"]
    assert "INFO conveyor-test-capture: step 1 done\n" in text
    assert "WARNING conveyor-test-capture: almost out of disk\n" in text


def test_batch_runs_share_capture(task_logger: logging.Logger) -> None:
    runs = [make_run(f"msg_batch_{index}") for index in range(3)]

    with capturing(runs):
        task_logger.info("batch of %d", len(runs))

    captures = {id(run.control.logs) for run in runs}
    assert len(captures) == 1
    for run in runs:
        assert "batch of 3" in run.control.final_report()["logs"]


def test_run_without_control_skipped(task_logger: logging.Logger) -> None:
    bare = TaskRun("capture_task", "msg_bare", "capture-queue", 1, 3, [], {}, {})
    controlled = make_run("msg_controlled")

    with capturing([bare, controlled]):
        task_logger.info("one of two has a control")

    assert bare.control is None
    assert "one of two has a control" in controlled.control.final_report()["logs"]


def test_capture_ignores_outside_records(task_logger: logging.Logger) -> None:
    run = make_run("msg_outside")
    other_thread = threading.Thread(target=task_logger.info, args=("from another thread",))

    task_logger.info("before the call")
    with capturing([run]):
        other_thread.start()
        other_thread.join()
        task_logger.info("inside the call")
    task_logger.info("after the call")

    text = run.control.final_report()["logs"]
    assert "inside the call" in text
    assert "before the call" not in text
    assert "after the call" not in text
    assert "from another thread" not in text


def test_nested_capture_restores_outer(task_logger: logging.Logger) -> None:
    outer = make_run("msg_outer")
    inner = make_run("msg_inner")

    with capturing([outer]):
        with capturing([inner]):
            task_logger.info("inner record")
        task_logger.info("outer record")

    assert "inner record" in inner.control.final_report()["logs"]
    assert "inner record" not in outer.control.final_report()["logs"]
    assert "outer record" in outer.control.final_report()["logs"]


def test_capture_keeps_head_and_tail() -> None:
    capture = LogCapture()
    for number in range(10_000):
        capture.append(f"record {number}\n")
    capture.append("Traceback: the final error\n")

    text = capture.text()

    assert text is not None
    assert len(text.encode()) <= MAX_LOG_BYTES
    assert text.startswith("record 0\n")
    assert text.endswith("Traceback: the final error\n")
    assert "bytes were dropped here]" in text


def test_capture_under_limit_is_whole() -> None:
    capture = LogCapture()
    lines = [f"record {number}\n" for number in range(100)]
    for line in lines:
        capture.append(line)

    assert capture.text() == "".join(lines)
