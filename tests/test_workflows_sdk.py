"""Workflows through the task framework on both transports, run by a real Worker.

The `app` fixture runs each test on an in-process Engine over a SQLite file
and on a real `conveyor server` subprocess over HTTP.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from http_fixtures import ServerProcess, http_server

from conveyor import Conveyor, Reject, Worker, chain, group
from conveyor.errors import TaskError, ValidationError, WorkflowNotFound
from conveyor.workflows.compiler import MAX_NESTING_DEPTH, MAX_WORKFLOW_STEPS

__all__ = ["http_server"]  # a fixture, used by name

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
    return "w-" + uuid.uuid4().hex[:12]


@contextlib.contextmanager
def running_worker(app: Conveyor) -> Iterator[Worker]:
    worker = Worker(app, poll_wait_s=0.2)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
        assert not thread.is_alive(), "worker did not stop"


def define_tasks(app: Conveyor, queue: str) -> dict[str, Any]:
    calls: list[str] = []

    @app.task(queue=queue, name=f"{queue}.double", result_ttl_s=0)
    def double(value: int) -> int:
        calls.append("double")
        return value * 2

    @app.task(queue=queue, name=f"{queue}.add")
    def add(value: int, extra: int = 0) -> int:
        calls.append("add")
        return value + extra

    @app.task(queue=queue, name=f"{queue}.total")
    def total(values: list) -> int:
        calls.append("total")
        return sum(values)

    @app.task(queue=queue, name=f"{queue}.broken", max_attempts=1)
    def broken(value: int) -> int:
        raise Reject(f"cannot use {value}")

    return {"double": double, "add": add, "total": total, "broken": broken, "calls": calls}


def test_chain_result_through_sdk(app, queue):
    t = define_tasks(app, queue)
    handle = chain(t["add"].step(1, extra=2), t["double"].step(), t["add"].step(10)).start()
    with running_worker(app):
        assert handle.result(timeout_s=RESULT_TIMEOUT_S) == 16
    assert handle.status() == "succeeded"
    assert [step.state for step in handle.steps()] == ["succeeded"] * 3


def test_group_join_through_sdk(app, queue):
    t = define_tasks(app, queue)
    flow = chain(
        t["add"].step(1),
        group(t["double"].step(), chain(t["add"].step(5), t["double"].step())),
        t["total"].step(),
    )
    handle = app.start_workflow(flow, name="fan-out")
    with running_worker(app):
        assert handle.result(timeout_s=RESULT_TIMEOUT_S) == 2 + 12
    steps = handle.steps()
    assert steps[-1].input == [2, 12]
    assert t["calls"].count("total") == 1


def test_failed_step_raises_task_error(app, queue):
    t = define_tasks(app, queue)
    handle = chain(t["add"].step(1), t["broken"].step(), t["total"].step()).start()
    with running_worker(app):
        with pytest.raises(TaskError, match="cannot use 1"):
            handle.result(timeout_s=RESULT_TIMEOUT_S)
    steps = handle.steps()
    assert [step.state for step in steps] == ["succeeded", "failed", "waiting"]
    assert "total" not in t["calls"]


def test_step_options_change_queue(app, queue):
    t = define_tasks(app, queue)
    other = queue + "-b"
    handle = chain(t["add"].step(1), t["add"].step(1).options(queue=other, priority=3)).start()
    steps = handle.steps()
    assert steps[1].queue == other
    assert other in [info.name for info in app.client.list_queues()]


def test_cancel_through_handle(app, queue):
    t = define_tasks(app, queue)
    handle = chain(t["add"].step(1), t["add"].step(2)).start()
    assert handle.cancel() == "cancelled"
    assert handle.status() == "cancelled"


def test_unknown_workflow_raises(app):
    with pytest.raises(WorkflowNotFound):
        app.workflow("no-such-id").status()


def test_empty_chain_rejected(app, queue):
    with pytest.raises(ValidationError, match="at least one"):
        chain()
    with pytest.raises(ValidationError, match="at least one"):
        group()


def test_non_json_args_rejected(app, queue):
    t = define_tasks(app, queue)
    with pytest.raises(ValidationError, match="not JSON"):
        t["add"].step(object())


def test_signature_checked_with_input(app, queue):
    t = define_tasks(app, queue)
    # The second step receives the input as `value`, so a second positional is one too many.
    with pytest.raises(ValidationError, match="arguments do not match"):
        chain(t["add"].step(1), t["add"].step(1, 2)).start()


def test_limits_checked_at_build(app, queue):
    t = define_tasks(app, queue)
    with pytest.raises(ValidationError, match="steps"):
        group(*[t["add"].step(1)] * (MAX_WORKFLOW_STEPS + 1))
    node = t["add"].step(1)
    for _ in range(MAX_NESTING_DEPTH - 1):
        node = chain(node)
    with pytest.raises(ValidationError, match="nested"):
        chain(node)


def test_member_type_checked(app, queue):
    with pytest.raises(ValidationError, match="task.step"):
        chain("not a step")


def test_list_workflows_through_client(app, queue):
    t = define_tasks(app, queue)
    handle = chain(t["add"].step(1), t["add"].step(2)).start(name=queue)
    workflows, _ = app.client.list_workflows(state="running", limit=1000)
    assert handle.id in [w.id for w in workflows]


def test_http_api_shape(http_server):
    client = httpx.Client(base_url=http_server.url + "/v1")
    queue = "w-" + uuid.uuid4().hex[:12]
    client.post("/queues", json={"name": queue}).raise_for_status()
    spec = {"chain": [{"step": {"queue": queue, "body": "a"}},
                      {"step": {"queue": queue, "body": "b"}}]}
    created = client.post("/workflows", json={"spec": spec, "name": "api"})
    assert created.status_code == 201
    workflow = created.json()
    assert workflow["state"] == "running"
    assert [s["state"] for s in workflow["steps"]] == ["queued", "waiting"]
    shown = client.get(f"/workflows/{workflow['id']}").json()
    assert shown["id"] == workflow["id"]
    listed = client.get("/workflows", params={"state": "running", "limit": 1}).json()
    assert len(listed["workflows"]) == 1
    assert "next_cursor" in listed
    bad = client.post("/workflows", json={"spec": {"chain": []}})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    missing = client.get("/workflows/nope")
    assert missing.status_code == 404
    cancelled = client.post(f"/workflows/{workflow['id']}/cancel").json()
    assert cancelled["state"] == "cancelled"
    paths = client.get(http_server.url + "/openapi.json").json()["paths"]
    assert "/v1/workflows" in paths
    assert "/v1/workflows/{workflow_id}/cancel" in paths
    client.close()


def test_handle_retry_posts_failed_step(app, queue):
    t = define_tasks(app, queue)
    other = queue + "-r"
    app.client.create_queue(other)
    handle = chain(t["add"].step(1), t["double"].step().options(queue=other)).start()
    app.client.delete_queue(other)
    with running_worker(app):
        with pytest.raises(TaskError, match="could not post the step"):
            handle.result(timeout_s=RESULT_TIMEOUT_S)
        app.client.create_queue(other)
        assert handle.retry() == "running"
    leased = app.client.reserve(other, 1)[0]
    assert leased.body["args"] == [1]


def test_sdk_start_creates_missing_queue(app, queue):
    t = define_tasks(app, queue)
    missing = queue + "-new"
    handle = chain(t["add"].step(1), t["add"].step(2).options(queue=missing)).start()
    assert missing in [info.name for info in app.client.list_queues()]
    assert handle.steps()[0].state == "queued"


def test_sdk_start_idempotency_key(app, queue):
    t = define_tasks(app, queue)
    flow = chain(t["add"].step(1), t["double"].step())
    key = "start-" + queue
    first = flow.start(idempotency_key=key)
    again = flow.start(idempotency_key=key)
    assert again.id == first.id
    assert len(app.client.reserve(queue, 10)) == 1


def test_sdk_pass_result_false(app, queue):
    t = define_tasks(app, queue)
    flow = chain(t["add"].step(1), t["add"].step(10, extra=1).options(pass_result=False))
    with running_worker(app):
        assert flow.start().result(timeout_s=RESULT_TIMEOUT_S) == 11


def test_sdk_delay_s_option(app, queue):
    t = define_tasks(app, queue)
    spec = t["add"].step(1).options(delay_s=30).to_spec()
    assert spec["step"]["delay_s"] == 30
    handle = t["add"].step(1).options(delay_s=30).start()
    assert app.client.reserve(queue, 10) == []
    assert handle.steps()[0].state == "queued"
