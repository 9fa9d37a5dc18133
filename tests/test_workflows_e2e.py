"""A join over 100 parallel steps fires exactly once while workers are SIGKILLed.

A real `conveyor server` on a temporary SQLite file and several real
`conveyor worker` processes run the group. Two workers are killed while it
runs; their leases come back after the queue's short visibility timeout and
new workers finish the work. The join records each run to a file.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest
from http_fixtures import start_server
from task_workers import read_records, start_worker, stop_worker, wait_until

from workflow_tasks import PART_QUEUE

pytestmark = pytest.mark.acceptance

APP_PATH = "workflow_tasks:app"
PARTS = 100
VISIBILITY_TIMEOUT_S = 2.0


def task_step(name: str, *args) -> dict:
    return {"step": {"queue": PART_QUEUE,
                     "body": {"task": name, "args": list(args), "kwargs": {}}}}


def workflow_state(client: httpx.Client, workflow_id: str) -> dict:
    response = client.get(f"/v1/workflows/{workflow_id}")
    response.raise_for_status()
    return response.json()


def test_join_fires_once_with_workers_killed(tmp_path):
    server = start_server(tmp_path / "server")
    workers = []
    client = httpx.Client(base_url=server.url, timeout=10.0)
    try:
        client.post("/v1/queues", json={
            "name": PART_QUEUE, "settings": {"visibility_timeout_s": VISIBILITY_TIMEOUT_S},
        }).raise_for_status()
        spec = {"chain": [
            {"group": [task_step("wf.part", index) for index in range(PARTS)]},
            task_step("wf.join"),
        ]}
        created = client.post("/v1/workflows", json={"spec": spec})
        created.raise_for_status()
        workflow_id = created.json()["id"]

        for number in range(3):
            workers.append(start_worker(
                tmp_path, APP_PATH, server.url, "--concurrency", "4", "--prefetch", "4",
                name=f"worker-{number}",
            ))
        wait_until(lambda: sum(r["event"] == "part" for r in read_records(tmp_path)) >= 10)
        for victim in workers[:2]:
            victim.send(signal.SIGKILL)
            victim.wait()
        parts_at_kill = {r["index"] for r in read_records(tmp_path) if r["event"] == "part"}
        for number in range(3, 5):
            workers.append(start_worker(
                tmp_path, APP_PATH, server.url, "--concurrency", "4", "--prefetch", "4",
                name=f"worker-{number}",
            ))

        wait_until(lambda: workflow_state(client, workflow_id)["state"] == "succeeded")
        # Give a second join, if one were posted, time to run.
        time.sleep(VISIBILITY_TIMEOUT_S)
        workflow = workflow_state(client, workflow_id)
        joins = [r for r in read_records(tmp_path) if r["event"] == "join"]
        parts = {r["index"] for r in read_records(tmp_path) if r["event"] == "part"}

        # The kill came while the group ran, not after it.
        assert len(parts_at_kill) < PARTS
        assert len(joins) == 1
        assert joins[0]["count"] == PARTS
        assert joins[0]["order"] is True
        assert workflow["result"] == sum(range(PARTS))
        assert parts == set(range(PARTS))
        assert client.get(f"/v1/queues/{PART_QUEUE}/stats").json()["ready"] == 0
    finally:
        for worker in workers[2:]:
            stop_worker(worker)
        for worker in workers[:2]:
            worker.kill()
        client.close()
        server.stop()
