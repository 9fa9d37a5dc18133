"""`conveyor worker --processes N` as a real subprocess: crashes, hard and soft
timeouts, recycling of child processes, and acks after a lost lease.

Each test starts a real `conveyor server` and a worker on the tasks of
tests/process_tasks.py, which record what they did to a file.
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import process_tasks
import pytest
from http_fixtures import ServerProcess, conveyor_command, start_server
from task_workers import (
    DONE_TIMEOUT_S,
    WorkerProcess,
    launch_worker,
    read_records,
    start_worker,
    stop_worker,
    wait_until,
)

from conveyor import Conveyor, Worker
from conveyor.errors import TaskError, ValidationError

pytestmark = pytest.mark.acceptance

APP_PATH = "process_tasks:app"


class Setup:
    """A server, the tasks app pointed at it, and the workers a test started."""

    def __init__(self, folder: Path, server: ServerProcess) -> None:
        self.folder = folder
        self.server = server
        self.workers: list[WorkerProcess] = []
        process_tasks.app.configure(url=server.url)

    @property
    def app(self) -> Conveyor:
        return process_tasks.app

    def start_worker(self, *args: str) -> WorkerProcess:
        name = f"worker-{len(self.workers)}"
        worker = start_worker(self.folder, APP_PATH, self.server.url, *args, name=name)
        self.workers.append(worker)
        return worker

    def records(self, event: str) -> list[dict]:
        return [r for r in read_records(self.folder) if r["event"] == event]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    server = start_server(tmp_path / "server")
    created = Setup(tmp_path, server)
    yield created
    for worker in created.workers:
        worker.kill()
    process_tasks.app.close()
    server.stop()


# Crashes and hard timeouts -------------------------------------------------


def test_hard_timeout_kills_stuck_child(setup: Setup) -> None:
    stuck = process_tasks.stuck.enqueue()
    worker = setup.start_worker("--processes", "1", "--queues", "proc-stuck")

    with pytest.raises(TaskError) as failure:
        stuck.result(timeout_s=DONE_TIMEOUT_S)
    after = process_tasks.after_stuck.enqueue().result(timeout_s=DONE_TIMEOUT_S)
    attempts = setup.records("stuck")
    message = setup.app.client.get_message(stuck.id)

    assert "HardTimeout: task proc.stuck ran longer than its hard_timeout_s of 1 s" in str(
        failure.value
    )
    assert len(attempts) == 2
    assert message.receive_count == 2
    # Each attempt ran in a new child, and a third child ran the next task.
    assert len({a["pid"] for a in attempts} | {after}) == 3
    assert worker.alive()
    assert worker.log().count("killing worker child process") == 2
    assert stop_worker(worker) == 0, worker.log()


def test_hard_timeout_releases_sibling(setup: Setup) -> None:
    sibling = process_tasks.slow_pid.enqueue(3.0)
    stuck = process_tasks.stuck.enqueue()
    worker = setup.start_worker(
        "--processes", "1", "--concurrency", "2", "--queues", "proc-lease,proc-stuck"
    )

    with pytest.raises(TaskError):
        stuck.result(timeout_s=DONE_TIMEOUT_S)
    sibling.result(timeout_s=DONE_TIMEOUT_S)

    log = worker.log()
    assert f"Released {sibling.id} (task proc.slow_pid) for redelivery" in log
    assert "killed for another task's hard timeout" in log
    assert stop_worker(worker) == 0, log


def test_segfault_fails_only_its_attempt(setup: Setup) -> None:
    before = [process_tasks.add.enqueue(i, 1) for i in range(5)]
    crash = process_tasks.crash.enqueue()
    worker = setup.start_worker("--processes", "2", "--queues", "proc-crash")

    with pytest.raises(TaskError) as failure:
        crash.result(timeout_s=DONE_TIMEOUT_S)
    after = [process_tasks.add.enqueue(i, 2) for i in range(5)]
    results = [h.result(timeout_s=DONE_TIMEOUT_S) for h in before + after]

    assert (
        "ChildProcessExited: worker child process exited with signal SIGSEGV "
        "while running task proc.crash"
    ) in str(failure.value)
    assert results == [i + 1 for i in range(5)] + [i + 2 for i in range(5)]
    assert len(setup.records("crash")) == 1
    assert "exited with signal SIGSEGV while running task proc.crash" in worker.log()
    assert worker.alive()
    assert stop_worker(worker) == 0, worker.log()


def test_child_start_failure_stops_worker(setup: Setup) -> None:
    worker = launch_worker(
        setup.folder, "broken_child_tasks:app", setup.server.url, "--processes", "1"
    )

    exit_code = worker.wait()

    assert exit_code == 1
    assert "exited with exit code 1 before it was ready" in worker.log()
    assert "RuntimeError: this module fails in a child process on purpose" in worker.log()
    assert "Worker started" not in worker.log()


def test_hard_timeout_needs_processes(setup: Setup) -> None:
    worker = launch_worker(
        setup.folder, APP_PATH, setup.server.url, "--queues", "proc-stuck"
    )

    exit_code = worker.wait()

    assert exit_code == 1
    assert "task proc.stuck has hard_timeout_s" in worker.log()
    assert "--processes N" in worker.log()


# Recycling ------------------------------------------------------------------


def test_max_tasks_recycles_child(setup: Setup) -> None:
    handles = [process_tasks.pid.enqueue(i) for i in range(7)]
    worker = setup.start_worker(
        "--processes", "1", "--max-tasks-per-child", "3", "--queues", "proc-pid"
    )

    pids = [h.result(timeout_s=DONE_TIMEOUT_S) for h in handles]
    runs = [len(list(group)) for _, group in itertools.groupby(pids)]

    assert runs == [3, 3, 1]
    assert len(set(pids)) == 3
    assert worker.log().count("after 3 task calls (max_tasks_per_child)") == 2
    assert stop_worker(worker) == 0, worker.log()


def test_max_tasks_counts_parallel_calls(setup: Setup) -> None:
    handles = [process_tasks.pid.enqueue(i) for i in range(12)]
    worker = setup.start_worker(
        "--processes", "2", "--concurrency", "2", "--max-tasks-per-child", "3",
        "--queues", "proc-pid",
    )

    pids = [h.result(timeout_s=DONE_TIMEOUT_S) for h in handles]
    calls_per_child = collections.Counter(pids)

    # A child with two threads must not take a fourth call while its third runs.
    assert max(calls_per_child.values()) <= 3, calls_per_child
    assert sum(calls_per_child.values()) == 12
    assert stop_worker(worker) == 0, worker.log()


def test_memory_limit_recycles_child(setup: Setup) -> None:
    handles = [process_tasks.leak.enqueue(40) for _ in range(8)]
    worker = setup.start_worker(
        "--processes", "1", "--max-memory-per-child-mib", "200", "--queues", "proc-leak"
    )

    pids = [h.result(timeout_s=DONE_TIMEOUT_S) for h in handles]
    calls_per_child = collections.Counter(pids)

    assert len(calls_per_child) >= 2
    # After 5 leaks of 40 MiB a child is over 200 MiB, whatever it used before.
    assert max(calls_per_child.values()) <= 5
    assert "because its resident memory of" in worker.log()
    assert stop_worker(worker) == 0, worker.log()


# Soft timeouts ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "task_name"),
    [
        ("threads", "soft"),
        ("threads", "soft_async"),
        ("processes", "soft"),
        ("processes", "soft_async"),
    ],
)
def test_soft_timeout_lets_task_clean_up(setup: Setup, mode: str, task_name: str) -> None:
    args = ["--processes", "1"] if mode == "processes" else []
    task = getattr(process_tasks, task_name)
    handle = task.enqueue(f"{mode}-{task_name}")
    worker = setup.start_worker(*args, "--queues", "proc-soft")

    with pytest.raises(TaskError) as failure:
        handle.result(timeout_s=DONE_TIMEOUT_S)
    after = task.enqueue("second")
    with pytest.raises(TaskError):
        after.result(timeout_s=DONE_TIMEOUT_S)

    assert f"TaskTimeout: task proc.{task_name} ran longer than its timeout_s of 0.5 s" in str(
        failure.value
    )
    wait_until(lambda: len(setup.records("cleanup")) == 2)
    assert [r["marker"] for r in setup.records("cleanup")] == [f"{mode}-{task_name}", "second"]
    assert stop_worker(worker) == 0, worker.log()


# Leases ------------------------------------------------------------------------


def test_paused_worker_ack_is_rejected(setup: Setup) -> None:
    setup.app.client.create_queue(
        "proc-lease", {"visibility_timeout_s": 1.0, "backoff_base_s": 0.1}
    )
    handle = process_tasks.slow_pid.enqueue(1.0)
    first = setup.start_worker("--queues", "proc-lease")
    wait_until(lambda: setup.records("start"))

    first.send(signal.SIGSTOP)
    try:
        second = setup.start_worker("--queues", "proc-lease")
        result = handle.result(timeout_s=DONE_TIMEOUT_S)
    finally:
        first.send(signal.SIGCONT)
    # The resumed worker either sends its ack, which the service rejects
    # because the second worker's ack deleted the message, or it first fails
    # to extend the lease, gives the job up and drops the late result.
    wait_until(lambda: _rejection(first.log(), handle.id))
    result_after_resume = setup.app.handle(handle.id).result(timeout_s=DONE_TIMEOUT_S)

    assert result == second.process.pid
    assert result_after_resume == second.process.pid
    assert [r["pid"] for r in setup.records("start")] == [first.process.pid, second.process.pid]
    assert " WARNING " in _rejection(first.log(), handle.id)
    assert first.alive()
    assert stop_worker(first) == 0, first.log()
    assert stop_worker(second) == 0, second.log()


def test_child_task_keeps_its_lease(setup: Setup) -> None:
    setup.app.client.create_queue("proc-lease", {"visibility_timeout_s": 1.0})
    handle = process_tasks.slow_pid.enqueue(2.5)
    worker = setup.start_worker("--processes", "1", "--queues", "proc-lease")

    result = handle.result(timeout_s=DONE_TIMEOUT_S)
    starts = setup.records("start")

    assert len(starts) == 1
    assert result == starts[0]["pid"]
    assert result != worker.process.pid
    assert "Lost the lease" not in worker.log()
    assert stop_worker(worker) == 0, worker.log()


def _rejection(log: str, message_id: str) -> str:
    """Return the log line about a rejected ack or a lost lease of the message, or ""."""
    for line in log.splitlines():
        if f"Could not ack message {message_id}" in line:
            return line
        if f"Lost the lease of message {message_id}" in line:
            return line
    return ""


# Options ---------------------------------------------------------------------


def test_worker_help_shows_process_flags() -> None:
    completed = subprocess.run(
        [*conveyor_command(), "worker", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
    )

    for flag in (
        "--processes", "CONVEYOR_PROCESSES",
        "--max-tasks-per-child", "CONVEYOR_MAX_TASKS_PER_CHILD",
        "--max-memory-per-child-mib", "CONVEYOR_MAX_MEMORY_PER_CHILD_MIB",
    ):
        assert flag in completed.stdout


def test_child_limits_need_processes(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/limits.db")

    @app.task(queue="limits")
    def noop() -> None:
        pass

    with pytest.raises(ValidationError, match="max_tasks_per_child 5 applies to child processes"):
        Worker(app, max_tasks_per_child=5)
    with pytest.raises(ValidationError, match="invalid max_memory_per_child_mib 0"):
        Worker(app, processes=1, max_memory_per_child_mib=0, app_path="x:app")


def test_hard_timeout_must_exceed_timeout(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/options.db")

    with pytest.raises(ValidationError, match="must be longer than timeout_s"):
        app.task(timeout_s=5, hard_timeout_s=5)(lambda: None)
    with pytest.raises(ValidationError, match="invalid hard_timeout_s -1"):
        app.task(hard_timeout_s=-1)(lambda: None)
