"""The workflow examples end to end: a real server on a temporary SQLite file,
a real `conveyor worker` in the example's folder, and the example's start
script as its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from http_fixtures import conveyor_command, start_server
from task_workers import WorkerProcess, stop_worker, wait_until

pytestmark = pytest.mark.acceptance

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPT_TIMEOUT_S = 90


def run_example(tmp_path: Path, folder: str, app_path: str, script: str, *args: str) -> dict:
    """Run the example's start script against a fresh server and worker; return its JSON."""
    done, steps = run_script(tmp_path, folder, app_path, script, *args)
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout), "steps": steps}


def run_script(
    tmp_path: Path, folder: str, app_path: str, script: str, *args: str
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run the example's start script; return the run and its workflow's steps."""
    server = start_server(tmp_path / "server")
    example = EXAMPLES / folder
    worker = _start_example_worker(tmp_path, example, app_path, server.url)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env["CONVEYOR_URL"] = server.url
        done = subprocess.run(
            [sys.executable, script, *args], cwd=example, env=env, capture_output=True,
            text=True, timeout=SCRIPT_TIMEOUT_S,
        )
        workflows = httpx.get(f"{server.url}/v1/workflows").json()["workflows"]
        assert len(workflows) == 1, done.stderr + worker.log()
        workflow = httpx.get(f"{server.url}/v1/workflows/{workflows[0]['id']}").json()
        return done, workflow["steps"]
    finally:
        stop_worker(worker)
        server.stop()


def _start_example_worker(tmp_path: Path, example: Path, app_path: str, url: str) -> WorkerProcess:
    """Start `conveyor worker` in the example's folder, as its README shows."""
    log_path = tmp_path / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [*conveyor_command(), "worker", app_path, "--url", url, "--poll-wait-s", "0.5"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=example,
        )
    worker = WorkerProcess(process, log_path)
    wait_until(lambda: "Worker started" in worker.log() or not worker.alive(), 60)
    assert worker.alive(), worker.log()
    return worker


def finish_order(steps: list[dict]) -> list[int]:
    """Return step indexes in the order they finished."""
    return [s["index"] for s in sorted(steps, key=lambda s: s["finished_at"])]


def test_expense_claim_runs_in_order(tmp_path):
    output = run_example(
        tmp_path, "expense_claim", "expense_tasks:app", "start_claim.py", "ada", "1250", "meals"
    )
    result = output["result"]
    assert result["history"] == ["submitted", "verified", "approved", "paid"]
    assert result["payment_id"].startswith("pay-")
    assert result["amount_cents"] == 1250
    assert finish_order(output["steps"]) == [0, 1, 2, 3]
    assert [s["task"] for s in output["steps"]] == [
        "expense.submit", "expense.verify", "expense.approve", "expense.pay",
    ]


def test_food_order_group_then_chain(tmp_path):
    output = run_example(
        tmp_path, "food_order", "food_tasks:app", "start_order.py", "luigi", "pizza", "pasta"
    )
    result = output["result"]
    assert result["status"] == "on the way"
    assert result["items"] == ["pizza", "pasta"]
    assert result["eta_minutes"] == 12 + 15
    steps = output["steps"]
    assert [s["task"] for s in steps] == [
        "food.check_restaurant", "food.check_stock", "food.pick_up", "food.track",
    ]
    assert steps[2]["input"][0]["check"] == "restaurant"
    assert steps[2]["input"][1]["check"] == "stock"
    assert finish_order(steps)[2:] == [2, 3]
    assert steps[2]["posted_at"] >= max(steps[0]["finished_at"], steps[1]["finished_at"])


@pytest.mark.parametrize("folder, app_path, script, args", [
    ("expense_claim", "expense_tasks:app", "start_claim.py", ("bob", "90000", "travel")),
    ("food_order", "food_tasks:app", "start_order.py", ("luigi", "sushi")),
])
def test_failing_run_prints_one_line(tmp_path, folder, app_path, script, args):
    done, steps = run_script(tmp_path, folder, app_path, script, *args)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "did not go through: workflow" in done.stderr.splitlines()[-1]
    assert "failed" in [step["state"] for step in steps]
