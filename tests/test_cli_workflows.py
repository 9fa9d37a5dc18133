"""`conveyor workflows list|show|cancel`, run as the real `conveyor` console
script on a SQLite store file (`--url sqlite:///...`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor.client import connect

SCRIPT = Path(sys.executable).parent / "conveyor"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "conveyor"]
TIMEOUT_S = 60


class Cli:
    """The `conveyor` command bound to one URL, run without CONVEYOR_* from outside."""

    def __init__(self, url: str, columns: int = 200) -> None:
        self.url = url
        self.columns = columns

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        clean.update({"CONVEYOR_URL": self.url, "CONVEYOR_LOG_LEVEL": "WARNING",
                      "COLUMNS": str(self.columns)})
        return subprocess.run(
            [*COMMAND, *args], capture_output=True, env=clean, timeout=TIMEOUT_S, text=True
        )

    def ok(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


def task_step(name: str) -> dict:
    return {"step": {"queue": "wf", "body": {"task": name, "args": [], "kwargs": {}}}}


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(f"sqlite:///{tmp_path}/workflows.db")


@pytest.fixture
def failed_id(cli: Cli) -> str:
    """A workflow whose second step is dead in the DLQ with the error 'card declined'."""
    client = connect(cli.url)
    try:
        client.create_queue("wf")
        spec = {"chain": [task_step("submit"), task_step("pay"), task_step("notify")]}
        workflow = client.start_workflow(spec, "claim")
        first = client.reserve("wf", 1)[0]
        client.ack("wf", [{"id": first.id, "receipt": first.receipt, "result": 1}])
        second = client.reserve("wf", 1)[0]
        client.nack("wf", [{"id": second.id, "receipt": second.receipt, "dead": True,
                            "error": "card declined"}])
        return workflow.id
    finally:
        client.close()


def test_show_has_a_line_per_step(cli, failed_id):
    output = cli.ok("workflows", "show", failed_id)
    assert "failed" in output.splitlines()[0]
    step_lines = [line for line in output.splitlines() if line.strip()[:1].isdigit()]
    assert len(step_lines) == 3
    assert "submit" in step_lines[0]
    assert "succeeded" in step_lines[0]
    assert "failed" in step_lines[1]
    assert "waiting" in step_lines[2]
    assert "  step 1 (message " in output
    assert "card declined" in output.splitlines()[-1]


def test_show_pinned_at_80_columns(cli, failed_id):
    narrow = Cli(cli.url, columns=80)
    lines = narrow.ok("workflows", "show", failed_id).splitlines()
    message_id = narrow.json("workflows", "show", failed_id)["steps"][1]["message_id"]
    assert [line.rstrip() for line in lines[2:]] == [
        "Steps",
        "#   Task     Queue   State       After   Tries",
        "──────────────────────────────────────────────",
        "0   submit   wf      succeeded   -       1",
        "1   pay      wf      failed      0       1",
        "2   notify   wf      waiting     1       -",
        "Step errors:",
        f"  step 1 (message {message_id}): card declined",
    ]


def start_group(cli: Cli, size: int, name: str = "big") -> str:
    client = connect(cli.url)
    try:
        client.create_queue("wf")
        spec = {"chain": [{"group": [task_step(f"member_{i}") for i in range(size)]},
                          task_step("join")]}
        return client.start_workflow(spec, name).id
    finally:
        client.close()


def test_show_big_group_as_ranges(cli):
    workflow_id = start_group(cli, 200)
    output = Cli(cli.url, columns=80).ok("workflows", "show", workflow_id)
    join_line = output.splitlines()[-1]
    assert join_line.split() == ["200", "join", "wf", "waiting", "0-199", "-"]
    assert max(len(line) for line in output.splitlines()[1:]) <= 80


def test_list_keeps_whole_id_at_80_columns(cli, failed_id):
    for columns in (80, 100):
        output = Cli(cli.url, columns=columns).ok("workflows", "list")
        row = next(line for line in output.splitlines() if line.startswith(failed_id[:8]))
        assert row.split()[:3] == [failed_id, "failed", "1/3"]
        assert "card declined" in output


def test_stored_error_escaped(cli):
    client = connect(cli.url)
    try:
        client.create_queue("wf")
        workflow = client.start_workflow(task_step("evil"), "plain")
        message = client.reserve("wf", 1)[0]
        client.nack("wf", [{"id": message.id, "receipt": message.receipt, "dead": True,
                            "error": "bad\x1b[2J\nnext"}])
    finally:
        client.close()
    for command in (("list",), ("show", workflow.id)):
        output = cli.ok("workflows", *command)
        assert "\x1b" not in output
        assert "bad\\x1b[2J\\nnext" in output


def test_show_json(cli, failed_id):
    document = cli.json("workflows", "show", failed_id)
    assert document["state"] == "failed"
    assert document["failed_step"] == 1
    assert [step["attempts"] for step in document["steps"]] == [1, 1, None]


def test_list_filters_by_state(cli, failed_id):
    assert [w["id"] for w in cli.json("workflows", "list", "--state", "failed")["workflows"]] == [
        failed_id
    ]
    assert cli.json("workflows", "list", "--state", "succeeded")["workflows"] == []
    assert "claim" in cli.ok("workflows", "list")


def test_cancel_then_show(cli, failed_id):
    assert "Cancelled workflow" in cli.ok("workflows", "cancel", failed_id)
    assert cli.json("workflows", "show", failed_id)["state"] == "cancelled"
    assert "already finished" in cli.ok("workflows", "cancel", failed_id)


def test_show_unknown_fails(cli):
    done = cli("workflows", "show", "nope")
    assert done.returncode != 0
    assert "no workflow with id 'nope'" in done.stderr


def test_retry_posts_failed_step(cli):
    client = connect(cli.url)
    try:
        client.create_queue("wf")
        client.create_queue("other")
        spec = {"chain": [task_step("a"), {"step": {"queue": "other", "body": "plain"}}]}
        workflow = client.start_workflow(spec, "retry")
        client.delete_queue("other")
        first = client.reserve("wf", 1)[0]
        client.ack("wf", [{"id": first.id, "receipt": first.receipt, "result": 1}])
        client.create_queue("other")
    finally:
        client.close()
    assert f"conveyor workflows retry {workflow.id}" in cli.ok("workflows", "show", workflow.id)
    assert "it is running" in cli.ok("workflows", "retry", workflow.id)
    assert cli.json("workflows", "show", workflow.id)["steps"][1]["state"] == "queued"
    again = cli("workflows", "retry", workflow.id)
    assert again.returncode == 1
    assert "no step whose post failed" in again.stderr


def test_dead_step_named_in_dlq(cli, failed_id):
    message_id = cli.json("workflows", "show", failed_id)["steps"][1]["message_id"]
    label = f"step 1 of workflow {failed_id}"
    assert f"  {message_id}: {label}" in cli.ok("dlq", "list", "wf")
    assert label in cli.ok("message", "show", message_id)


def test_cancel_empties_dlq_of_steps(cli, failed_id):
    cli.ok("workflows", "cancel", failed_id)
    assert "No dead messages" in cli.ok("dlq", "list", "wf")
    assert cli.json("workflows", "show", failed_id)["steps"][1]["state"] == "cancelled"
