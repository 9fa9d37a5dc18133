"""The HTTP API, exercised against a real `conveyor server` subprocess.

Every error check asserts the status, the problem type, and that stored data
did not change.
"""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from pydantic import BaseModel

from conveyor.server import schemas
from http_fixtures import (
    TOKEN,
    ServerProcess,
    auth_server,
    conveyor_command,
    free_port,
    http_server,
    start_server,
)

__all__ = ["auth_server", "http_server"]  # fixtures, used by name

PROBLEM = "urn:conveyor:problem:"
MIB = 1024 * 1024


# Fixtures and helpers -----------------------------------------------------


@pytest.fixture
def api(http_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_server.url + "/v1", timeout=60) as client:
        yield client


@pytest.fixture
def queue(api: httpx.Client) -> str:
    """A new queue with a short lease, so tests can let leases lapse."""
    name = "q-" + uuid.uuid4().hex[:12]
    response = api.post(
        "/queues", json={"name": name, "settings": {"visibility_timeout_s": 30}}
    )
    assert response.status_code == 201, response.text
    return name


def valid(model: type[BaseModel], response: httpx.Response) -> dict[str, Any]:
    """Return the JSON body after checking it against the documented model."""
    data = response.json()
    model.model_validate(data)
    return data


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == PROBLEM + code
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    return problem


def post(api: httpx.Client, queue: str, *messages: dict[str, Any]) -> list[str]:
    response = api.post(f"/queues/{queue}/messages", json={"messages": list(messages)})
    assert response.status_code == 201, response.text
    return [m["id"] for m in response.json()["messages"]]


def reserve(api: httpx.Client, queue: str, **options: Any) -> list[dict[str, Any]]:
    response = api.post(
        f"/queues/{queue}/reserve", json={"max_messages": 10, **options}
    )
    assert response.status_code == 200, response.text
    return valid(schemas.MessageList, response)["messages"]


def stats(api: httpx.Client, queue: str) -> dict[str, Any]:
    response = api.get(f"/queues/{queue}/stats")
    assert response.status_code == 200, response.text
    return valid(schemas.QueueStatsModel, response)


def counts(api: httpx.Client, queue: str) -> dict[str, Any]:
    """Return the per-state counts, without the age and the flow-control fields."""
    data = stats(api, queue)
    return {key: data[key] for key in ("queue", "ready", "delayed", "reserved", "dead")}


def peek(api: httpx.Client, queue: str, **params: Any) -> list[dict[str, Any]]:
    response = api.get(f"/queues/{queue}/messages", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return valid(schemas.MessageList, response)["messages"]


# Service ------------------------------------------------------------------


def test_health_reports_status_and_version(api: httpx.Client) -> None:
    response = api.get("/health")
    data = valid(schemas.Health, response)
    assert response.status_code == 200
    assert data["status"] == "ok"
    assert data["version"]


def test_openapi_lists_every_endpoint(http_server: ServerProcess) -> None:
    document = httpx.get(http_server.url + "/openapi.json").json()
    expected = {
        ("/v1/health", "get"),
        ("/v1/queues", "get"),
        ("/v1/queues", "post"),
        ("/v1/queues/{name}", "get"),
        ("/v1/queues/{name}", "patch"),
        ("/v1/queues/{name}", "delete"),
        ("/v1/queues/{name}/purge", "post"),
        ("/v1/queues/{name}/stats", "get"),
        ("/v1/queues/{name}/pause", "post"),
        ("/v1/queues/{name}/resume", "post"),
        ("/v1/queues/{name}/breaker", "get"),
        ("/v1/queues/{name}/breaker", "post"),
        ("/v1/redrive-jobs", "get"),
        ("/v1/redrive-jobs/{job_id}", "get"),
        ("/v1/redrive-jobs/{job_id}/cancel", "post"),
        ("/v1/queues/{name}/messages", "post"),
        ("/v1/queues/{name}/messages", "get"),
        ("/v1/queues/{name}/reserve", "post"),
        ("/v1/queues/{name}/ack", "post"),
        ("/v1/queues/{name}/nack", "post"),
        ("/v1/queues/{name}/touch", "post"),
        ("/v1/messages/{message_id}", "get"),
        ("/v1/messages/{message_id}/result", "get"),
        ("/v1/queues/{dlq}/dead", "get"),
        ("/v1/queues/{dlq}/redrive", "post"),
        ("/v1/queues/{name}/complete", "post"),
        ("/v1/queues/{name}/progress", "post"),
        ("/v1/messages/{message_id}/cancel", "post"),
        ("/v1/messages/{message_id}/logs", "get"),
        ("/v1/schedules", "get"),
        ("/v1/schedules", "post"),
        ("/v1/schedules/{name}", "get"),
        ("/v1/schedules/{name}", "put"),
        ("/v1/schedules/{name}", "patch"),
        ("/v1/schedules/{name}", "delete"),
        ("/v1/schedules/{name}/pause", "post"),
        ("/v1/schedules/{name}/resume", "post"),
        ("/v1/schedules/{name}/ticks", "get"),
        ("/v1/workflows", "post"),
        ("/v1/workflows", "get"),
        ("/v1/workflows/{workflow_id}", "get"),
        ("/v1/workflows/{workflow_id}/cancel", "post"),
        ("/v1/workflows/{workflow_id}/retry", "post"),
    }
    listed = {
        (path, method) for path, item in document["paths"].items() for method in item
    }
    assert expected <= listed
    assert len(listed) == len(expected)


# POST endpoints that take no request body.
BODILESS_ACTIONS = ("/purge", "/pause", "/resume", "/cancel", "/retry")


def test_openapi_declares_request_and_response_models(
    http_server: ServerProcess,
) -> None:
    document = httpx.get(http_server.url + "/openapi.json").json()
    components = document["components"]["schemas"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            success = operation["responses"].get("200") or operation["responses"].get(
                "201"
            )
            schema = success["content"]["application/json"]["schema"]
            assert schema["$ref"].split("/")[-1] in components, (method, path)
            if method in ("post", "patch") and not path.endswith(BODILESS_ACTIONS):
                ref = operation["requestBody"]["content"]["application/json"]["schema"][
                    "$ref"
                ]
                assert ref.split("/")[-1] in components, (method, path)


def test_openapi_references_resolve(http_server: ServerProcess) -> None:
    document = httpx.get(http_server.url + "/openapi.json").json()
    components = document["components"]["schemas"]
    references: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                references.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)
    assert references
    for reference in references:
        assert reference.startswith("#/components/schemas/"), reference
        assert reference.rsplit("/", 1)[-1] in components, reference


def test_openapi_errors_are_problem_documents(http_server: ServerProcess) -> None:
    document = httpx.get(http_server.url + "/openapi.json").json()
    operation = document["paths"]["/v1/queues/{name}/messages"]["post"]
    error = operation["responses"]["422"]["content"]
    assert list(error) == ["application/problem+json"]
    assert error["application/problem+json"]["schema"]["$ref"].endswith("/Problem")


def test_openapi_request_schema_names_fields(http_server: ServerProcess) -> None:
    document = httpx.get(http_server.url + "/openapi.json").json()
    components = document["components"]["schemas"]
    assert "priority" in components["NewMessageModel"]["properties"]
    assert "entries" in components["NackRequest"]["properties"]


def test_unknown_route_is_problem_404(api: httpx.Client) -> None:
    assert_problem(api.get("/nowhere"), 404, "not-found")


def test_wrong_method_is_problem_405(api: httpx.Client) -> None:
    assert_problem(api.put("/queues"), 405, "method-not-allowed")


# Queues -------------------------------------------------------------------


def test_queue_create_returns_settings(api: httpx.Client) -> None:
    name = "c-" + uuid.uuid4().hex[:12]
    response = api.post("/queues", json={"name": name, "settings": {"max_attempts": 3}})
    data = valid(schemas.QueueInfoModel, response)
    assert response.status_code == 201
    assert data["name"] == name
    assert data["settings"]["max_attempts"] == 3
    assert data["settings"]["dead_letter_queue"] == name + ".dlq"


def test_queue_create_existing_is_409(api: httpx.Client, queue: str) -> None:
    before = api.get(f"/queues/{queue}").json()
    response = api.post(
        "/queues", json={"name": queue, "settings": {"max_attempts": 9}}
    )
    assert_problem(response, 409, "queue-exists")
    assert api.get(f"/queues/{queue}").json() == before


def test_queue_create_exist_ok_returns_existing(api: httpx.Client, queue: str) -> None:
    response = api.post("/queues", json={"name": queue, "exist_ok": True})
    assert response.status_code == 200
    assert response.json()["settings"]["visibility_timeout_s"] == 30


def test_queue_list_includes_queue_and_dlq(api: httpx.Client, queue: str) -> None:
    response = api.get("/queues")
    names = {q["name"] for q in valid(schemas.QueueList, response)["queues"]}
    assert queue in names
    assert queue + ".dlq" in names


def test_queue_get_unknown_is_404(api: httpx.Client) -> None:
    assert_problem(api.get("/queues/no-such-queue"), 404, "queue-not-found")


@pytest.mark.parametrize("name", ["bad name", "-leading", "x" * 81, "semi;colon"])
def test_queue_invalid_name_is_422(api: httpx.Client, name: str) -> None:
    before = {q["name"] for q in api.get("/queues").json()["queues"]}
    problem = assert_problem(
        api.post("/queues", json={"name": name}), 422, "invalid-request"
    )
    assert "queue name" in problem["detail"]
    assert {q["name"] for q in api.get("/queues").json()["queues"]} == before


def test_queue_create_wrong_setting_type_is_422(api: httpx.Client) -> None:
    name = "t-" + uuid.uuid4().hex[:12]
    body = {"name": name, "settings": {"max_attempts": "three"}}
    problem = assert_problem(api.post("/queues", json=body), 422, "invalid-request")
    assert "settings.max_attempts" in problem["detail"]
    assert_problem(api.get(f"/queues/{name}"), 404, "queue-not-found")


def test_queue_create_unknown_setting_is_422(api: httpx.Client) -> None:
    name = "u-" + uuid.uuid4().hex[:12]
    body = {"name": name, "settings": {"visibility": 5}}
    problem = assert_problem(api.post("/queues", json=body), 422, "invalid-request")
    assert "settings.visibility" in problem["detail"]
    assert_problem(api.get(f"/queues/{name}"), 404, "queue-not-found")


def test_queue_create_malformed_json_is_400(api: httpx.Client) -> None:
    before = {q["name"] for q in api.get("/queues").json()["queues"]}
    response = api.post(
        "/queues",
        content=b'{"name": "m1"',
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 400, "malformed-request")
    assert {q["name"] for q in api.get("/queues").json()["queues"]} == before


def test_queue_update_changes_setting(api: httpx.Client, queue: str) -> None:
    response = api.patch(f"/queues/{queue}", json={"settings": {"max_attempts": 7}})
    data = valid(schemas.QueueInfoModel, response)
    assert response.status_code == 200
    assert data["settings"]["max_attempts"] == 7
    assert api.get(f"/queues/{queue}").json()["settings"]["max_attempts"] == 7


def test_queue_update_out_of_range_is_422(api: httpx.Client, queue: str) -> None:
    before = api.get(f"/queues/{queue}").json()
    response = api.patch(
        f"/queues/{queue}", json={"settings": {"visibility_timeout_s": -1}}
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert "visibility_timeout_s" in problem["detail"]
    assert api.get(f"/queues/{queue}").json() == before


def test_queue_update_unknown_queue_is_404(api: httpx.Client) -> None:
    response = api.patch(
        "/queues/no-such-queue", json={"settings": {"max_attempts": 2}}
    )
    assert_problem(response, 404, "queue-not-found")


def test_queue_delete_removes_queue(api: httpx.Client, queue: str) -> None:
    post(api, queue, {"body": 1}, {"body": 2})
    response = api.delete(f"/queues/{queue}")
    data = valid(schemas.QueueDeleted, response)
    assert data == {"queue": queue, "messages_deleted": 2, "schedules": []}
    assert_problem(api.get(f"/queues/{queue}"), 404, "queue-not-found")


def test_queue_purge_deletes_messages(api: httpx.Client, queue: str) -> None:
    post(api, queue, {"body": 1}, {"body": 2}, {"body": 3})
    response = api.post(f"/queues/{queue}/purge")
    assert valid(schemas.MessagesDeleted, response)["messages_deleted"] == 3
    assert stats(api, queue)["ready"] == 0


def test_queue_stats_counts_states(api: httpx.Client, queue: str) -> None:
    post(api, queue, {"body": 1}, {"body": 2}, {"body": 3, "delay_s": 600})
    reserve(api, queue, max_messages=1)
    data = stats(api, queue)
    assert data["ready"] == 1
    assert data["reserved"] == 1
    assert data["delayed"] == 1
    assert data["dead"] == 0
    assert data["oldest_ready_age_s"] >= 0


# Posting ------------------------------------------------------------------


def test_post_returns_ids_in_order(api: httpx.Client, queue: str) -> None:
    response = api.post(
        f"/queues/{queue}/messages", json={"messages": [{"body": "a"}, {"body": "b"}]}
    )
    data = valid(schemas.PostResponse, response)
    assert response.status_code == 201
    ids = [m["id"] for m in data["messages"]]
    assert [m["body"] for m in peek(api, queue)] == ["a", "b"]
    assert [m["id"] for m in peek(api, queue)] == ids


def test_post_reports_deduplicated(api: httpx.Client, queue: str) -> None:
    first = api.post(
        f"/queues/{queue}/messages", json={"messages": [{"body": 1, "dedup_id": "d"}]}
    )
    again = api.post(
        f"/queues/{queue}/messages", json={"messages": [{"body": 2, "dedup_id": "d"}]}
    )
    assert again.json()["messages"][0]["id"] == first.json()["messages"][0]["id"]
    assert first.json()["messages"][0]["deduplicated"] is False
    assert again.json()["messages"][0]["deduplicated"] is True
    assert stats(api, queue)["ready"] == 1


def test_post_stores_options(api: httpx.Client, queue: str) -> None:
    message = {
        "body": {"k": 1},
        "headers": {"trace": "t1"},
        "priority": 5,
        "max_attempts": 2,
    }
    post(api, queue, message)
    stored = peek(api, queue)[0]
    assert stored["headers"] == {"trace": "t1"}
    assert stored["priority"] == 5
    assert stored["max_attempts"] == 2


def test_post_delay_makes_message_delayed(api: httpx.Client, queue: str) -> None:
    post(api, queue, {"body": 1, "delay_s": 600})
    assert peek(api, queue)[0]["state"] == "delayed"
    assert reserve(api, queue) == []


def test_post_is_all_or_nothing(api: httpx.Client, queue: str) -> None:
    body = {"messages": [{"body": "fine"}, {"body": "bad", "priority": 5000}]}
    problem = assert_problem(
        api.post(f"/queues/{queue}/messages", json=body), 422, "invalid-request"
    )
    assert problem["index"] == 1
    assert counts(api, queue)["ready"] == 0


def test_post_malformed_json_is_400(api: httpx.Client, queue: str) -> None:
    response = api.post(
        f"/queues/{queue}/messages", content=b'{"messages": [{"body": 1}'
    )
    assert_problem(response, 400, "malformed-request")
    assert counts(api, queue)["ready"] == 0


def test_post_empty_body_is_400(api: httpx.Client, queue: str) -> None:
    assert_problem(
        api.post(f"/queues/{queue}/messages", content=b""), 400, "malformed-request"
    )
    assert counts(api, queue)["ready"] == 0


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"body": 1, "priority": "high"}, "messages[0].priority"),
        ({"body": 1, "delay_s": "soon"}, "messages[0].delay_s"),
        ({"body": 1, "priority": True}, "messages[0].priority"),
        ({"body": 1, "headers": ["a"]}, "messages[0].headers"),
        ({"body": 1, "group": 7}, "messages[0].group"),
        ({"body": 1, "colour": "red"}, "messages[0].colour"),
    ],
)
def test_post_wrong_type_is_422(
    api: httpx.Client, queue: str, message: dict[str, Any], field: str
) -> None:
    response = api.post(f"/queues/{queue}/messages", json={"messages": [message]})
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["field"] == field
    assert counts(api, queue)["ready"] == 0


def test_post_messages_not_a_list_is_422(api: httpx.Client, queue: str) -> None:
    response = api.post(f"/queues/{queue}/messages", json={"messages": {"body": 1}})
    assert_problem(response, 422, "invalid-request")
    assert counts(api, queue)["ready"] == 0


def test_post_negative_delay_is_422(api: httpx.Client, queue: str) -> None:
    response = api.post(
        f"/queues/{queue}/messages", json={"messages": [{"body": 1, "delay_s": -5}]}
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert "delay_s" in problem["detail"]
    assert "-5" in problem["detail"]
    assert counts(api, queue) == {
        "queue": queue,
        "ready": 0,
        "delayed": 0,
        "reserved": 0,
        "dead": 0,
    }


def test_post_body_and_base64_together_is_422(api: httpx.Client, queue: str) -> None:
    message = {"body": 1, "body_base64": "AA=="}
    response = api.post(
        f"/queues/{queue}/messages", json={"messages": [{"body": 0}, message]}
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["index"] == 1
    assert counts(api, queue)["ready"] == 0


def test_post_invalid_base64_is_422(api: httpx.Client, queue: str) -> None:
    response = api.post(
        f"/queues/{queue}/messages", json={"messages": [{"body_base64": "%%"}]}
    )
    assert_problem(response, 422, "invalid-request")
    assert counts(api, queue)["ready"] == 0


def test_post_too_many_messages_is_422(api: httpx.Client, queue: str) -> None:
    body = {"messages": [{"body": i} for i in range(1001)]}
    assert_problem(
        api.post(f"/queues/{queue}/messages", json=body), 422, "invalid-request"
    )
    assert counts(api, queue)["ready"] == 0


def test_post_unknown_queue_is_404(api: httpx.Client) -> None:
    response = api.post(
        "/queues/no-such-queue/messages", json={"messages": [{"body": 1}]}
    )
    assert_problem(response, 404, "queue-not-found")
    assert_problem(api.get("/queues/no-such-queue"), 404, "queue-not-found")


def test_post_invalid_queue_name_is_422(api: httpx.Client) -> None:
    response = api.post("/queues/bad%20name/messages", json={"messages": [{"body": 1}]})
    assert_problem(response, 422, "invalid-request")


def test_post_above_queue_size_limit_is_413(api: httpx.Client, queue: str) -> None:
    api.patch(f"/queues/{queue}", json={"settings": {"max_message_size": 1024}})
    response = api.post(
        f"/queues/{queue}/messages", json={"messages": [{"body": "x" * 2000}]}
    )
    problem = assert_problem(response, 413, "payload-too-large")
    assert "1024" in problem["detail"]
    assert counts(api, queue)["ready"] == 0


# Bodies -------------------------------------------------------------------

BODIES = {
    "nul": "before\u0000after",
    "emoji": "\U0001f680 \U0001f469\u200d\U0001f4bb",
    "rtl": "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627 \u202eabc",
    "nested": {"list": [1, 2.5, None, True, "\u0000"], "empty": {}, "\u00e9": ""},
    "empty": "",
    "null": None,
    "number": -12.75,
}


@pytest.mark.parametrize("name", list(BODIES))
def test_body_round_trips(api: httpx.Client, queue: str, name: str) -> None:
    body = BODIES[name]
    [message_id] = post(api, queue, {"body": body})
    [received] = reserve(api, queue)
    assert received["body"] == body
    assert api.get(f"/messages/{message_id}").json()["body"] == body


def test_body_large_integers_round_trip(api: httpx.Client, queue: str) -> None:
    body = {"max_u64": 2**64 - 1, "min_i64": -(2**63), "digits": "1" * 40}
    post(api, queue, {"body": body})
    [received] = reserve(api, queue)
    assert received["body"] == body


def test_post_integer_beyond_64_bits_is_422(api: httpx.Client, queue: str) -> None:
    raw = b'{"messages": [{"body": {"n": 123456789012345678901234567890}}]}'
    problem = assert_problem(
        api.post(f"/queues/{queue}/messages", content=raw), 422, "invalid-request"
    )
    assert "64-bit" in problem["detail"]
    assert counts(api, queue)["ready"] == 0


def test_post_negative_19_digits_is_422(api: httpx.Client, queue: str) -> None:
    raw = b'{"messages": [{"body": {"n": -9999999999999999999}}]}'
    assert_problem(api.post(f"/queues/{queue}/messages", content=raw), 422, "invalid-request")
    assert counts(api, queue)["ready"] == 0


def test_body_min_int64_round_trips(api: httpx.Client, queue: str) -> None:
    raw = b'{"messages": [{"body": {"n": -9223372036854775808}}]}'
    assert api.post(f"/queues/{queue}/messages", content=raw).status_code == 201
    [received] = reserve(api, queue)
    assert received["body"] == {"n": -(2**63)}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"messages": [{"body": {"x": 1e400, "pad": "12345678901234567890"}}]}',
        b'{"messages": [{"body": 1, "dedup_id": "\\ud800"}], "pad": 12345678901234567890}',
        b'{"pad": 12345678901234567890, "messages": [{"body": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}]}",
    ],
    ids=["infinity", "lone-surrogate", "deep-nesting"],
)
def test_post_unstorable_json_is_400(api: httpx.Client, queue: str, raw: bytes) -> None:
    response = api.post(f"/queues/{queue}/messages", content=raw)
    assert_problem(response, 400, "malformed-request")
    assert counts(api, queue)["ready"] == 0


def test_binary_body_round_trips(api: httpx.Client, queue: str) -> None:
    data = bytes(range(256)) * 4
    encoded = base64.b64encode(data).decode()
    post(api, queue, {"body_base64": encoded})
    [received] = reserve(api, queue)
    assert "body" not in received
    assert base64.b64decode(received["body_base64"]) == data


def test_ten_mib_text_message_round_trips(api: httpx.Client, queue: str) -> None:
    api.patch(f"/queues/{queue}", json={"settings": {"max_message_size": 16 * MIB}})
    mixed = "\u0000\u00e9\u05e9\U0001f680" * 1000
    body = mixed + "x" * (10 * MIB - len(mixed))
    post(api, queue, {"body": body})
    [received] = reserve(api, queue)
    assert len(received["body"]) == len(body)
    assert received["body"] == body


def test_ten_mib_binary_message_round_trips(api: httpx.Client, queue: str) -> None:
    api.patch(f"/queues/{queue}", json={"settings": {"max_message_size": 16 * MIB}})
    data = bytes(range(256)) * (10 * MIB // 256)
    post(api, queue, {"body_base64": base64.b64encode(data).decode()})
    [received] = reserve(api, queue)
    assert base64.b64decode(received["body_base64"]) == data


def test_ten_mib_message_needs_larger_queue_limit(
    api: httpx.Client, queue: str
) -> None:
    body = "x" * (10 * MIB)
    response = api.post(
        f"/queues/{queue}/messages", json={"messages": [{"body": body}]}
    )
    assert_problem(response, 413, "payload-too-large")
    assert counts(api, queue)["ready"] == 0


# Peek and get -------------------------------------------------------------


def test_peek_does_not_lease(api: httpx.Client, queue: str) -> None:
    post(api, queue, {"body": 1})
    [message] = peek(api, queue)
    assert message["state"] == "ready"
    assert message["receive_count"] == 0
    assert stats(api, queue)["reserved"] == 0


def test_peek_filters_by_state(api: httpx.Client, queue: str) -> None:
    post(api, queue, {"body": "now"}, {"body": "later", "delay_s": 600})
    assert [m["body"] for m in peek(api, queue, state="delayed")] == ["later"]
    assert [m["body"] for m in peek(api, queue, state="ready")] == ["now"]


def test_peek_pages_with_limit_and_offset(api: httpx.Client, queue: str) -> None:
    post(api, queue, *({"body": i} for i in range(5)))
    page = peek(api, queue, limit=2, offset=2)
    assert [m["body"] for m in page] == [2, 3]


def test_peek_hides_receipts(api: httpx.Client, queue: str) -> None:
    post(api, queue, {"body": 1})
    reserve(api, queue)
    [message] = peek(api, queue)
    assert message["state"] == "reserved"
    assert message["receipt"] is None


def test_peek_bad_state_is_422(api: httpx.Client, queue: str) -> None:
    response = api.get(f"/queues/{queue}/messages", params={"state": "lost"})
    problem = assert_problem(response, 422, "invalid-request")
    assert "state" in problem["detail"]


def test_peek_bad_limit_is_422(api: httpx.Client, queue: str) -> None:
    response = api.get(f"/queues/{queue}/messages", params={"limit": 0})
    assert_problem(response, 422, "invalid-request")


def test_get_message_by_id(api: httpx.Client, queue: str) -> None:
    [message_id] = post(api, queue, {"body": {"a": 1}})
    response = api.get(f"/messages/{message_id}")
    data = valid(schemas.MessageModel, response)
    assert data["id"] == message_id
    assert data["queue"] == queue
    assert data["body"] == {"a": 1}


def test_get_message_unknown_is_404(api: httpx.Client) -> None:
    assert_problem(api.get("/messages/00000000unknown"), 404, "message-not-found")


def test_get_result_missing_is_404(api: httpx.Client, queue: str) -> None:
    [message_id] = post(api, queue, {"body": 1})
    assert_problem(api.get(f"/messages/{message_id}/result"), 404, "not-found")


# Leases -------------------------------------------------------------------


def test_reserve_returns_leases(api: httpx.Client, queue: str) -> None:
    post(api, queue, {"body": 1}, {"body": 2})
    messages = reserve(api, queue, visibility_timeout_s=60)
    assert len(messages) == 2
    assert all(m["receipt"] for m in messages)
    assert all(m["receive_count"] == 1 for m in messages)
    assert all(m["state"] == "reserved" for m in messages)
    assert all(m["reserved_until"] > m["posted_at"] for m in messages)


def test_reserve_respects_max_messages(api: httpx.Client, queue: str) -> None:
    post(api, queue, *({"body": i} for i in range(5)))
    assert len(reserve(api, queue, max_messages=3)) == 3
    assert stats(api, queue)["ready"] == 2


def test_reserve_long_poll_returns_posted_message(
    api: httpx.Client, queue: str, http_server: ServerProcess
) -> None:
    results: list[httpx.Response] = []

    def poll() -> None:
        with httpx.Client(base_url=http_server.url + "/v1", timeout=60) as client:
            results.append(client.post(f"/queues/{queue}/reserve", json={"wait_s": 20}))

    poller = threading.Thread(target=poll)
    poller.start()
    post(api, queue, {"body": "late"})
    poller.join(timeout=30)
    assert not poller.is_alive()
    assert [m["body"] for m in results[0].json()["messages"]] == ["late"]


def test_reserve_abandoned_poll_leases_nothing(
    api: httpx.Client, queue: str, http_server: ServerProcess
) -> None:
    host, port = http_server.url.removeprefix("http://").split(":")
    body = b'{"wait_s": 25}'
    request = (
        f"POST /v1/queues/{queue}/reserve HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)
        time.sleep(0.3)
    # The abandoned poll notices the closed connection when its current
    # one-second slice ends, so a message posted after that stays ready.
    time.sleep(2.5)
    post(api, queue, {"body": "after"})
    time.sleep(0.5)
    [stored] = peek(api, queue)
    assert stored["state"] == "ready"
    assert stored["receive_count"] == 0


def test_reserve_wait_ends_empty(api: httpx.Client, queue: str) -> None:
    assert reserve(api, queue, wait_s=0.3) == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"wait_s": 31}, 422, "invalid-request"),
        ({"wait_s": "long"}, 422, "invalid-request"),
        ({"max_messages": 0}, 422, "invalid-request"),
        ({"max_messages": 101}, 422, "invalid-request"),
        ({"visibility_timeout_s": -1}, 422, "invalid-request"),
        ({"block": True}, 422, "invalid-request"),
    ],
)
def test_reserve_bad_input_is_rejected(
    api: httpx.Client, queue: str, body: dict[str, Any], status: int, code: str
) -> None:
    post(api, queue, {"body": 1})
    assert_problem(api.post(f"/queues/{queue}/reserve", json=body), status, code)
    assert counts(api, queue)["ready"] == 1


def test_reserve_unknown_queue_is_404(api: httpx.Client) -> None:
    assert_problem(
        api.post("/queues/no-such-queue/reserve", json={}), 404, "queue-not-found"
    )


def test_ack_deletes_and_stores_result(api: httpx.Client, queue: str) -> None:
    [message_id] = post(api, queue, {"body": 1})
    [message] = reserve(api, queue)
    entry = {
        "id": message_id,
        "receipt": message["receipt"],
        "result": {"ok": 1},
        "result_ttl_s": 60,
    }
    response = api.post(f"/queues/{queue}/ack", json={"entries": [entry]})
    data = valid(schemas.EntryResults, response)
    assert data["results"] == [{"id": message_id, "ok": True, "outcome": "acked"}]
    assert stats(api, queue)["reserved"] == 0
    result = api.get(f"/messages/{message_id}/result")
    assert valid(schemas.TaskResultModel, result)["value"] == {"ok": 1}


def test_ack_stale_receipt_changes_nothing(api: httpx.Client, queue: str) -> None:
    api.patch(
        f"/queues/{queue}",
        json={"settings": {"backoff_base_s": 0, "backoff_jitter": "none"}},
    )
    [message_id] = post(api, queue, {"body": 1})
    [first] = reserve(api, queue, visibility_timeout_s=0.1)
    second: list[dict[str, Any]] = []
    while not second:
        second = reserve(api, queue, wait_s=2)
    entry = {"id": message_id, "receipt": first["receipt"]}
    response = api.post(f"/queues/{queue}/ack", json={"entries": [entry]})
    assert response.status_code == 200
    [result] = response.json()["results"]
    assert result["ok"] is False
    assert result["error"] == "stale-receipt"
    [stored] = peek(api, queue)
    assert stored["state"] == "reserved"
    assert stored["receive_count"] == 2


def test_ack_unknown_message_reports_not_found(api: httpx.Client, queue: str) -> None:
    entry = {"id": "00000000unknown", "receipt": "r"}
    response = api.post(f"/queues/{queue}/ack", json={"entries": [entry]})
    assert response.status_code == 200
    assert response.json()["results"][0]["error"] == "message-not-found"


def test_ack_reports_each_entry(api: httpx.Client, queue: str) -> None:
    [message_id] = post(api, queue, {"body": 1})
    [message] = reserve(api, queue)
    entries = [
        {"id": message_id, "receipt": message["receipt"]},
        {"id": "zz", "receipt": "r"},
    ]
    results = api.post(f"/queues/{queue}/ack", json={"entries": entries}).json()[
        "results"
    ]
    assert [r["ok"] for r in results] == [True, False]


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"id": "a"}, "receipt"),
        ({"receipt": "r"}, "id"),
        ({"id": 5, "receipt": "r"}, "id"),
        ({"id": "a", "receipt": "r", "result_ttl_s": "1h"}, "result_ttl_s"),
        ({"id": "a", "receipt": "r", "dead": True}, "dead"),
    ],
)
def test_ack_bad_entry_is_422(
    api: httpx.Client, queue: str, entry: dict[str, Any], field: str
) -> None:
    post(api, queue, {"body": 1})
    reserve(api, queue)
    problem = assert_problem(
        api.post(f"/queues/{queue}/ack", json={"entries": [entry]}),
        422,
        "invalid-request",
    )
    assert field in problem["detail"]
    assert counts(api, queue)["reserved"] == 1


def test_ack_empty_entries_is_422(api: httpx.Client, queue: str) -> None:
    assert_problem(
        api.post(f"/queues/{queue}/ack", json={"entries": []}), 422, "invalid-request"
    )


def test_nack_retries_after_delay(api: httpx.Client, queue: str) -> None:
    [message_id] = post(api, queue, {"body": 1})
    [message] = reserve(api, queue)
    entry = {
        "id": message_id,
        "receipt": message["receipt"],
        "delay_s": 600,
        "error": "boom",
    }
    response = api.post(f"/queues/{queue}/nack", json={"entries": [entry]})
    assert valid(schemas.EntryResults, response)["results"][0]["outcome"] == "retried"
    [stored] = peek(api, queue)
    assert stored["state"] == "delayed"
    assert stored["last_error"] == "boom"


def test_nack_dead_moves_to_dlq(api: httpx.Client, queue: str) -> None:
    [message_id] = post(api, queue, {"body": 1})
    [message] = reserve(api, queue)
    entry = {
        "id": message_id,
        "receipt": message["receipt"],
        "dead": True,
        "error": "bad input",
    }
    results = api.post(f"/queues/{queue}/nack", json={"entries": [entry]}).json()[
        "results"
    ]
    assert results[0]["outcome"] == "dead"
    response = api.get(f"/queues/{queue}.dlq/dead")
    [dead] = valid(schemas.MessageList, response)["messages"]
    assert dead["id"] == message_id
    assert dead["state"] == "dead"
    assert dead["source_queue"] == queue
    assert dead["last_error"] == "bad input"
    assert dead["receive_count"] == 1


def test_nack_release_keeps_attempts(api: httpx.Client, queue: str) -> None:
    [message_id] = post(api, queue, {"body": 1})
    [message] = reserve(api, queue)
    entry = {"id": message_id, "receipt": message["receipt"], "release": True}
    results = api.post(f"/queues/{queue}/nack", json={"entries": [entry]}).json()[
        "results"
    ]
    assert results[0]["outcome"] == "released"
    [stored] = peek(api, queue)
    assert stored["state"] == "ready"
    assert stored["receive_count"] == 0


def test_nack_mistyped_key_is_422(api: httpx.Client, queue: str) -> None:
    [message_id] = post(api, queue, {"body": 1})
    [message] = reserve(api, queue)
    entry = {"id": message_id, "receipt": message["receipt"], "relase": True}
    problem = assert_problem(
        api.post(f"/queues/{queue}/nack", json={"entries": [entry]}),
        422,
        "invalid-request",
    )
    assert "relase" in problem["detail"]
    assert peek(api, queue)[0]["state"] == "reserved"


def test_nack_negative_delay_is_422(api: httpx.Client, queue: str) -> None:
    [message_id] = post(api, queue, {"body": 1})
    [message] = reserve(api, queue)
    entry = {"id": message_id, "receipt": message["receipt"], "delay_s": -1}
    assert_problem(
        api.post(f"/queues/{queue}/nack", json={"entries": [entry]}),
        422,
        "invalid-request",
    )
    assert peek(api, queue)[0]["state"] == "reserved"


def test_touch_extends_lease(api: httpx.Client, queue: str) -> None:
    [message_id] = post(api, queue, {"body": 1})
    [message] = reserve(api, queue, visibility_timeout_s=5)
    entry = {
        "id": message_id,
        "receipt": message["receipt"],
        "visibility_timeout_s": 600,
    }
    response = api.post(f"/queues/{queue}/touch", json={"entries": [entry]})
    [result] = valid(schemas.EntryResults, response)["results"]
    assert result["outcome"] == "touched"
    assert result["reserved_until"] > message["reserved_until"] + 500
    assert peek(api, queue)[0]["reserved_until"] == pytest.approx(
        result["reserved_until"]
    )


def test_touch_malformed_json_is_400(api: httpx.Client, queue: str) -> None:
    assert_problem(
        api.post(f"/queues/{queue}/touch", content=b"{entries"),
        400,
        "malformed-request",
    )


# DLQ ----------------------------------------------------------------------


def dead_letter(api: httpx.Client, queue: str, count: int) -> list[str]:
    ids = post(api, queue, *({"body": i} for i in range(count)))
    messages = reserve(api, queue, max_messages=count)
    entries = [{"id": m["id"], "receipt": m["receipt"], "dead": True} for m in messages]
    api.post(f"/queues/{queue}/nack", json={"entries": entries})
    return ids


def test_redrive_all_moves_back(api: httpx.Client, queue: str) -> None:
    ids = dead_letter(api, queue, 3)
    response = api.post(f"/queues/{queue}.dlq/redrive")
    assert valid(schemas.RedriveResponse, response) == {"redriven": 3}
    assert sorted(m["id"] for m in peek(api, queue, state="ready")) == sorted(ids)
    assert stats(api, queue + ".dlq")["dead"] == 0


def test_redrive_by_id_moves_only_those(api: httpx.Client, queue: str) -> None:
    ids = dead_letter(api, queue, 3)
    response = api.post(f"/queues/{queue}.dlq/redrive", json={"message_ids": ids[:1]})
    assert response.json() == {"redriven": 1}
    assert [m["id"] for m in peek(api, queue, state="ready")] == ids[:1]


def test_redrive_limit_moves_oldest(api: httpx.Client, queue: str) -> None:
    dead_letter(api, queue, 3)
    response = api.post(f"/queues/{queue}.dlq/redrive", json={"limit": 2})
    assert response.json() == {"redriven": 2}
    assert stats(api, queue + ".dlq")["dead"] == 1


def test_redrive_unknown_id_is_404(api: httpx.Client, queue: str) -> None:
    ids = dead_letter(api, queue, 2)
    response = api.post(
        f"/queues/{queue}.dlq/redrive", json={"message_ids": [ids[0], "zz"]}
    )
    assert_problem(response, 404, "message-not-found")
    assert len(peek(api, queue + ".dlq", state="dead")) == 2


def test_redrive_bad_limit_is_422(api: httpx.Client, queue: str) -> None:
    dead_letter(api, queue, 1)
    assert_problem(
        api.post(f"/queues/{queue}.dlq/redrive", json={"limit": 0}),
        422,
        "invalid-request",
    )
    assert stats(api, queue + ".dlq")["dead"] == 1


def test_dead_lists_with_paging(api: httpx.Client, queue: str) -> None:
    ids = dead_letter(api, queue, 3)
    response = api.get(f"/queues/{queue}.dlq/dead", params={"limit": 2, "offset": 1})
    assert [m["id"] for m in response.json()["messages"]] == ids[1:]


# Request size limit ---------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(
        tmp_path_factory.mktemp("small"), "--max-request-bytes", "65536"
    )
    httpx.post(server.url + "/v1/queues", json={"name": "small"})
    yield server
    server.stop()


def test_oversize_body_is_413(small_server: ServerProcess) -> None:
    body = {"messages": [{"body": "x" * 70_000}]}
    response = httpx.post(small_server.url + "/v1/queues/small/messages", json=body)
    problem = assert_problem(response, 413, "payload-too-large")
    assert problem["max_request_bytes"] == 65536
    assert httpx.get(small_server.url + "/v1/queues/small/stats").json()["ready"] == 0


def test_oversize_chunked_body_is_413(small_server: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"messages": [{"body": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}]}'

    response = httpx.post(
        small_server.url + "/v1/queues/small/messages", content=chunks()
    )
    assert_problem(response, 413, "payload-too-large")
    assert httpx.get(small_server.url + "/v1/queues/small/stats").json()["ready"] == 0
    assert "Traceback" not in small_server.output()


def test_body_under_limit_is_accepted(small_server: ServerProcess) -> None:
    body = {"messages": [{"body": "x" * 1000}]}
    response = httpx.post(small_server.url + "/v1/queues/small/messages", json=body)
    assert response.status_code == 201
    httpx.post(small_server.url + "/v1/queues/small/purge")


# Authentication -----------------------------------------------------------


def test_auth_missing_token_is_401(auth_server: ServerProcess) -> None:
    response = httpx.get(auth_server.url + "/v1/queues")
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


def test_auth_wrong_token_is_401(auth_server: ServerProcess) -> None:
    response = httpx.get(
        auth_server.url + "/v1/queues", headers={"Authorization": "Bearer nope"}
    )
    assert_problem(response, 401, "unauthorized")


def test_auth_wrong_token_changes_nothing(auth_server: ServerProcess) -> None:
    response = httpx.post(auth_server.url + "/v1/queues", json={"name": "sneaky"})
    assert_problem(response, 401, "unauthorized")
    good = {"Authorization": f"Bearer {TOKEN}"}
    names = [
        q["name"]
        for q in httpx.get(auth_server.url + "/v1/queues", headers=good).json()[
            "queues"
        ]
    ]
    assert "sneaky" not in names


def test_auth_unknown_route_is_401(auth_server: ServerProcess) -> None:
    assert_problem(httpx.get(auth_server.url + "/v1/nowhere"), 401, "unauthorized")


def test_auth_right_token_is_200(auth_server: ServerProcess) -> None:
    response = httpx.get(
        auth_server.url + "/v1/queues", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200


def test_auth_scheme_case_insensitive(auth_server: ServerProcess) -> None:
    response = httpx.get(
        auth_server.url + "/v1/queues", headers={"Authorization": f"bearer {TOKEN}"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize("header", [f"Basic {TOKEN}", TOKEN, f"Bearer{TOKEN}", "Bearer"])
def test_auth_malformed_header_is_401(auth_server: ServerProcess, header: str) -> None:
    response = httpx.get(auth_server.url + "/v1/queues", headers={"Authorization": header})
    assert_problem(response, 401, "unauthorized")


def test_auth_health_needs_no_token(auth_server: ServerProcess) -> None:
    assert httpx.get(auth_server.url + "/v1/health").status_code == 200


def test_auth_token_is_never_logged(auth_server: ServerProcess) -> None:
    httpx.get(
        auth_server.url + "/v1/queues", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    httpx.get(auth_server.url + "/v1/queues", headers={"Authorization": "Bearer nope"})
    output = auth_server.output()
    assert "authentication on" in output
    assert TOKEN not in output


# The server process -------------------------------------------------------


def run_server_briefly(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Run `conveyor server ARGS` that is expected to exit on its own."""
    result = subprocess.run(
        [*conveyor_command(), "server", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    return result.returncode, result.stdout + result.stderr


def test_server_refuses_public_host_without_token(tmp_path: Path) -> None:
    code, output = run_server_briefly(
        tmp_path,
        "--host",
        "0.0.0.0",
        "--port",
        str(free_port()),
        "--store",
        f"sqlite:///{tmp_path}/x.db",
    )
    assert code == 2
    assert "without a token" in output
    assert not (tmp_path / "x.db").exists()


def test_server_rejects_bad_store_url(tmp_path: Path) -> None:
    code, output = run_server_briefly(
        tmp_path, "--port", str(free_port()), "--store", "mysql://x"
    )
    assert code == 2
    assert "mysql://x" in output


def test_server_prints_ready_line(http_server: ServerProcess) -> None:
    expected = (
        f"Conveyor listening on {http_server.url} (store {http_server.store_url})"
    )
    assert expected in http_server.stdout_path.read_text()


def test_server_default_store_uses_data_dir(tmp_path: Path) -> None:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "CONVEYOR_DATA_DIR": str(tmp_path / "state")}
    process = subprocess.Popen(
        [*conveyor_command(), "server", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        line = process.stdout.readline()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert f"sqlite:///{tmp_path}/state/conveyor.db" in line
    assert (tmp_path / "state" / "conveyor.db").exists()


def test_server_stops_cleanly_and_keeps_messages(tmp_path: Path) -> None:
    server = start_server(tmp_path / "one")
    httpx.post(server.url + "/v1/queues", json={"name": "keep"})
    httpx.post(
        server.url + "/v1/queues/keep/messages",
        json={"messages": [{"body": i} for i in range(50)]},
    )

    polled: list[httpx.Response] = []
    poller = threading.Thread(
        target=lambda: polled.append(
            httpx.post(
                server.url + "/v1/queues/empty/reserve", json={"wait_s": 25}, timeout=60
            )
        )
    )
    httpx.post(server.url + "/v1/queues", json={"name": "empty"})
    poller.start()
    time.sleep(0.5)  # let the long poll reach the server before the signal
    code = server.stop(signal.SIGTERM)
    poller.join(timeout=30)

    assert code == 0
    assert "Conveyor server stopped" in server.output()
    assert polled[0].status_code == 200
    assert polled[0].json() == {"messages": []}
    again = start_server(tmp_path / "two", store_url=server.store_url)
    try:
        assert httpx.get(again.url + "/v1/queues/keep/stats").json()["ready"] == 50
    finally:
        again.stop()


def test_workflow_retry_endpoint(api: httpx.Client) -> None:
    for queue in ("wf-first", "wf-second"):
        assert api.post("/queues", json={"name": queue}).status_code == 201
    spec = {"chain": [{"step": {"queue": "wf-first", "body": "a"}},
                      {"step": {"queue": "wf-second", "body": "b"}}]}
    started = api.post("/workflows", json={"spec": spec})
    assert started.status_code == 201, started.text
    workflow_id = started.json()["id"]
    assert api.delete("/queues/wf-second").status_code == 200
    leased = reserve(api, "wf-first")[0]
    acked = api.post("/queues/wf-first/ack",
                     json={"entries": [{"id": leased["id"], "receipt": leased["receipt"]}]})
    assert acked.status_code == 200, acked.text
    assert api.get(f"/workflows/{workflow_id}").json()["state"] == "failed"
    assert api.post("/queues", json={"name": "wf-second"}).status_code == 201
    retried = api.post(f"/workflows/{workflow_id}/retry")
    assert retried.status_code == 200, retried.text
    assert valid(schemas.WorkflowModel, retried)["state"] == "running"
    assert len(reserve(api, "wf-second")) == 1
    assert_problem(api.post(f"/workflows/{workflow_id}/retry"), 409, "workflow-not-retryable")


def test_workflow_start_idempotency_key(api: httpx.Client) -> None:
    assert api.post("/queues", json={"name": "wf-key"}).status_code == 201
    body = {"spec": {"step": {"queue": "wf-key", "body": "a"}}, "idempotency_key": "order-7"}
    first = api.post("/workflows", json=body)
    again = api.post("/workflows", json=body)
    assert first.status_code == 201, first.text
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert len(reserve(api, "wf-key")) == 1
