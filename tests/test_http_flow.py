"""Flow control over HTTP, against a real `conveyor server` subprocess.

Every error check asserts the status, the problem type, and that stored
settings did not change.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

import httpx
import pytest
from pydantic import BaseModel

from conveyor.server import schemas
from http_fixtures import ServerProcess, http_server

__all__ = ["http_server"]  # a fixture, used by name

PROBLEM = "urn:conveyor:problem:"


@pytest.fixture
def api(http_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_server.url + "/v1", timeout=60) as client:
        yield client


def new_queue(api: httpx.Client, **settings: Any) -> str:
    name = "q-" + uuid.uuid4().hex[:12]
    response = api.post("/queues", json={"name": name, "settings": settings})
    assert response.status_code == 201, response.text
    return name


def valid(model: type[BaseModel], response: httpx.Response) -> dict[str, Any]:
    data = response.json()
    model.model_validate(data)
    return data


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == PROBLEM + code
    return problem


def post(api: httpx.Client, queue: str, *bodies: Any) -> list[str]:
    messages = [{"body": body} for body in bodies]
    response = api.post(f"/queues/{queue}/messages", json={"messages": messages})
    assert response.status_code == 201, response.text
    return [m["id"] for m in response.json()["messages"]]


def reserve(api: httpx.Client, queue: str, **options: Any) -> list[dict[str, Any]]:
    response = api.post(f"/queues/{queue}/reserve", json={"max_messages": 10, **options})
    assert response.status_code == 200, response.text
    return valid(schemas.MessageList, response)["messages"]


def stats(api: httpx.Client, queue: str) -> dict[str, Any]:
    response = api.get(f"/queues/{queue}/stats")
    assert response.status_code == 200, response.text
    return valid(schemas.QueueStatsModel, response)


def settings_of(api: httpx.Client, queue: str) -> dict[str, Any]:
    response = api.get(f"/queues/{queue}")
    assert response.status_code == 200, response.text
    return valid(schemas.QueueInfoModel, response)["settings"]


# Settings -------------------------------------------------------------------


def test_flow_settings_round_trip(api: httpx.Client) -> None:
    queue = new_queue(api, rate_limit_per_s=2.5, rate_burst=4, max_in_flight=3)
    settings = settings_of(api, queue)
    assert settings["rate_limit_per_s"] == 2.5
    assert settings["rate_burst"] == 4
    assert settings["max_in_flight"] == 3
    assert settings["paused"] is False


def test_patch_clears_rate_limit(api: httpx.Client) -> None:
    queue = new_queue(api, rate_limit_per_s=1, rate_burst=1)
    response = api.patch(f"/queues/{queue}", json={"settings": {"rate_limit_per_s": None}})
    assert response.status_code == 200, response.text
    assert settings_of(api, queue)["rate_limit_per_s"] is None
    post(api, queue, 1, 2, 3)
    assert len(reserve(api, queue)) == 3


@pytest.mark.parametrize(
    "changes",
    [
        {"rate_limit_per_s": 0},
        {"rate_burst": 0},
        {"max_in_flight": -1},
        {"group_max_in_flight": 2},
        {"paused": "yes"},
    ],
)
def test_patch_invalid_flow_setting(api: httpx.Client, changes: dict[str, Any]) -> None:
    queue = new_queue(api, rate_limit_per_s=5)
    before = settings_of(api, queue)
    response = api.patch(f"/queues/{queue}", json={"settings": changes})
    problem = assert_problem(response, 422, "invalid-request")
    assert next(iter(changes)) in str(problem)
    assert settings_of(api, queue) == before


def test_unknown_breaker_key_lists_breaker_settings(api: httpx.Client) -> None:
    queue = new_queue(api)
    response = api.patch(f"/queues/{queue}", json={"settings": {"breaker": {"bogus": 1}}})
    problem = assert_problem(response, 422, "invalid-request")
    assert "known breaker settings are" in problem["detail"]
    assert "window_s" in problem["detail"]
    assert "visibility_timeout_s" not in problem["detail"]
    assert settings_of(api, queue)["breaker"] is None


def test_rate_limit_over_http(api: httpx.Client) -> None:
    queue = new_queue(api, rate_limit_per_s=0.5, rate_burst=2)
    post(api, queue, *range(5))
    assert len(reserve(api, queue)) == 2
    assert reserve(api, queue) == []
    assert stats(api, queue)["tokens"] < 1


# Pause ----------------------------------------------------------------------


def test_pause_and_resume(api: httpx.Client) -> None:
    queue = new_queue(api)
    response = api.post(f"/queues/{queue}/pause")
    assert response.status_code == 200, response.text
    assert valid(schemas.QueueInfoModel, response)["settings"]["paused"] is True

    post(api, queue, "a")
    assert reserve(api, queue) == []
    assert stats(api, queue)["paused"] is True
    assert stats(api, queue)["ready"] == 1

    response = api.post(f"/queues/{queue}/resume")
    assert response.status_code == 200, response.text
    assert [m["body"] for m in reserve(api, queue)] == ["a"]
    assert stats(api, queue)["paused"] is False


def test_pause_unknown_queue(api: httpx.Client) -> None:
    response = api.post("/queues/nowhere-at-all/pause")
    assert_problem(response, 404, "queue-not-found")


# Circuit breaker -------------------------------------------------------------

BREAKER = {"min_attempts": 2, "cooldown_s": 300, "probes": 1}


def fail_all(api: httpx.Client, queue: str) -> None:
    messages = reserve(api, queue)
    entries = [{"id": m["id"], "receipt": m["receipt"], "error": "HTTP 500"} for m in messages]
    response = api.post(f"/queues/{queue}/nack", json={"entries": entries})
    assert response.status_code == 200, response.text


def test_breaker_setting_round_trip(api: httpx.Client) -> None:
    queue = new_queue(api, breaker={"failure_ratio": 0.25})
    breaker = settings_of(api, queue)["breaker"]
    assert breaker["failure_ratio"] == 0.25
    assert breaker["cooldown_s"] == 30
    response = api.patch(f"/queues/{queue}", json={"settings": {"breaker": None}})
    assert response.status_code == 200, response.text
    assert settings_of(api, queue)["breaker"] is None


def test_breaker_opens_and_reports(api: httpx.Client) -> None:
    queue = new_queue(api, backoff_base_s=0, breaker=BREAKER)
    post(api, queue, 1, 2)
    fail_all(api, queue)

    assert reserve(api, queue) == []
    status = stats(api, queue)["breaker"]
    assert status["state"] == "open"
    assert status["failures"] == 2
    response = api.get(f"/queues/{queue}/breaker", params={"limit": 5})
    report = valid(schemas.BreakerReportModel, response)
    assert report["status"]["state"] == "open"
    assert report["events"][0]["to_state"] == "open"
    assert report["events"][0]["attempts"] == 2


def test_force_breaker_over_http(api: httpx.Client) -> None:
    queue = new_queue(api, breaker=BREAKER)
    post(api, queue, 1)
    response = api.post(f"/queues/{queue}/breaker", json={"state": "open"})
    report = valid(schemas.BreakerReportModel, response)
    assert (report["status"]["state"], report["status"]["mode"]) == ("open", "open")
    assert reserve(api, queue) == []

    response = api.post(f"/queues/{queue}/breaker", json={"state": "closed"})
    assert valid(schemas.BreakerReportModel, response)["status"]["state"] == "closed"
    assert len(reserve(api, queue)) == 1


@pytest.mark.parametrize("body", [{"state": "half_open"}, {"state": 1}, {}, {"state": "open", "x": 1}])
def test_force_breaker_invalid_body(api: httpx.Client, body: dict[str, Any]) -> None:
    queue = new_queue(api, breaker=BREAKER)
    response = api.post(f"/queues/{queue}/breaker", json=body)
    assert_problem(response, 422, "invalid-request")
    report = api.get(f"/queues/{queue}/breaker").json()
    assert report["events"] == []


def test_force_breaker_without_one(api: httpx.Client) -> None:
    queue = new_queue(api)
    response = api.post(f"/queues/{queue}/breaker", json={"state": "open"})
    problem = assert_problem(response, 422, "invalid-request")
    assert "has no circuit breaker" in problem["detail"]
    assert api.get(f"/queues/{queue}/breaker").json()["status"] is None


def test_breaker_unknown_queue(api: httpx.Client) -> None:
    assert_problem(api.get("/queues/no-such-queue-x/breaker"), 404, "queue-not-found")


def test_invalid_breaker_setting(api: httpx.Client) -> None:
    queue = new_queue(api)
    response = api.patch(
        f"/queues/{queue}", json={"settings": {"breaker": {"failure_ratio": 2}}}
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert "breaker.failure_ratio" in problem["detail"]
    assert settings_of(api, queue)["breaker"] is None


# RetryAfter ------------------------------------------------------------------


def test_nack_retry_after_over_http(api: httpx.Client) -> None:
    queue = new_queue(api, max_attempts=1)
    post(api, queue, "a")
    [message] = reserve(api, queue)
    entry = {"id": message["id"], "receipt": message["receipt"], "retry_after_s": 60}
    response = api.post(f"/queues/{queue}/nack", json={"entries": [entry]})
    [result] = valid(schemas.EntryResults, response)["results"]
    assert result["ok"] is True
    assert result["outcome"] == "retried"
    counts = stats(api, queue)
    assert counts["delayed"] == 1
    assert counts["dead"] == 0


@pytest.mark.parametrize("value", [0, -5, 86_401, "60", True])
def test_nack_retry_after_invalid(api: httpx.Client, value: Any) -> None:
    queue = new_queue(api)
    post(api, queue, "a")
    [message] = reserve(api, queue)
    entry = {"id": message["id"], "receipt": message["receipt"], "retry_after_s": value}
    response = api.post(f"/queues/{queue}/nack", json={"entries": [entry]})
    problem = assert_problem(response, 422, "invalid-request")
    assert "retry_after_s" in problem["detail"]
    assert stats(api, queue)["reserved"] == 1


# Redrive jobs ----------------------------------------------------------------


def dead_queue(api: httpx.Client, count: int) -> str:
    queue = new_queue(api)
    post(api, queue, *range(count))
    messages = reserve(api, queue)
    entries = [{"id": m["id"], "receipt": m["receipt"], "dead": True} for m in messages]
    response = api.post(f"/queues/{queue}/nack", json={"entries": entries})
    assert response.status_code == 200, response.text
    return queue


def wait_for_job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        response = api.get(f"/redrive-jobs/{job_id}")
        job = valid(schemas.RedriveJobModel, response)
        if job["state"] != "active":
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_background_redrive_runs_on_server(api: httpx.Client) -> None:
    queue = dead_queue(api, 6)
    body = {"background": True, "rate_per_s": 50, "source_queue": queue}
    response = api.post(f"/queues/{queue}.dlq/redrive", json=body)
    assert response.status_code == 202, response.text
    job = valid(schemas.RedriveJobModel, response)
    assert job["state"] == "active"
    assert job["rate_per_s"] == 50

    finished = wait_for_job(api, job["id"])
    assert (finished["state"], finished["moved"]) == ("done", 6)
    assert stats(api, queue)["ready"] == 6
    listed = valid(schemas.RedriveJobList, api.get("/redrive-jobs", params={"dlq": f"{queue}.dlq"}))
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]


def test_cancel_job_over_http(api: httpx.Client) -> None:
    queue = dead_queue(api, 3)
    body = {"background": True, "rate_per_s": 0.01}
    job = api.post(f"/queues/{queue}.dlq/redrive", json=body).json()
    response = api.post(f"/redrive-jobs/{job['id']}/cancel")
    cancelled = valid(schemas.RedriveJobModel, response)
    assert cancelled["state"] == "cancelled"
    assert cancelled["moved"] <= 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"background": True, "rate_per_s": 0}, "rate_per_s"),
        ({"background": True, "message_ids": ["x"]}, "message_ids"),
        ({"rate_per_s": 5}, "rate_per_s"),
        ({"source_queue": "a"}, "source_queue"),
        ({"background": True, "source_queue": "bad name"}, "source_queue"),
    ],
)
def test_background_redrive_invalid(api: httpx.Client, body: dict[str, Any], field: str) -> None:
    queue = dead_queue(api, 1)
    response = api.post(f"/queues/{queue}.dlq/redrive", json=body)
    problem = assert_problem(response, 422, "invalid-request")
    assert field in problem["detail"]
    assert stats(api, f"{queue}.dlq")["dead"] == 1
    jobs = api.get("/redrive-jobs", params={"dlq": f"{queue}.dlq"}).json()["jobs"]
    assert jobs == []


def test_unknown_job(api: httpx.Client) -> None:
    assert_problem(api.get("/redrive-jobs/no-such-job"), 404, "redrive-job-not-found")
    assert_problem(api.post("/redrive-jobs/no-such-job/cancel"), 404, "redrive-job-not-found")


def test_list_jobs_invalid_state(api: httpx.Client) -> None:
    response = api.get("/redrive-jobs", params={"state": "running"})
    assert_problem(response, 422, "invalid-request")
