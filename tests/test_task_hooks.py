"""Task hooks around enqueue, run, retry and dead-lettering, with a real
`conveyor worker` on a real server, in threads and in child processes.

The hooks of tests/hook_tasks.py record each call. Enqueue hooks run in
this test process and run hooks where the task runs. Retry and
dead-letter hooks run in the worker process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hook_tasks
import pytest
from http_fixtures import ServerProcess, start_server
from task_workers import DONE_TIMEOUT_S, WorkerProcess, read_records, start_worker, stop_worker

from conveyor import Conveyor
from conveyor.errors import TaskError, ValidationError

pytestmark = pytest.mark.acceptance

APP_PATH = "hook_tasks:app"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerProcess]:
    monkeypatch.setenv("TASKS_RECORD", str(tmp_path / "record.txt"))
    started = start_server(tmp_path / "server")
    hook_tasks.app.configure(url=started.url)
    yield started
    hook_tasks.app.close()
    started.stop()


def events_of(folder: Path, task: str) -> list[dict]:
    return [r for r in read_records(folder) if r.get("task") == task]


@pytest.mark.parametrize("args", [[], ["--processes", "1"]], ids=["threads", "processes"])
def test_hooks_fire_in_order(tmp_path: Path, server: ServerProcess, args: list[str]) -> None:
    flaky = hook_tasks.flaky.enqueue(5)
    doomed = hook_tasks.doomed.enqueue(6)
    worker = start_worker(tmp_path, APP_PATH, server.url, *args)
    try:
        result = flaky.result(timeout_s=DONE_TIMEOUT_S)
        with pytest.raises(TaskError):
            doomed.result(timeout_s=DONE_TIMEOUT_S)
    finally:
        exit_code = stop_worker(worker)
    flaky_events = events_of(tmp_path, "hooks.flaky")
    doomed_events = events_of(tmp_path, "hooks.doomed")
    worker_pid = worker.process.pid

    assert result == 50
    assert exit_code == 0, worker.log()
    assert [e["event"] for e in flaky_events] == [
        "before_enqueue", "after_enqueue",
        "before_run", "after_run", "on_retry",
        "before_run", "after_run",
    ]
    assert [e["event"] for e in doomed_events] == [
        "before_enqueue", "after_enqueue", "before_run", "after_run", "on_dead_letter",
    ]
    assert all(e["args"] == [5] for e in flaky_events)
    assert [e["id"] for e in flaky_events[1:]] == [flaky.id] * 6
    assert [e["attempt"] for e in flaky_events if e["event"] == "before_run"] == [1, 2]
    assert {e["trace"] for e in flaky_events if e["event"] == "before_run"} == {"trace-5"}
    assert flaky_events[3]["error"] == "ValueError"
    assert flaky_events[3]["result"] is None
    assert flaky_events[4]["error"] == "ValueError: first attempt with 5 fails"
    assert flaky_events[4]["delay_s"] == 0.5
    assert flaky_events[6]["error"] is None
    assert flaky_events[6]["result"] == 50
    assert doomed_events[3]["error"] == "Reject"
    assert doomed_events[4]["error"] == "Reject: 6 can never work"
    # Run hooks fire where the task runs, the others in the worker process.
    run_pids = {e["pid"] for e in flaky_events if e["event"] in ("before_run", "after_run")}
    assert (worker_pid in run_pids) == (args == [])
    assert flaky_events[4]["pid"] == worker_pid
    assert doomed_events[4]["pid"] == worker_pid


def test_broken_hook_is_logged_and_skipped(tmp_path: Path, server: ServerProcess) -> None:
    handle = hook_tasks.with_broken_hook.enqueue(1)
    worker: WorkerProcess = start_worker(tmp_path, APP_PATH, server.url)
    try:
        result = handle.result(timeout_s=DONE_TIMEOUT_S)
    finally:
        exit_code = stop_worker(worker)
    events = [e["event"] for e in events_of(tmp_path, "hooks.with_broken_hook")]

    assert result == 2
    assert exit_code == 0, worker.log()
    assert events == ["before_enqueue", "after_enqueue", "before_run", "after_run"]
    assert "Hook broken_before_run for before_run raised; ignoring it" in worker.log()
    assert "RuntimeError: this hook is broken on purpose" in worker.log()


def test_add_hook_rejects_unknown_event(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/hooks.db")

    with pytest.raises(ValidationError, match="unknown hook event 'before_start'; use one of"):
        app.add_hook("before_start", print)
    with pytest.raises(ValidationError, match="hook for after_run must be a function"):
        app.add_hook("after_run", "not callable")
    assert app.add_hook("after_run", print) is print
    assert app.hooks.after_run == [print]
