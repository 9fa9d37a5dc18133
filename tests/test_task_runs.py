"""Idempotency keys, cancellation, progress and logs through the task SDK,
on both transports.

The `app` fixture runs each test on an in-process Engine over a SQLite file
and on a real `conveyor server` subprocess over HTTP. Tests that need tasks
to run start a real Worker in a thread of the test process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from http_fixtures import ServerProcess, http_server

import conveyor
from conveyor import Conveyor, TaskCancelled, TaskRun, Worker
from conveyor.errors import MessageFinished, ValidationError

__all__ = ["http_server"]  # a fixture, used by name

WORKER_STOP_TIMEOUT_S = 30.0
RESULT_TIMEOUT_S = 30.0


@pytest.fixture(params=["sqlite", "http"])
def app(request: pytest.FixtureRequest, tmp_path) -> Iterator[Conveyor]:
    if request.param == "sqlite":
        application = Conveyor(f"sqlite:///{tmp_path}/runs.db")
    else:
        server: ServerProcess = request.getfixturevalue("http_server")
        application = Conveyor(server.url)
    yield application
    application.close()


@pytest.fixture
def queue() -> str:
    """A queue name no other test uses, since the HTTP server is shared."""
    return "tr-" + uuid.uuid4().hex[:12]


@contextlib.contextmanager
def running_worker(app: Conveyor, **options: Any) -> Iterator[Worker]:
    """Run a real Worker in a thread for the duration of the block."""
    options.setdefault("poll_wait_s", 0.2)
    worker = Worker(app, **options)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(WORKER_STOP_TIMEOUT_S)
        assert not thread.is_alive(), "worker did not stop"


def wait_for(condition: Any, timeout_s: float = RESULT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# Idempotency keys ------------------------------------------------------------


def test_enqueue_key_returns_first_handle(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def charge(order: str) -> str:
        return order

    first = charge.enqueue("a", idempotency_key="order-1")
    second = charge.enqueue("b", idempotency_key="order-1")
    third = charge.options(idempotency_key="order-1").enqueue("c")

    assert second.id == first.id
    assert second.deduplicated
    assert third.id == first.id
    assert app.client.get_message(first.id).idempotency_key == "order-1"


@pytest.mark.parametrize(
    "call",
    [
        lambda task: task.options(dedup_id="d").enqueue(idempotency_key="k"),
        lambda task: task.options(idempotency_key="k").enqueue_many([((), {})]),
        lambda task: task.enqueue(idempotency_key=""),
    ],
    ids=["with-dedup-id", "enqueue-many", "empty"],
)
def test_enqueue_bad_key_posts_nothing(app: Conveyor, queue: str, call: Any) -> None:
    @app.task(queue=queue)
    def noop() -> None:
        pass

    with pytest.raises(ValidationError):
        call(noop)
    app.ensure_queue(queue)
    assert app.client.stats(queue).ready == 0


# Cancellation ------------------------------------------------------------------


def test_cancel_queued_task(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def never() -> None:
        pass

    handle = never.enqueue()

    outcome = handle.cancel()

    assert outcome == "cancelled"
    assert handle.status() == "cancelled"
    with pytest.raises(TaskCancelled):
        handle.result(timeout_s=1)
    with pytest.raises(MessageFinished):
        handle.cancel()


def test_cancel_running_task_sees_flag(app: Conveyor, queue: str) -> None:
    started = threading.Event()
    seen: list[bool] = []

    @app.task(queue=queue)
    def loop_until_cancelled() -> str:
        run = conveyor.current_run()
        assert run is not None
        started.set()
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        while not run.cancelled and time.monotonic() < deadline:
            time.sleep(0.02)
        seen.append(run.cancelled)
        return "stopped"

    handle = loop_until_cancelled.enqueue()
    with running_worker(app):
        assert started.wait(RESULT_TIMEOUT_S)
        outcome = handle.cancel()
        with pytest.raises(TaskCancelled):
            handle.result(timeout_s=RESULT_TIMEOUT_S)

    assert outcome == "cancel-requested"
    assert seen == [True]
    assert handle.status() == "cancelled"


# Progress ----------------------------------------------------------------------


def test_progress_while_running_and_after(app: Conveyor, queue: str) -> None:
    reported = threading.Event()
    release = threading.Event()

    @app.task(queue=queue)
    def steps() -> int:
        run = conveyor.current_run()
        assert run is not None
        run.progress(0.25, "one of four")
        reported.set()
        release.wait(RESULT_TIMEOUT_S)
        run.progress(1.0, "x" * 2000)
        return 4

    handle = steps.enqueue()
    with running_worker(app):
        assert reported.wait(RESULT_TIMEOUT_S)
        wait_for(lambda: handle.progress() is not None)
        during = handle.progress()
        release.set()
        handle.result(timeout_s=RESULT_TIMEOUT_S)
    after = handle.progress()

    assert during.fraction == 0.25
    assert during.text == "one of four"
    assert after.fraction == 1.0
    assert len(after.text) == 1024
    assert after.text.endswith("…")


def test_progress_rejects_bad_fraction() -> None:
    run = TaskRun("t", "id", "q", 1, 5, [], {}, {})

    with pytest.raises(ValidationError, match="invalid progress 1.5"):
        run.progress(1.5)


def test_current_run_none_outside_worker(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def which() -> Any:
        return conveyor.current_run()

    assert which() is None


# Logs ----------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, -1, "1"])
def test_logs_invalid_attempt(app: Conveyor, attempt: object) -> None:
    handle = app.handle("0" * 28)

    with pytest.raises(ValidationError) as caught:
        handle.logs(attempt=attempt)  # type: ignore[arg-type]

    assert f"invalid attempt {attempt!r}" in str(caught.value)


def test_logs_of_task_run(app: Conveyor, queue: str, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger(f"tasks.{queue}")

    @app.task(queue=queue)
    def chatty(name: str) -> str:
        logger.warning("hello %s", name)
        return name

    handle = chatty.enqueue("ada")
    with caplog.at_level(logging.INFO), running_worker(app):
        handle.result(timeout_s=RESULT_TIMEOUT_S)
    [log] = handle.logs()

    assert log.attempt == 1
    assert f"WARNING tasks.{queue}: hello ada" in log.text
