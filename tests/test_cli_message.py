"""`conveyor message show|cancel|logs`, run as the real `conveyor` console
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
from conveyor.models import Message, NewMessage

SCRIPT = Path(sys.executable).parent / "conveyor"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "conveyor"]
TIMEOUT_S = 60


class Cli:
    """The `conveyor` command bound to one URL, run without CONVEYOR_* from outside."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        clean.update({"CONVEYOR_URL": self.url, "CONVEYOR_LOG_LEVEL": "WARNING"})
        return subprocess.run(
            [*COMMAND, *args], capture_output=True, env=clean, timeout=TIMEOUT_S, text=True
        )

    def ok(self, *args: str) -> str:
        done = self(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    created = Cli(f"sqlite:///{tmp_path}/messages.db")
    with connect(created.url) as client:
        client.create_queue("jobs", {"backoff_base_s": 0})
    return created


def post(cli: Cli, body: Any = "job", **options: Any) -> str:
    with connect(cli.url) as client:
        return client.post("jobs", [NewMessage(body, **options)])[0].id


def reserve(cli: Cli) -> Message:
    with connect(cli.url) as client:
        [message] = client.reserve("jobs")
        return message


def lease(message: Message, **extra: Any) -> dict[str, Any]:
    return {"id": message.id, "receipt": message.receipt, **extra}


def row(output: str, field: str) -> str:
    """Return the value column of the table row that starts with `field`."""
    line = next(line for line in output.splitlines() if line.startswith(field + " "))
    return line[len(field):].strip()


# show ----------------------------------------------------------------------


def test_show_running_message(cli: Cli) -> None:
    post(cli, {"n": 1}, idempotency_key="order-1")
    message = reserve(cli)
    with connect(cli.url) as client:
        client.progress("jobs", [lease(message, progress=0.25, progress_text="1 of 4")])

    out = cli.ok("message", "show", message.id)

    assert row(out, "state") == "reserved"
    assert row(out, "idempotency key") == "order-1"
    assert row(out, "progress") == "25% 1 of 4"
    assert row(out, "cancel requested") == "no"
    assert row(out, "body") == '{"n":1}'


def test_show_finished_message_result(cli: Cli) -> None:
    post(cli)
    message = reserve(cli)
    with connect(cli.url) as client:
        client.ack("jobs", [lease(message, result={"total": 3}, progress=1.0)])

    out = cli.ok("message", "show", message.id)
    document = cli.json("message", "show", message.id)

    assert row(out, "status") == "succeeded"
    assert row(out, "progress") == "100%"
    assert row(out, "result") == '{"total":3}'
    assert document["message"] is None
    assert document["result"]["value"] == {"total": 3}


def test_show_unknown_message(cli: Cli) -> None:
    done = cli("message", "show", "nope")

    assert done.returncode == 1
    assert "no message or result with id 'nope' is stored" in done.stderr


# cancel --------------------------------------------------------------------


def test_cancel_waiting_message(cli: Cli) -> None:
    message_id = post(cli)

    out = cli.ok("message", "cancel", message_id)
    shown = cli.ok("message", "show", message_id)

    assert out.strip() == f"Message {message_id} cancelled; it will not run."
    assert row(shown, "status") == "cancelled"


def test_cancel_running_message(cli: Cli) -> None:
    post(cli)
    message = reserve(cli)

    document = cli.json("message", "cancel", message.id)
    shown = cli.ok("message", "show", message.id)

    assert document == {"id": message.id, "ok": True, "outcome": "cancel-requested"}
    assert row(shown, "cancel requested") == "yes"


def test_cancel_result_ttl_zero_keeps_none(cli: Cli) -> None:
    message_id = post(cli)

    cli.ok("message", "cancel", message_id, "--result-ttl-s", "0")
    done = cli("message", "show", message_id)

    assert done.returncode == 1


def test_cancel_finished_message_fails(cli: Cli) -> None:
    post(cli)
    message = reserve(cli)
    with connect(cli.url) as client:
        client.ack("jobs", [lease(message, result=1)])

    done = cli("message", "cancel", message.id)

    assert done.returncode == 1
    assert "finished already with status 'succeeded'" in done.stderr


# logs ----------------------------------------------------------------------


def test_logs_of_each_attempt(cli: Cli) -> None:
    post(cli)
    first = reserve(cli)
    with connect(cli.url) as client:
        client.nack("jobs", [lease(first, error="boom", logs="first try\n")])
    second = reserve(cli)
    with connect(cli.url) as client:
        client.ack("jobs", [lease(second, result=1, logs="second try\n")])

    out = cli.ok("message", "logs", first.id)
    only_second = cli.ok("message", "logs", first.id, "--attempt", "2")
    document = cli.json("message", "logs", first.id)

    assert out.splitlines()[0].startswith("--- attempt 1 (queue jobs, stored ")
    assert out.splitlines()[1] == "first try"
    assert out.splitlines()[2].startswith("--- attempt 2 ")
    assert out.splitlines()[3] == "second try"
    assert "first try" not in only_second
    assert [log["attempt"] for log in document["logs"]] == [1, 2]


def test_logs_none_stored(cli: Cli) -> None:
    message_id = post(cli)

    out = cli.ok("message", "logs", message_id)

    assert out.strip() == f"No logs are stored for message {message_id}."


def test_logs_bad_attempt_is_usage_error(cli: Cli) -> None:
    done = cli("message", "logs", "x", "--attempt", "0")

    assert done.returncode == 2
    assert "--attempt" in done.stderr
