"""Batch tasks: a list of items per call and one outcome per item, run by a
real `conveyor worker` on a real server in threads, on the event loop and
in child processes."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import batch_tasks
import pytest
from http_fixtures import ServerProcess, start_server
from task_workers import DONE_TIMEOUT_S, WorkerProcess, read_records, start_worker, stop_worker

from conveyor import Conveyor
from conveyor.errors import TaskError, ValidationError
from conveyor.tasks.hooks import TaskRun
from conveyor.worker.execution import BatchResultError, split_results

pytestmark = pytest.mark.acceptance

APP_PATH = "batch_tasks:app"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    started = start_server(tmp_path / "server")
    batch_tasks.app.configure(url=started.url)
    yield started
    batch_tasks.app.close()
    started.stop()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


def calls(folder: Path) -> list[list]:
    return [r["items"] for r in read_records(folder) if r["event"] == "call"]


# Through the worker ----------------------------------------------------------


@pytest.mark.parametrize(
    ("task_name", "args"),
    [
        ("double", []),
        ("double_async", []),
        ("double", ["--processes", "2", "--concurrency", "2"]),
    ],
    ids=["threads", "asyncio", "processes"],
)
def test_batch_retries_only_failed_items(
    tmp_path: Path, server: ServerProcess, workers: list[WorkerProcess],
    task_name: str, args: list[str],
) -> None:
    task = getattr(batch_tasks, task_name)
    handles = task.enqueue_many([((i,), {}) for i in range(100)])
    workers.append(start_worker(tmp_path, APP_PATH, server.url, *args, "--queues", task.queue))

    results = [h.result(timeout_s=DONE_TIMEOUT_S) for h in handles]
    runs_per_item = collections.Counter(item for call in calls(tmp_path) for item in call)
    retried = {item for item, runs in runs_per_item.items() if runs > 1}
    stats = task.app.client.stats(task.queue)

    assert results == [i * 2 for i in range(100)]
    assert retried == batch_tasks.FAIL_ONCE
    assert set(runs_per_item.values()) == {1, 2}
    assert set(runs_per_item) == set(range(100))
    assert max(len(call) for call in calls(tmp_path)) > 1
    assert max(len(call) for call in calls(tmp_path)) <= 25
    assert stats.ready + stats.delayed + stats.reserved + stats.dead == 0
    assert stop_worker(workers[0]) == 0, workers[0].log()


def test_batch_raise_fails_every_item(
    tmp_path: Path, server: ServerProcess, workers: list[WorkerProcess]
) -> None:
    handles = [batch_tasks.explode.enqueue(f"item {i}") for i in range(5)]
    workers.append(start_worker(tmp_path, APP_PATH, server.url, "--queues", "batch-raise"))

    errors = []
    for handle in handles:
        with pytest.raises(TaskError) as failure:
            handle.result(timeout_s=DONE_TIMEOUT_S)
        errors.append(str(failure.value))

    assert calls(tmp_path) == [[f"item {i}" for i in range(5)]]
    assert all("RuntimeError: the whole batch failed" in error for error in errors)


def test_batch_short_result_fails_items(
    tmp_path: Path, server: ServerProcess, workers: list[WorkerProcess]
) -> None:
    handles = [batch_tasks.short.enqueue(f"item {i}") for i in range(5)]
    workers.append(start_worker(tmp_path, APP_PATH, server.url, "--queues", "batch-raise"))

    errors = []
    for handle in handles:
        with pytest.raises(TaskError) as failure:
            handle.result(timeout_s=DONE_TIMEOUT_S)
        errors.append(str(failure.value))

    assert all("returned 4 entries for 5 items" in error for error in errors)


# Definitions and results --------------------------------------------------------


def test_batch_enqueue_takes_one_item(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/one.db")

    @app.task(batch_size=10)
    def save(items: list) -> None:
        pass

    with pytest.raises(ValidationError, match="takes one item per message, got 2 positional"):
        save.enqueue(1, 2)
    with pytest.raises(ValidationError, match="got 0 positional and 1 keyword"):
        save.enqueue(item=1)
    with pytest.raises(ValidationError, match="argument item of task"):
        save.enqueue({1, 2})
    app.close()


def test_batch_definition_errors(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/defs.db")

    with pytest.raises(ValidationError, match="must take one argument, the list of items"):
        app.task(batch_size=5)(lambda a, b: None)
    with pytest.raises(ValidationError, match="invalid batch_size 0"):
        app.task(batch_size=0)(lambda items: None)
    with pytest.raises(ValidationError, match="batch_wait_s 1 for task .* needs batch_size"):
        app.task(batch_wait_s=1)(lambda items: None)
    with pytest.raises(ValidationError, match="invalid batch_wait_s 61"):
        app.task(batch_size=5, batch_wait_s=61)(lambda items: None)


def test_split_results_per_item(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/split.db")
    task = app.task(batch_size=3, name="split")(lambda items: None)
    runs = [TaskRun("split", str(i), "default", 1, 5, [i], {}, {}) for i in range(3)]
    failure = KeyError("b")

    mixed = split_results(task, runs, [1, failure, {"x": 2}])
    none = split_results(task, runs, None)
    wrong = split_results(task, runs, "abc")
    not_json = split_results(task, runs, [1, 2, {3}])

    assert [(r.value, r.error) for r in mixed] == [(1, None), (None, failure), ({"x": 2}, None)]
    assert [(r.value, r.error) for r in none] == [(None, None)] * 3
    assert all(isinstance(r.error, BatchResultError) for r in wrong)
    assert "returned a str for 3 items" in str(wrong[0].error)
    assert type(not_json[2].error).__name__ == "ResultNotJSON"
    assert not_json[0].error is None
