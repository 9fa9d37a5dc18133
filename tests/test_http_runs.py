"""The HTTP routes of task runs against a real `conveyor server` subprocess:
idempotency keys on post, completion records, progress, cancel by id and
attempt logs.

Every error check asserts the status, the problem type, and that stored data
did not change.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import httpx
import pytest
from pydantic import BaseModel

from conveyor.reports import MAX_LOG_BYTES, MAX_PROGRESS_TEXT
from conveyor.server import schemas
from http_fixtures import ServerProcess, http_server

__all__ = ["http_server"]  # a fixture, used by name

PROBLEM = "urn:conveyor:problem:"


@pytest.fixture
def api(http_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_server.url + "/v1", timeout=60) as client:
        yield client


@pytest.fixture
def queue(api: httpx.Client) -> str:
    name = "r-" + uuid.uuid4().hex[:12]
    settings = {"visibility_timeout_s": 30, "backoff_base_s": 0}
    response = api.post("/queues", json={"name": name, "settings": settings})
    assert response.status_code == 201, response.text
    return name


def valid(model: type[BaseModel], response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data = response.json()
    model.model_validate(data)
    return data


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == PROBLEM + code
    assert problem["detail"]
    return problem


def post(api: httpx.Client, queue: str, body: Any = "job", **fields: Any) -> dict[str, Any]:
    response = api.post(f"/queues/{queue}/messages", json={"messages": [{"body": body, **fields}]})
    assert response.status_code == 201, response.text
    return response.json()["messages"][0]


def reserve_one(api: httpx.Client, queue: str) -> dict[str, Any]:
    response = api.post(f"/queues/{queue}/reserve", json={"max_messages": 1})
    [message] = valid(schemas.MessageList, response)["messages"]
    return message


def get_message(api: httpx.Client, message_id: str) -> dict[str, Any]:
    return valid(schemas.MessageModel, api.get(f"/messages/{message_id}"))


def entries(api: httpx.Client, queue: str, action: str, *items: dict) -> list[dict]:
    response = api.post(f"/queues/{queue}/{action}", json={"entries": list(items)})
    return valid(schemas.EntryResults, response)["results"]


def lease(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": message["id"], "receipt": message["receipt"], **extra}


# Idempotency keys on post ------------------------------------------------------


def test_post_idempotency_key_deduplicates(api, queue):
    first = post(api, queue, "a", idempotency_key="charge-7")
    second = post(api, queue, "b", idempotency_key="charge-7")
    raw = post(api, queue, "c", dedup_id="charge-7")

    assert second == {"id": first["id"], "deduplicated": True}
    assert raw["deduplicated"] is False
    assert get_message(api, first["id"])["idempotency_key"] == "charge-7"


def test_post_key_and_dedup_id_rejected(api, queue):
    response = api.post(
        f"/queues/{queue}/messages",
        json={"messages": [{"body": 1, "dedup_id": "d", "idempotency_key": "k"}]},
    )

    assert_problem(response, 422, "invalid-request")
    assert api.get(f"/queues/{queue}/stats").json()["ready"] == 0


# Completion records ------------------------------------------------------------


def test_complete_then_stale_receipt(api, queue):
    post(api, queue)
    message = reserve_one(api, queue)

    [stored] = entries(api, queue, "complete", lease(message, result={"n": 1}))
    [stale] = entries(api, queue, "complete", {"id": message["id"], "receipt": "old"})
    shown = get_message(api, message["id"])

    assert stored == {"id": message["id"], "ok": True, "outcome": "completed"}
    assert stale["error"] == "stale-receipt"
    assert shown["completed_result"] == {"n": 1}
    assert shown["completed_at"] is not None


def test_complete_unknown_field_rejected(api, queue):
    post(api, queue)
    message = reserve_one(api, queue)

    response = api.post(
        f"/queues/{queue}/complete", json={"entries": [lease(message, status="done")]}
    )

    assert_problem(response, 422, "invalid-request")
    assert get_message(api, message["id"])["completed_at"] is None


# Progress ------------------------------------------------------------------------


def test_progress_stored_and_shown(api, queue):
    post(api, queue)
    message = reserve_one(api, queue)

    [result] = entries(
        api, queue, "progress", lease(message, progress=0.75, progress_text="3 of 4")
    )
    shown = get_message(api, message["id"])

    assert result == {"id": message["id"], "ok": True, "outcome": "updated"}
    assert shown["progress"] == 0.75
    assert shown["progress_text"] == "3 of 4"


@pytest.mark.parametrize(
    "fields",
    [
        {"progress": 1.01},
        {"progress": -1},
        {"progress": "half"},
        {"progress": True},
        {"progress_text": "no fraction"},
        {"progress": 0.5, "progress_text": "x" * (MAX_PROGRESS_TEXT + 1)},
    ],
)
def test_progress_bad_input_changes_nothing(api, queue, fields):
    post(api, queue)
    message = reserve_one(api, queue)

    response = api.post(
        f"/queues/{queue}/progress",
        json={"entries": [lease(message, progress=0.2), lease(message, **fields)]},
    )

    assert_problem(response, 422, "invalid-request")
    assert get_message(api, message["id"])["progress"] is None


# Cancel ----------------------------------------------------------------------------


def test_cancel_ready_message(api, queue):
    message_id = post(api, queue)["id"]

    response = api.post(f"/messages/{message_id}/cancel")
    result = api.get(f"/messages/{message_id}/result").json()

    assert valid(schemas.EntryResultModel, response) == {
        "id": message_id, "ok": True, "outcome": "cancelled",
    }
    assert result["status"] == "cancelled"
    assert api.get(f"/messages/{message_id}").status_code == 404


def test_cancel_reserved_message(api, queue):
    post(api, queue)
    message = reserve_one(api, queue)

    response = api.post(f"/messages/{message['id']}/cancel", json={})
    [touched] = entries(api, queue, "touch", lease(message))

    assert response.json()["outcome"] == "cancel-requested"
    assert touched["cancel_requested"] is True
    assert get_message(api, message["id"])["cancel_requested"] is True


def test_cancel_finished_message_conflict(api, queue):
    post(api, queue)
    message = reserve_one(api, queue)
    entries(api, queue, "ack", lease(message, result=5))

    response = api.post(f"/messages/{message['id']}/cancel")

    assert_problem(response, 409, "message-finished")
    assert api.get(f"/messages/{message['id']}/result").json()["status"] == "succeeded"


def test_cancel_unknown_message(api):
    response = api.post("/messages/nope/cancel")

    assert_problem(response, 404, "message-not-found")


@pytest.mark.parametrize("body", [{"result_ttl_s": -1}, {"result_ttl_s": "1"}, {"ttl": 5}])
def test_cancel_bad_body_changes_nothing(api, queue, body):
    message_id = post(api, queue)["id"]

    response = api.post(f"/messages/{message_id}/cancel", json=body)

    assert_problem(response, 422, "invalid-request")
    assert get_message(api, message_id)["state"] == "ready"


# Logs ------------------------------------------------------------------------------


def test_logs_per_attempt(api, queue):
    post(api, queue)
    first = reserve_one(api, queue)
    entries(api, queue, "nack", lease(first, logs="one\n", progress=0.5))
    second = reserve_one(api, queue)
    entries(api, queue, "ack", lease(second, result=1, logs="two\n"))

    every = valid(schemas.AttemptLogList, api.get(f"/messages/{first['id']}/logs"))
    only = valid(
        schemas.AttemptLogList, api.get(f"/messages/{first['id']}/logs", params={"attempt": 2})
    )

    assert every["id"] == first["id"]
    assert [(log["attempt"], log["text"]) for log in every["logs"]] == [(1, "one\n"), (2, "two\n")]
    assert [log["text"] for log in only["logs"]] == ["two\n"]


def test_logs_cut_at_limit(api, queue):
    post(api, queue)
    message = reserve_one(api, queue)

    entries(api, queue, "ack", lease(message, result=1, logs="é" * MAX_LOG_BYTES))
    [log] = api.get(f"/messages/{message['id']}/logs").json()["logs"]

    assert len(log["text"].encode()) <= MAX_LOG_BYTES
    assert "bytes were dropped here]\n" in log["text"]
    assert log["text"].endswith("é")


def test_logs_not_string_changes_nothing(api, queue):
    post(api, queue)
    message = reserve_one(api, queue)

    response = api.post(f"/queues/{queue}/ack", json={"entries": [lease(message, logs=5)]})

    assert_problem(response, 422, "invalid-request")
    assert get_message(api, message["id"])["state"] == "reserved"


@pytest.mark.parametrize("attempt", ["0", "x"])
def test_logs_bad_attempt(api, attempt):
    response = api.get("/messages/any/logs", params={"attempt": attempt})

    assert_problem(response, 422, "invalid-request")


def test_logs_unknown_message_empty(api):
    response = api.get("/messages/nope/logs")

    assert valid(schemas.AttemptLogList, response) == {"id": "nope", "logs": []}
