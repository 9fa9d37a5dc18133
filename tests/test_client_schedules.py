"""Schedule calls on both transports: an in-process Engine and HTTPClient."""

from __future__ import annotations

import inspect
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest

from conveyor import errors
from conveyor.client import HTTPClient, connect
from conveyor.engine import Engine
from conveyor.models import Schedule
from http_fixtures import ServerProcess, http_server

__all__ = ["http_server"]  # fixtures, used by name

SCHEDULE_METHODS = (
    "create_schedule",
    "put_schedule",
    "update_schedule",
    "get_schedule",
    "list_schedules",
    "pause_schedule",
    "resume_schedule",
    "delete_schedule",
    "list_schedule_ticks",
)


@pytest.fixture(params=["engine", "http"])
def client(request: pytest.FixtureRequest, tmp_path) -> Iterator[Any]:
    if request.param == "engine":
        opened = connect(f"sqlite:///{tmp_path}/client.db")
    else:
        server: ServerProcess = request.getfixturevalue("http_server")
        opened = connect(server.url)
    yield opened
    opened.close()


@pytest.fixture
def queue(client: Any) -> str:
    name = "s-" + uuid.uuid4().hex[:12]
    client.create_queue(name)
    return name


def new_name() -> str:
    return "sched-" + uuid.uuid4().hex[:10]


@pytest.mark.parametrize("name", SCHEDULE_METHODS)
def test_http_signature_matches_engine(name: str) -> None:
    engine_signature = inspect.signature(getattr(Engine, name))
    http_signature = inspect.signature(getattr(HTTPClient, name))
    assert list(http_signature.parameters) == list(engine_signature.parameters)
    for parameter, expected in engine_signature.parameters.items():
        assert http_signature.parameters[parameter].default == expected.default


def test_create_and_get(client: Any, queue: str) -> None:
    name = new_name()
    created = client.create_schedule(
        name, queue, cron="0 9 * * 1-5", timezone="Europe/Berlin",
        body={"report": "daily"}, headers={"kind": "report"}, priority=3,
    )
    assert isinstance(created, Schedule)
    assert created.cron == "0 9 * * 1-5"
    assert created.message == {"body": {"report": "daily"}, "headers": {"kind": "report"},
                               "priority": 3}
    assert len(created.next_fire_times) == 5
    assert client.get_schedule(name) == created


def test_create_existing_raises(client: Any, queue: str) -> None:
    name = new_name()
    client.create_schedule(name, queue, interval_s=60)
    with pytest.raises(errors.ScheduleAlreadyExists):
        client.create_schedule(name, queue, interval_s=60)


def test_get_missing_raises(client: Any) -> None:
    with pytest.raises(errors.ScheduleNotFound):
        client.get_schedule(new_name())


def test_invalid_cron_raises(client: Any, queue: str) -> None:
    with pytest.raises(errors.ValidationError) as caught:
        client.create_schedule(new_name(), queue, cron="0 25 * * *")
    assert "0 25 * * *" in str(caught.value)


def test_unknown_timezone_raises(client: Any, queue: str) -> None:
    with pytest.raises(errors.ValidationError) as caught:
        client.create_schedule(new_name(), queue, cron="0 1 * * *", timezone="Nowhere/City")
    assert "Nowhere/City" in str(caught.value)


def test_put_idempotent(client: Any, queue: str) -> None:
    name = new_name()
    first = client.put_schedule(name, queue, source="code", interval_s=30, body=1)
    again = client.put_schedule(name, queue, source="code", interval_s=30, body=1)
    assert again.updated_at == first.updated_at
    assert again.source == "code"


def test_update_pause_resume_delete(client: Any, queue: str) -> None:
    name = new_name()
    client.create_schedule(name, queue, interval_s=60)
    assert client.update_schedule(name, max_runs=3).max_runs == 3
    assert client.update_schedule(name, max_runs=None).max_runs is None
    assert client.pause_schedule(name).state == "paused"
    assert client.resume_schedule(name).state == "active"
    client.delete_schedule(name)
    with pytest.raises(errors.ScheduleNotFound):
        client.get_schedule(name)


def test_list_by_queue(client: Any, queue: str) -> None:
    names = sorted(new_name() for _ in range(3))
    for name in names:
        client.create_schedule(name, queue, interval_s=60)
    assert [s.name for s in client.list_schedules(queue=queue)] == names


def test_ticks_empty_before_firing(client: Any, queue: str) -> None:
    name = new_name()
    client.create_schedule(name, queue, interval_s=3600, start_at=4_000_000_000)
    assert client.list_schedule_ticks(name) == []


def test_openapi_describes_schedules(http_server: ServerProcess) -> None:
    document = httpx.get(http_server.url + "/openapi.json").json()
    paths = document["paths"]
    assert set(paths["/v1/schedules"]) == {"get", "post"}
    assert set(paths["/v1/schedules/{name}"]) == {"get", "put", "patch", "delete"}
    assert "post" in paths["/v1/schedules/{name}/pause"]
    assert "post" in paths["/v1/schedules/{name}/resume"]
    assert "get" in paths["/v1/schedules/{name}/ticks"]
    assert "CreateScheduleRequest" in document["components"]["schemas"]


def test_http_rejects_unknown_field(http_server: ServerProcess, tmp_path) -> None:
    response = httpx.post(
        http_server.url + "/v1/schedules",
        json={"name": "x", "queue": "q", "interval_s": 60, "colour": "red"},
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


def test_enqueue_in_ignores_client_clock(http_server: ServerProcess, monkeypatch) -> None:
    from conveyor import Conveyor

    app = Conveyor(http_server.url)

    @app.task(queue="clock-" + uuid.uuid4().hex[:8], name="clock.noop")
    def noop() -> None:
        return None

    app.ensure_queue(noop.queue)
    real_now = time.time()
    # This client's clock is three days behind the server's.
    monkeypatch.setattr(time, "time", lambda: real_now - 3 * 86_400)
    handle = noop.enqueue_in(60)
    monkeypatch.undo()
    message = app.client.get_message(handle.id)
    app.close()
    assert message.due_at - message.posted_at == pytest.approx(60)
    assert abs(message.posted_at - time.time()) < 30


NON_FINITE = [
    {"cron": "* * * * *", "interval_s": float("nan")},
    {"interval_s": float("inf")},
    {"interval_s": 60, "grace_s": float("nan")},
]


@pytest.mark.parametrize("fields", NON_FINITE)
def test_non_finite_rejected_alike(client, queue, fields) -> None:
    name = new_name()
    with pytest.raises(errors.ValidationError) as caught:
        client.create_schedule(name, queue, **fields)
    assert "finite" in caught.value.detail
    assert client.list_schedules(queue=queue) == []


def test_update_non_finite_rejected(client, queue) -> None:
    name = new_name()
    client.create_schedule(name, queue, interval_s=60)
    with pytest.raises(errors.ValidationError):
        client.update_schedule(name, interval_s=float("nan"))
    assert client.get_schedule(name).interval_s == 60.0


def test_timedelta_and_datetime_accepted(client, queue) -> None:
    from datetime import datetime, timedelta, timezone

    start = datetime(2030, 1, 1, 9, tzinfo=timezone.utc)
    schedule = client.create_schedule(
        new_name(), queue, interval_s=timedelta(minutes=5), grace_s=timedelta(seconds=10),
        start_at=start, end_at=start + timedelta(days=1),
    )
    assert schedule.interval_s == 300.0
    assert schedule.grace_s == 10.0
    assert schedule.start_at == start.timestamp()
    assert schedule.end_at == start.timestamp() + 86_400


def test_update_takes_timedelta(client, queue) -> None:
    from datetime import timedelta

    name = new_name()
    client.create_schedule(name, queue, interval_s=60)
    assert client.update_schedule(name, interval_s=timedelta(hours=1)).interval_s == 3600.0


def test_naive_datetime_rejected_alike(client, queue) -> None:
    from datetime import datetime

    with pytest.raises(errors.ValidationError) as caught:
        client.create_schedule(new_name(), queue, interval_s=60, start_at=datetime(2030, 1, 1))
    assert "start_at" in caught.value.detail
    assert "time zone" in caught.value.detail


def test_list_pages_with_after(client, queue) -> None:
    names = sorted(new_name() for _ in range(5))
    for name in names:
        client.create_schedule(name, queue, interval_s=60)
    first = client.list_schedules(queue=queue, limit=3)
    second = client.list_schedules(queue=queue, limit=3, after=first[-1].name)
    assert [s.name for s in first] == names[:3]
    assert [s.name for s in second] == names[3:]


def test_http_list_returns_next_cursor(http_server) -> None:
    queue = "s-" + uuid.uuid4().hex[:12]
    with connect(http_server.url) as http:
        http.create_queue(queue)
        for _ in range(3):
            http.create_schedule(new_name(), queue, interval_s=60)
    full = httpx.get(f"{http_server.url}/v1/schedules", params={"queue": queue, "limit": 2})
    last = httpx.get(f"{http_server.url}/v1/schedules",
                     params={"queue": queue, "limit": 2, "after": full.json()["next_cursor"]})
    assert full.json()["next_cursor"] == full.json()["schedules"][-1]["name"]
    assert len(last.json()["schedules"]) == 1
    assert last.json()["next_cursor"] is None


def test_long_name_echo_capped(http_server) -> None:
    name = "x" * 5000
    response = httpx.get(f"{http_server.url}/v1/schedules/-{name}")
    assert response.status_code == 422
    assert len(response.text) < 1000


def test_http_queue_delete_names_schedules(http_server) -> None:
    queue = "s-" + uuid.uuid4().hex[:12]
    name = new_name()
    with connect(http_server.url) as http:
        http.create_queue(queue)
        http.create_schedule(name, queue, interval_s=60)
    response = httpx.delete(f"{http_server.url}/v1/queues/{queue}")
    assert response.status_code == 200
    assert response.json()["schedules"] == [name]
