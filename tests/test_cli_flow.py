"""Flow-control commands, run as the real `conveyor` console script on a
SQLite store file (`--url sqlite:///...`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conveyor.client import connect
from conveyor.models import NewMessage

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
    return Cli(f"sqlite:///{tmp_path}/flow.db")


def header_line(output: str, start: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(start))


def test_create_with_flow_flags(cli: Cli) -> None:
    cli.ok(
        "queue", "create", "api", "--rate-limit-per-s", "2.5", "--rate-burst", "5",
        "--max-in-flight", "3",
    )
    settings = cli.json("queue", "show", "api")["settings"]
    assert settings["rate_limit_per_s"] == 2.5
    assert settings["rate_burst"] == 5
    assert settings["max_in_flight"] == 3


def test_update_none_clears_limit(cli: Cli) -> None:
    cli.ok("queue", "create", "api", "--rate-limit-per-s", "2")
    out = cli.ok("queue", "update", "api", "--rate-limit-per-s", "none")
    assert out.strip() == "Updated queue api: rate_limit_per_s=-."
    assert cli.json("queue", "show", "api")["settings"]["rate_limit_per_s"] is None


def test_update_invalid_rate_changes_nothing(cli: Cli) -> None:
    cli.ok("queue", "create", "api", "--rate-limit-per-s", "2")
    done = cli("queue", "update", "api", "--rate-limit-per-s", "0")
    assert done.returncode == 1
    assert "invalid rate_limit_per_s 0.0" in done.stderr
    assert cli.json("queue", "show", "api")["settings"]["rate_limit_per_s"] == 2


def test_pause_and_resume(cli: Cli) -> None:
    cli.ok("queue", "create", "jobs")
    assert cli.ok("queue", "pause", "jobs").strip() == (
        "Paused queue jobs: nothing is delivered until 'conveyor queue resume jobs'."
    )
    listed = cli.ok("queue", "list")
    assert header_line(listed, "jobs ").split()[:3] == ["jobs", "standard", "paused"]
    shown = cli.json("queue", "show", "jobs")
    assert shown["settings"]["paused"] is True
    assert shown["stats"]["paused"] is True

    with connect(cli.url) as client:
        client.post("jobs", [NewMessage("a")])
        assert client.reserve("jobs") == []

    assert cli.ok("queue", "resume", "jobs").strip() == "Resumed queue jobs."
    listed = cli.ok("queue", "list")
    assert header_line(listed, "jobs ").split()[:3] == ["jobs", "standard", "active"]


def test_show_lists_flow_state(cli: Cli) -> None:
    cli.ok("queue", "create", "api", "--rate-limit-per-s", "4")
    out = cli.ok("queue", "show", "api")
    assert "Flow control" in out
    assert header_line(out, "state").split() == ["state", "active"]
    assert header_line(out, "tokens now").split() == ["tokens", "now", "4.00"]


def test_pause_unknown_queue(cli: Cli) -> None:
    done = cli("queue", "pause", "nowhere")
    assert done.returncode == 1
    assert "queue 'nowhere' does not exist" in done.stderr


# Circuit breaker ---------------------------------------------------------------


def open_breaker(cli: Cli) -> None:
    breaker = '{"min_attempts": 2, "cooldown_s": 300}'
    cli.ok("queue", "create", "api", "--backoff-base-s", "0", "--breaker", breaker)
    with connect(cli.url) as client:
        client.post("api", [NewMessage(1), NewMessage(2)])
        messages = client.reserve("api", max_messages=2)
        client.nack("api", [{"id": m.id, "receipt": m.receipt, "error": "boom"} for m in messages])


def test_breaker_flag_sets_defaults(cli: Cli) -> None:
    cli.ok("queue", "create", "api", "--breaker", "{}")
    breaker = cli.json("queue", "show", "api")["settings"]["breaker"]
    assert breaker["probes"] == 3
    cli.ok("queue", "update", "api", "--breaker", "none")
    assert cli.json("queue", "show", "api")["settings"]["breaker"] is None


def test_breaker_flag_rejects_bad_json(cli: Cli) -> None:
    done = cli("queue", "create", "api", "--breaker", "[1]")
    assert done.returncode == 2
    assert "is not a JSON object" in done.stderr
    assert cli.json("queue", "list") == []


def test_breaker_command_lists_events(cli: Cli) -> None:
    open_breaker(cli)
    out = cli.ok("queue", "breaker", "api")
    assert header_line(out, "breaker ").split() == ["breaker", "open"]
    assert "2 of 2 attempts failed" in out
    assert "Recent changes" in out
    assert header_line(cli.ok("queue", "list"), "api ").split()[:4] == [
        "api", "standard", "breaker", "open",
    ]
    shown = cli.ok("queue", "show", "api")
    assert header_line(shown, "breaker next probe at")


def test_breaker_command_forces(cli: Cli) -> None:
    open_breaker(cli)
    report = cli.json("queue", "breaker", "api", "--close")
    assert report["status"]["state"] == "closed"
    assert report["status"]["mode"] == "closed"
    assert report["events"][0]["reason"] == "forced closed by an operator"
    report = cli.json("queue", "breaker", "api", "--auto")
    assert report["status"]["mode"] == "auto"
    report = cli.json("queue", "breaker", "api", "--open")
    assert report["status"]["state"] == "open"


def test_breaker_command_without_breaker(cli: Cli) -> None:
    cli.ok("queue", "create", "plain")
    assert cli.ok("queue", "breaker", "plain").splitlines()[0] == (
        "Queue plain has no circuit breaker."
    )
    done = cli("queue", "breaker", "plain", "--open")
    assert done.returncode == 1
    assert "has no circuit breaker" in done.stderr


# Redrive jobs --------------------------------------------------------------------


def dead_jobs(cli: Cli, count: int) -> None:
    cli.ok("queue", "create", "jobs")
    with connect(cli.url) as client:
        client.post("jobs", [NewMessage(i) for i in range(count)])
        messages = client.reserve("jobs", max_messages=count)
        client.nack("jobs", [{"id": m.id, "receipt": m.receipt, "dead": True} for m in messages])


def test_background_redrive_creates_job(cli: Cli) -> None:
    dead_jobs(cli, 3)
    out = cli.ok("dlq", "redrive", "jobs", "--background", "--rate", "5")
    assert out.startswith("Started redrive job ")
    assert "of DLQ jobs.dlq (5 messages per second)" in out
    [job] = cli.json("dlq", "jobs")["jobs"]
    assert (job["dlq"], job["state"], job["rate_per_s"]) == ("jobs.dlq", "active", 5)
    listed = cli.ok("dlq", "jobs", "jobs")
    assert header_line(listed, job["id"]).split()[1:5] == ["jobs.dlq", "active", "0", "5/s"]

    assert cli.ok("dlq", "cancel", job["id"]).strip() == (
        f"Cancelled redrive job {job['id']} after 0 messages moved."
    )
    assert cli.ok("dlq", "cancel", job["id"]).strip() == (
        f"Redrive job {job['id']} had already finished (cancelled); nothing changed."
    )
    assert cli.json("dlq", "jobs", "--state", "active")["jobs"] == []


def test_jobs_table_shows_limit_and_cursor(cli: Cli) -> None:
    dead_jobs(cli, 3)
    cli.ok("dlq", "redrive", "jobs", "--background", "--rate", "5", "--limit", "2")
    [job] = cli.json("dlq", "jobs")["jobs"]
    listed = cli.ok("dlq", "jobs", "jobs")
    cells = header_line(listed, job["id"]).split()
    assert cells[3] == "0/2"
    assert "Cursor" in listed
    assert "Dead after" in listed


def test_rate_needs_background(cli: Cli) -> None:
    dead_jobs(cli, 1)
    done = cli("dlq", "redrive", "jobs", "--rate", "5")
    assert done.returncode == 2
    assert "--rate and --source-queue need --background" in done.stderr
    assert cli.json("queue", "show", "jobs.dlq")["stats"]["dead"] == 1


def test_jobs_empty(cli: Cli) -> None:
    assert cli.ok("dlq", "jobs").strip() == "No redrive jobs."


def test_cancel_unknown_job(cli: Cli) -> None:
    done = cli("dlq", "cancel", "nope")
    assert done.returncode == 1
    assert "no redrive job with id 'nope'" in done.stderr
