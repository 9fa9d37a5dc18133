"""`conveyor worker` as a real subprocess: idempotency keys after a lost ack,
cancellation in each execution mode, progress while a task runs, and logs
per attempt.

Each test starts a real `conveyor server` and a worker on the tasks of
tests/run_tasks.py, which record what they did to a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import run_tasks
from http_fixtures import ServerProcess, start_server
from task_workers import (
    DONE_TIMEOUT_S,
    WorkerProcess,
    read_records,
    start_worker,
    stop_worker,
    wait_until,
)

from conveyor import Conveyor, TaskCancelled, TaskHandle

pytestmark = pytest.mark.acceptance

APP_PATH = "run_tasks:app"
# How a test runs each execution mode: the worker flags and the task that
# waits for a cancel in that mode.
MODES = {
    "threads": ((), run_tasks.until_cancelled),
    "asyncio": ((), run_tasks.async_until_cancelled),
    "processes": (("--processes", "1"), run_tasks.blocked),
}


class Setup:
    """A server, the tasks app pointed at it, and the workers a test started."""

    def __init__(self, folder: Path, server: ServerProcess) -> None:
        self.folder = folder
        self.server = server
        self.workers: list[WorkerProcess] = []
        run_tasks.app.configure(url=server.url)

    @property
    def app(self) -> Conveyor:
        return run_tasks.app

    def start_worker(self, *args: str) -> WorkerProcess:
        name = f"worker-{len(self.workers)}"
        worker = start_worker(self.folder, APP_PATH, self.server.url, *args, name=name)
        self.workers.append(worker)
        return worker

    def records(self, event: str) -> list[dict]:
        return [r for r in read_records(self.folder) if r["event"] == event]

    def release_tasks(self) -> None:
        """Let every waiting task of run_tasks.py finish."""
        (self.folder / ("record.txt" + run_tasks.RELEASE_SUFFIX)).touch()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    server = start_server(tmp_path / "server")
    created = Setup(tmp_path, server)
    yield created
    created.release_tasks()
    for worker in created.workers:
        worker.kill()
    run_tasks.app.close()
    server.stop()


def started(setup: Setup, marker: str) -> bool:
    return any(r["marker"] == marker for r in setup.records("started"))


def wait_for_status(handle: TaskHandle, status: str) -> None:
    wait_until(lambda: handle.status() == status)


# Idempotency keys ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_lost_ack_does_not_rerun_body(setup: Setup, mode: str) -> None:
    # A short lease, so the message comes back soon after the worker dies.
    setup.app.client.create_queue("runs-idem", {"visibility_timeout_s": 2.0})
    handle = run_tasks.double.enqueue(21, idempotency_key="order-21")
    again = run_tasks.double.enqueue(99, idempotency_key="order-21")
    args = ["--processes", "1"] if mode == "processes" else []
    first = setup.start_worker(*args, "--queues", "runs-idem")

    wait_until(lambda: not first.alive())
    recorded = setup.app.client.get_message(handle.id)
    second = setup.start_worker(*args, "--queues", "runs-idem")
    value = handle.result(timeout_s=DONE_TIMEOUT_S)

    assert again.id == handle.id
    assert again.deduplicated
    assert recorded.completed_at is not None
    assert recorded.completed_result == 42
    assert value == 42
    assert [r["value"] for r in setup.records("body")] == [21]
    assert len(setup.records("kill")) == 1
    assert "acking it without running it again" in second.log()
    assert stop_worker(second) == 0, second.log()


# Cancellation ------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_cancel_running_task(setup: Setup, mode: str) -> None:
    args, task = MODES[mode]
    handle = task.enqueue(f"{mode}-running")
    worker = setup.start_worker(*args, "--queues", "runs-cancel")
    wait_until(lambda: started(setup, f"{mode}-running"))

    outcome = handle.cancel()
    with pytest.raises(TaskCancelled):
        handle.result(timeout_s=DONE_TIMEOUT_S)

    assert outcome == "cancel-requested"
    assert handle.status() == "cancelled"
    assert f"Task {task.name} {handle.id} cancelled after" in worker.log()
    if mode == "threads":
        assert setup.records("stopping") == [
            {"event": "stopping", "pid": worker.process.pid, "marker": "threads-running",
             "cancelled": True}
        ]
    elif mode == "asyncio":
        assert [r["marker"] for r in setup.records("async-cancelled")] == ["asyncio-running"]
    else:
        assert "killing worker child process" in worker.log()
        assert setup.records("finished") == []
    assert worker.alive()
    assert stop_worker(worker) == 0, worker.log()


@pytest.mark.parametrize("mode", list(MODES))
def test_cancel_task_waiting_in_worker(setup: Setup, mode: str) -> None:
    args, task = MODES[mode]
    running = task.enqueue(f"{mode}-first")
    waiting = task.enqueue(f"{mode}-second")
    worker = setup.start_worker(*args, "--concurrency", "1", "--queues", "runs-cancel")
    wait_until(lambda: started(setup, f"{mode}-first"))
    wait_for_status(waiting, "running")

    outcome = waiting.cancel()
    wait_for_status(waiting, "cancelled")
    first_status = running.status()
    setup.release_tasks()
    running.result(timeout_s=DONE_TIMEOUT_S)

    assert outcome == "cancel-requested"
    assert first_status == "running"
    assert not started(setup, f"{mode}-second")
    assert f"Task {task.name} {waiting.id} cancelled before it started" in worker.log()
    assert stop_worker(worker) == 0, worker.log()


def test_cancel_queued_task_never_runs(setup: Setup) -> None:
    cancelled = run_tasks.until_cancelled.enqueue("never")
    later = run_tasks.blocked.enqueue("later")

    outcome = cancelled.cancel()
    setup.release_tasks()
    worker = setup.start_worker("--queues", "runs-cancel")
    later.result(timeout_s=DONE_TIMEOUT_S)

    assert outcome == "cancelled"
    assert cancelled.status() == "cancelled"
    assert not started(setup, "never")
    with pytest.raises(TaskCancelled):
        cancelled.result(timeout_s=1)
    assert stop_worker(worker) == 0, worker.log()


# Progress ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_progress_visible_while_running(setup: Setup, mode: str) -> None:
    handle = run_tasks.halfway.enqueue()
    args = ["--processes", "1"] if mode == "processes" else []
    worker = setup.start_worker(*args, "--queues", "runs-progress")

    wait_until(lambda: handle.progress() is not None)
    while_running = handle.progress()
    status_while_running = handle.status()
    setup.release_tasks()
    handle.result(timeout_s=DONE_TIMEOUT_S)
    at_end = handle.progress()

    assert status_while_running == "running"
    assert while_running.fraction == 0.5
    assert while_running.text == "halfway there"
    assert while_running.updated_at is not None
    assert at_end.fraction == 1.0
    assert at_end.text == "all done"
    assert stop_worker(worker) == 0, worker.log()


# Logs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "task"),
    [
        ("threads", run_tasks.flaky_logs),
        ("asyncio", run_tasks.async_flaky_logs),
        ("processes", run_tasks.flaky_logs),
    ],
)
def test_logs_kept_per_attempt(setup: Setup, mode: str, task) -> None:
    handle = task.enqueue()
    args = ["--processes", "1"] if mode == "processes" else []
    worker = setup.start_worker(*args, "--queues", "runs-logs")

    handle.result(timeout_s=DONE_TIMEOUT_S)
    logs = handle.logs()
    second_only = handle.logs(attempt=2)

    assert [log.attempt for log in logs] == [1, 2]
    assert "INFO run_tasks: attempt 1 is working" in logs[0].text
    assert "WARNING run_tasks: attempt 1 fails on purpose" in logs[0].text
    assert "attempt 2 is working" in logs[1].text
    assert "fails on purpose" not in logs[1].text
    assert [log.text for log in second_only] == [logs[1].text]
    assert stop_worker(worker) == 0, worker.log()
