"""The task framework on both transports: definitions, enqueueing, handles.

The `app` fixture runs each test on an in-process Engine over a SQLite file
and on a real `conveyor server` subprocess over HTTP. Tests that need tasks
to run start a real Worker in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from http_fixtures import ServerProcess, http_server

from conveyor import Backoff, Conveyor, Reject, Worker
from conveyor.errors import NotFound, ResultTimeout, TaskError, ValidationError

__all__ = ["http_server"]  # a fixture, used by name

WORKER_STOP_TIMEOUT_S = 30.0
RESULT_TIMEOUT_S = 20.0


@pytest.fixture(params=["sqlite", "http"])
def app(request: pytest.FixtureRequest, tmp_path) -> Iterator[Conveyor]:
    if request.param == "sqlite":
        application = Conveyor(f"sqlite:///{tmp_path}/tasks.db")
    else:
        server: ServerProcess = request.getfixturevalue("http_server")
        application = Conveyor(server.url)
    yield application
    application.close()


@pytest.fixture
def queue() -> str:
    """A queue name no other test uses, since the HTTP server is shared."""
    return "t-" + uuid.uuid4().hex[:12]


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


# Definitions -------------------------------------------------------------


def test_task_default_options(app: Conveyor) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    assert add.name == f"{__name__}.test_task_default_options.<locals>.add"
    assert add.queue == "default"
    assert add.max_attempts is None
    assert add.backoff is None
    assert add.timeout_s is None
    assert add.result_ttl_s == 86_400
    assert add.permanent_errors == ()
    assert add.priority == 0
    assert add.is_async is False
    assert app.tasks[add.name] is add


def test_task_explicit_options(app: Conveyor, queue: str) -> None:
    @app.task(
        queue=queue, name="resize", max_attempts=3, backoff={"base_s": 2, "cap_s": 10},
        timeout_s=5, result_ttl_s=60, permanent_errors=(KeyError,), priority=7,
    )
    async def resize(size: int) -> int:
        return size

    assert resize.name == "resize"
    assert resize.queue == queue
    assert resize.max_attempts == 3
    assert resize.backoff == Backoff(base_s=2, factor=2.0, cap_s=10)
    assert resize.timeout_s == 5.0
    assert resize.result_ttl_s == 60.0
    assert resize.permanent_errors == (KeyError,)
    assert resize.priority == 7
    assert resize.is_async is True
    assert app.queues() == [queue]


def test_task_call_runs_function_directly(app: Conveyor) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    @app.task
    async def async_add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    assert asyncio.run(async_add(2, 3)) == 5


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"queue": "bad queue"}, "invalid queue name"),
        ({"queue": ""}, "invalid queue name"),
        ({"max_attempts": 0}, "invalid max_attempts"),
        ({"max_attempts": 1.5}, "invalid max_attempts"),
        ({"timeout_s": 0}, "invalid timeout_s"),
        ({"timeout_s": math.inf}, "invalid timeout_s"),
        ({"result_ttl_s": -1}, "result_ttl_s"),
        ({"result_ttl_s": None}, "result_ttl_s"),
        ({"permanent_errors": ("ValueError",)}, "invalid permanent_errors"),
        ({"backoff": {"base_s": 10, "cap_s": 1}}, "invalid backoff"),
        ({"backoff": {"delay": 1}}, "unknown key 'delay'"),
        ({"backoff": 5}, "invalid backoff"),
        ({"priority": 5000}, "invalid priority"),
        ({"name": ""}, "invalid task name"),
        ({"retries": 3}, "unknown option 'retries' for @app.task"),
    ],
)
def test_task_definition_errors(app: Conveyor, options: dict, expected: str) -> None:
    with pytest.raises(ValidationError) as raised:
        @app.task(**options)
        def task() -> None:
            pass

    assert expected in str(raised.value)
    assert app.tasks == {}


def test_task_duplicate_name_rejected(app: Conveyor) -> None:
    @app.task(name="same")
    def first() -> None:
        pass

    with pytest.raises(ValidationError, match="already registered"):
        @app.task(name="same")
        def second() -> None:
            pass

    assert app.tasks["same"].fn is first.fn


def test_task_generator_rejected(app: Conveyor) -> None:
    with pytest.raises(ValidationError, match="generator"):
        @app.task
        def numbers() -> Iterator[int]:
            yield 1


# Enqueue -----------------------------------------------------------------


def test_enqueue_message_format(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue, name="add", max_attempts=4, priority=3)
    def add(a: int, b: int = 0) -> int:
        return a + b

    handle = add.enqueue(1, b=(2, 3))
    message = app.client.get_message(handle.id)

    assert message.body == {"task": "add", "args": [1], "kwargs": {"b": [2, 3]}}
    assert message.queue == queue
    assert message.max_attempts == 4
    assert message.priority == 3
    assert handle.queue == queue
    assert handle.task_name == "add"
    assert handle.status() == "ready"


def test_enqueue_creates_missing_queue(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def noop() -> None:
        pass

    noop.enqueue()

    assert app.client.stats(queue).ready == 1


@pytest.mark.parametrize(
    "value, path, reason",
    [
        (math.nan, "b", "nan has no JSON form"),
        (math.inf, "b", "inf has no JSON form"),
        ([1, -math.inf], "b[1]", "-inf has no JSON form"),
        (object(), "b", "type object"),
        ({1, 2}, "b", "type set"),
        (b"raw", "b", "type bytes"),
        ({"when": datetime.now(UTC)}, "b['when']", "type datetime"),
        ({1: "one"}, "b", "key 1 of type int"),
    ],
)
def test_enqueue_rejects_non_json(app: Conveyor, queue: str, value: Any, path: str, reason: str) -> None:
    @app.task(queue=queue)
    def pair(a: int, b: Any) -> None:
        pass

    app.ensure_queue(queue)
    with pytest.raises(ValidationError) as raised:
        pair.enqueue(1, value)

    assert f"argument {path} of task" in str(raised.value)
    assert reason in str(raised.value)
    assert app.client.stats(queue).ready == 0


def test_enqueue_rejects_signature_mismatch(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def pair(a: int, b: int) -> None:
        pass

    app.ensure_queue(queue)
    with pytest.raises(ValidationError, match="missing a required argument: 'b'"):
        pair.enqueue(1)
    with pytest.raises(ValidationError, match="unexpected keyword argument 'c'"):
        pair.enqueue(1, 2, c=3)

    assert app.client.stats(queue).ready == 0


def test_enqueue_kwargs_named_self_when(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue, name="named")
    def named(self: int, when: int, delay: int) -> None:
        pass

    handle = named.enqueue(self=1, when=2, delay=3)
    body = app.client.get_message(handle.id).body

    assert body["kwargs"] == {"self": 1, "when": 2, "delay": 3}


def test_enqueue_at_delays_message(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def later(x: int) -> None:
        pass

    when = datetime.now(UTC) + timedelta(minutes=10)
    handle = later.enqueue_at(when, 5)
    message = app.client.get_message(handle.id)

    assert handle.status() == "delayed"
    assert message.due_at == pytest.approx(when.timestamp(), abs=0.01)
    assert message.body["args"] == [5]


def test_enqueue_at_accepts_unix_seconds(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def later() -> None:
        pass

    when = time.time() + 600
    handle = later.enqueue_at(when)

    assert app.client.get_message(handle.id).due_at == pytest.approx(when, abs=0.01)


def test_enqueue_at_rejects_naive_datetime(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def later() -> None:
        pass

    with pytest.raises(ValidationError, match="naive datetime"):
        later.enqueue_at(datetime.now() + timedelta(minutes=1))


def test_enqueue_in_delays_message(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def later() -> None:
        pass

    before = time.time()
    by_timedelta = later.enqueue_in(timedelta(minutes=5))
    by_seconds = later.enqueue_in(120.0)

    assert app.client.get_message(by_timedelta.id).due_at >= before + 300
    assert app.client.get_message(by_seconds.id).due_at >= before + 120
    assert by_timedelta.status() == "delayed"
    assert by_seconds.status() == "delayed"


def test_enqueue_in_rejects_negative_delay(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def later() -> None:
        pass

    with pytest.raises(ValidationError, match="invalid delay"):
        later.enqueue_in(-1)


def test_enqueue_many_batches(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def square(x: int) -> int:
        return x * x

    handles = square.enqueue_many([((i,), {}) for i in range(2500)])

    assert len(handles) == 2500
    assert len({h.id for h in handles}) == 2500
    assert app.client.stats(queue).ready == 2500
    assert app.client.get_message(handles[1234].id).body["args"] == [1234]


def test_enqueue_many_checks_all_first(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def square(x: int) -> int:
        return x * x

    app.ensure_queue(queue)
    calls = [((i,), None) for i in range(1500)] + [((math.nan,), {})]
    with pytest.raises(ValidationError, match="argument x"):
        square.enqueue_many(calls)
    with pytest.raises(ValidationError, match="call 1 of enqueue_many"):
        square.enqueue_many([((1,), {}), (2,)])

    assert app.client.stats(queue).ready == 0


def test_options_set_priority_and_dedup(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def once(x: int) -> None:
        pass

    first = once.options(priority=9, dedup_id="job-1").enqueue(1)
    second = once.options(dedup_id="job-1").enqueue(2)
    message = app.client.get_message(first.id)

    assert message.priority == 9
    assert first.deduplicated is False
    assert second.deduplicated is True
    assert second.id == first.id
    assert app.client.stats(queue).ready == 1


def test_options_delay(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def later() -> None:
        pass

    handle = later.options(delay_s=300).enqueue()

    assert handle.status() == "delayed"


def test_options_rejects_bad_values(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def later() -> None:
        pass

    with pytest.raises(ValidationError, match="invalid priority"):
        later.options(priority=10_000)
    with pytest.raises(ValidationError, match="not both"):
        later.options(delay_s=1, not_before=time.time())
    with pytest.raises(ValidationError, match="unknown option 'colour'"):
        later.options(colour="red")
    with pytest.raises(ValidationError, match="dedup_id"):
        later.options(dedup_id="same").enqueue_many([((), {}), ((), {})])


# Handles and results -------------------------------------------------------


def test_handle_result_of_sync_task(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def add(a: int, b: int) -> int:
        return a + b

    handle = add.enqueue(2, 3)
    with running_worker(app):
        value = handle.result(timeout_s=RESULT_TIMEOUT_S)

    assert value == 5
    assert handle.status() == "succeeded"


def test_handle_result_of_async_task(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    async def add(a: int, b: int) -> dict:
        await asyncio.sleep(0.01)
        return {"sum": a + b}

    handle = add.enqueue(2, 3)
    with running_worker(app):
        value = handle.result(timeout_s=RESULT_TIMEOUT_S)

    assert value == {"sum": 5}


def test_handle_result_none(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def nothing() -> None:
        return None

    handle = nothing.enqueue()
    with running_worker(app):
        value = handle.result(timeout_s=RESULT_TIMEOUT_S)

    assert value is None
    assert handle.status() == "succeeded"


def test_handle_status_running(app: Conveyor, queue: str) -> None:
    started = threading.Event()
    release = threading.Event()

    @app.task(queue=queue)
    def blocked() -> str:
        started.set()
        release.wait(RESULT_TIMEOUT_S)
        return "done"

    handle = blocked.enqueue()
    with running_worker(app):
        assert started.wait(RESULT_TIMEOUT_S)
        status_while_running = handle.status()
        release.set()
        value = handle.result(timeout_s=RESULT_TIMEOUT_S)

    assert status_while_running == "running"
    assert value == "done"


def test_handle_status_unknown_id(app: Conveyor) -> None:
    handle = app.handle("0" * 28)

    assert handle.status() == "unknown"
    with pytest.raises(NotFound):
        handle.result(timeout_s=1)


@pytest.mark.parametrize("message_id", ["", "x" * 129, "a/b", None])
def test_handle_invalid_id(app: Conveyor, message_id: object) -> None:
    with pytest.raises(ValidationError) as caught:
        app.handle(message_id)  # type: ignore[arg-type]

    assert "invalid message id" in str(caught.value)


def test_handle_result_timeout(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue)
    def never_run() -> None:
        pass

    handle = never_run.enqueue()

    with pytest.raises(ResultTimeout, match="still ready"):
        handle.result(timeout_s=0.2)


def test_result_ttl_expires(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue, result_ttl_s=1)
    def short_lived() -> int:
        return 1

    handle = short_lived.enqueue()
    with running_worker(app):
        assert handle.result(timeout_s=RESULT_TIMEOUT_S) == 1
    time.sleep(1.2)

    assert handle.status() == "unknown"


def test_result_ttl_zero_keeps_nothing(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue, result_ttl_s=0)
    def forgotten() -> int:
        return 1

    handle = forgotten.enqueue()
    with running_worker(app):
        wait_for(lambda: app.client.stats(queue).ready + app.client.stats(queue).reserved == 0)

    assert handle.status() == "unknown"


def test_non_json_result_dead_letters(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue, max_attempts=5)
    def bad_result() -> Any:
        return {"at": datetime.now(UTC)}

    handle = bad_result.enqueue()
    with running_worker(app), pytest.raises(TaskError, match="result\\['at'\\]"):
        handle.result(timeout_s=RESULT_TIMEOUT_S)

    assert app.client.get_message(handle.id).receive_count == 1


def test_fifo_group_runs_in_order(app: Conveyor, queue: str) -> None:
    order: list[int] = []

    @app.task(queue=queue)
    def step(index: int) -> None:
        order.append(index)

    app.client.create_queue(queue, {"type": "fifo"})
    handles = [step.options(group="account-1").enqueue(i) for i in range(10)]
    with running_worker(app, concurrency=4):
        for handle in handles:
            handle.result(timeout_s=RESULT_TIMEOUT_S)

    assert order == list(range(10))


# Failures ----------------------------------------------------------------


def test_reject_dead_letters_at_once(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue, max_attempts=5)
    def refuse(x: int) -> None:
        raise Reject(f"bad input {x}")

    handle = refuse.enqueue(7)
    with running_worker(app), pytest.raises(TaskError, match="Reject: bad input 7"):
        handle.result(timeout_s=RESULT_TIMEOUT_S)
    message = app.client.get_message(handle.id)

    assert handle.status() == "failed"
    assert message.state == "dead"
    assert message.queue == f"{queue}.dlq"
    assert message.source_queue == queue
    assert message.receive_count == 1
    assert message.last_error == "Reject: bad input 7"


def test_permanent_error_dead_letters_at_once(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue, max_attempts=5, permanent_errors=(KeyError,))
    def lookup() -> None:
        raise KeyError("missing")

    handle = lookup.enqueue()
    with running_worker(app), pytest.raises(TaskError, match="KeyError"):
        handle.result(timeout_s=RESULT_TIMEOUT_S)

    assert app.client.get_message(handle.id).receive_count == 1


def test_retries_then_success(app: Conveyor, queue: str) -> None:
    attempts: list[int] = []

    @app.task(queue=queue, max_attempts=5, backoff=Backoff(base_s=0.0, cap_s=0.0))
    def flaky() -> int:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return len(attempts)

    handle = flaky.enqueue()
    with running_worker(app):
        value = handle.result(timeout_s=RESULT_TIMEOUT_S)

    assert value == 3
    assert len(attempts) == 3


def test_retries_exhausted_dead_letters(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue, max_attempts=2, backoff={"base_s": 0.0, "cap_s": 0.0})
    def always_fails() -> None:
        raise ValueError("broken")

    handle = always_fails.enqueue()
    with running_worker(app), pytest.raises(TaskError, match="ValueError: broken"):
        handle.result(timeout_s=RESULT_TIMEOUT_S)
    message = app.client.get_message(handle.id)

    assert message.state == "dead"
    assert message.receive_count == 2


def test_retry_uses_task_backoff(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue, max_attempts=3, backoff=Backoff(base_s=600, cap_s=600, jitter=False))
    def fails_once() -> None:
        raise ValueError("later")

    handle = fails_once.enqueue()
    before = time.time()
    with running_worker(app):
        wait_for(lambda: handle.status() == "delayed")
    message = app.client.get_message(handle.id)

    assert message.due_at >= before + 600
    assert message.last_error == "ValueError: later"
    assert message.receive_count == 1


def test_sync_timeout_fails_attempt(app: Conveyor, queue: str) -> None:
    release = threading.Event()

    @app.task(queue=queue, timeout_s=0.2, max_attempts=1)
    def stuck() -> None:
        release.wait(RESULT_TIMEOUT_S)

    handle = stuck.enqueue()
    try:
        with running_worker(app), pytest.raises(TaskError, match="TaskTimeout"):
            handle.result(timeout_s=RESULT_TIMEOUT_S)
    finally:
        release.set()


def test_async_timeout_fails_attempt(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue, timeout_s=0.2, max_attempts=1)
    async def stuck() -> None:
        await asyncio.sleep(RESULT_TIMEOUT_S)

    handle = stuck.enqueue()
    with running_worker(app), pytest.raises(TaskError, match="TaskTimeout"):
        handle.result(timeout_s=RESULT_TIMEOUT_S)


def test_unknown_task_is_retried(app: Conveyor, queue: str) -> None:
    @app.task(queue=queue, name="known")
    def known() -> None:
        pass

    other = Conveyor(app.url)
    try:
        @other.task(queue=queue, name="not-in-worker", max_attempts=1)
        def unknown() -> None:
            pass

        handle = unknown.enqueue()
        with running_worker(app):
            with pytest.raises(TaskError, match="unknown task 'not-in-worker'"):
                handle.result(timeout_s=RESULT_TIMEOUT_S)
    finally:
        other.close()
