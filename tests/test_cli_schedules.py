"""`conveyor schedules ...`, run as the real console script on a store file and a server."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Iterator

import click
import pytest

from conveyor.cli import main
from conveyor.client import connect
from http_fixtures import ServerProcess, start_server
from test_cli import Cli

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("schedules-cli"))
    yield server
    server.stop()


@pytest.fixture(params=["store", "server"])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    """A CLI on a new store file, or on the shared server with no schedules, with queue `jobs`."""
    if request.param == "store":
        url = f"sqlite:///{tmp_path}/cli.db"
    else:
        url = request.getfixturevalue("server").url
    with connect(url) as client:
        for schedule in client.list_schedules(limit=1000):
            client.delete_schedule(schedule.name)
        client.create_queue("jobs", exist_ok=True)
    return Cli(url)


def test_create_prints_next_tick(cli: Cli) -> None:
    out = cli.ok("schedules", "create", "nightly", "jobs", "--cron", "30 2 * * *",
                 "--timezone", "Europe/Berlin", "--body", '{"report": 1}')
    assert "Created schedule nightly" in out
    assert "Europe/Berlin" in out


def test_create_json_document(cli: Cli) -> None:
    created = cli.json("schedules", "create", "tick", "jobs", "--every-s", "30",
                       "--header", "team=ops", "--max-runs", "4", "--catch-up", "all",
                       "--catch-up-limit", "3", "--start", "2030-01-01T00:00:00+00:00")
    assert created["interval_s"] == 30
    assert created["message"]["headers"] == {"team": "ops"}
    assert created["max_runs"] == 4
    assert created["catch_up_limit"] == 3
    assert created["next_fire_at"] == 1893456000.0


def test_create_invalid_cron_fails(cli: Cli) -> None:
    done = cli("schedules", "create", "bad", "jobs", "--cron", "0 0 31 2 *")
    assert done.returncode == 1
    assert "0 0 31 2 *" in done.stderr.decode()
    assert cli.json("schedules", "list")["schedules"] == []


def test_create_naive_start_fails(cli: Cli) -> None:
    done = cli("schedules", "create", "x", "jobs", "--every-s", "60", "--start",
               "2030-01-01T00:00:00")
    assert done.returncode == 2
    assert "offset" in done.stderr.decode()


def test_list_table(cli: Cli) -> None:
    cli.ok("schedules", "create", "alpha", "jobs", "--every-s", "60", "--max-runs", "9")
    out = cli.ok("schedules", "list")
    assert "alpha" in out
    assert "every 60s" in out
    assert "/9" in out


def test_list_empty(cli: Cli) -> None:
    assert "No schedules." in cli.ok("schedules", "list")


def test_show_table(cli: Cli) -> None:
    cli.ok("schedules", "create", "alpha", "jobs", "--every-s", "60", "--priority", "7")
    out = cli.ok("schedules", "show", "alpha")
    assert "Next ticks" in out
    assert "priority" in out


def test_show_missing_fails(cli: Cli) -> None:
    done = cli("schedules", "show", "nope")
    assert done.returncode == 1
    assert "nope" in done.stderr.decode()


def test_pause_resume(cli: Cli) -> None:
    cli.ok("schedules", "create", "alpha", "jobs", "--every-s", "60")
    assert cli.json("schedules", "pause", "alpha")["state"] == "paused"
    assert "Resumed schedule alpha" in cli.ok("schedules", "resume", "alpha")


def test_delete_with_yes(cli: Cli) -> None:
    cli.ok("schedules", "create", "alpha", "jobs", "--every-s", "60")
    assert "Deleted schedule alpha." in cli.ok("schedules", "delete", "alpha", "--yes")
    assert cli.json("schedules", "list")["schedules"] == []


def test_delete_without_terminal_keeps(cli: Cli) -> None:
    cli.ok("schedules", "create", "alpha", "jobs", "--every-s", "60")
    done = cli("schedules", "delete", "alpha")
    assert done.returncode == 1
    assert len(cli.json("schedules", "list")["schedules"]) == 1


def _command_paths(group: click.Group, prefix: str) -> list[str]:
    paths = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, path))
        else:
            paths.append(path)
    return paths


def test_schedule_commands_documented() -> None:
    page = (ROOT / "docs" / "schedules.md").read_text()
    group = main.commands["schedules"]
    missing = [path for path in _command_paths(group, "conveyor schedules") if path not in page]
    assert missing == []


def test_create_grace_s(cli: Cli) -> None:
    created = cli.json("schedules", "create", "late", "jobs", "--every-s", "30",
                       "--grace-s", "5")
    assert created["grace_s"] == 5.0


def test_create_paused_prints_no_past_tick(cli: Cli) -> None:
    out = cli.ok("schedules", "create", "held", "jobs", "--every-s", "30", "--paused")
    assert "paused" in out
    assert "next tick" not in out


@pytest.mark.parametrize("flag,value", [("--every-s", "nan"), ("--every-s", "inf"),
                                        ("--grace-s", "nan")])
def test_create_non_finite_rejected(cli: Cli, flag: str, value: str) -> None:
    args = ["schedules", "create", "odd", "jobs", "--cron", "* * * * *"]
    if flag == "--every-s":
        args = ["schedules", "create", "odd", "jobs"]
    done = cli(*args, flag, value)
    assert done.returncode != 0
    assert "finite" in done.stderr.decode()
    assert "odd" not in cli.ok("schedules", "list")


def test_queue_delete_names_schedules(cli: Cli) -> None:
    cli.ok("queue", "create", "doomed")
    cli.ok("schedules", "create", "feeder", "doomed", "--every-s", "30")
    done = cli("queue", "delete", "doomed", "--yes")
    assert done.returncode == 0
    assert "schedule feeder posts to queue doomed" in done.stderr.decode()


def test_list_shows_last_error(cli: Cli) -> None:
    cli.ok("queue", "create", "gone")
    cli.ok("schedules", "create", "lost", "gone", "--every-s", "1")
    cli.ok("queue", "delete", "gone", "--yes")
    with connect(cli.url) as client:
        deadline = time.monotonic() + 10
        while client.get_schedule("lost").last_error is None:
            assert time.monotonic() < deadline, "no server fired the schedule"
            if hasattr(client, "run_schedules"):
                client.run_schedules()
            else:
                time.sleep(0.2)
    out = cli.ok("schedules", "list")
    assert "Error" in out
    assert "queue 'gone' does not exist" in out


def test_create_without_timing_names_flags(cli: Cli) -> None:
    done = cli("schedules", "create", "untimed", "jobs")
    assert done.returncode != 0
    assert "--cron" in done.stderr.decode()
    assert "--every-s" in done.stderr.decode()


def test_update_changes_given_fields(cli: Cli) -> None:
    cli.ok("schedules", "create", "edit", "jobs", "--every-s", "30", "--catch-up", "once",
           "--header", "team=ops")
    updated = cli.json("schedules", "update", "edit", "--every-s", "60",
                       "--header", "team=dev", "--body", '{"v": 2}', "--pause")
    assert updated["interval_s"] == 60.0
    assert updated["catch_up"] == "once"
    assert updated["message"]["headers"] == {"team": "dev"}
    assert updated["message"]["body"] == {"v": 2}
    assert updated["state"] == "paused"


def test_update_resume_and_clear_headers(cli: Cli) -> None:
    cli.ok("schedules", "create", "edit2", "jobs", "--every-s", "30", "--paused",
           "--header", "team=ops")
    updated = cli.json("schedules", "update", "edit2", "--clear-headers", "--resume")
    assert "headers" not in updated["message"]
    assert updated["state"] == "active"


def test_update_without_flags_fails(cli: Cli) -> None:
    cli.ok("schedules", "create", "edit3", "jobs", "--every-s", "30")
    done = cli("schedules", "update", "edit3")
    assert done.returncode != 0
    assert "nothing to change" in done.stderr.decode()


def test_ticks_lists_fired(cli: Cli) -> None:
    cli.ok("schedules", "create", "fired", "jobs", "--every-s", "1")
    with connect(cli.url) as client:
        deadline = time.monotonic() + 10
        while not client.list_schedule_ticks("fired"):
            assert time.monotonic() < deadline, "no server fired the schedule"
            if hasattr(client, "run_schedules"):
                client.run_schedules()
            else:
                time.sleep(0.2)
    out = cli.ok("schedules", "ticks", "fired", env={"TZ": "UTC"})
    assert "Ticks of schedule fired" in out
    assert "+00:00" in out


def test_show_prints_utc_offset(cli: Cli) -> None:
    cli.ok("schedules", "create", "zoned", "jobs", "--every-s", "30",
           "--start", "2030-01-01T00:00:00+00:00")
    out = cli.ok("schedules", "show", "zoned", env={"TZ": "UTC"})
    assert "2030-01-01 00:00:00+00:00" in out


def test_message_show_prints_headers(cli: Cli) -> None:
    cli.ok("schedules", "create", "shown", "jobs", "--every-s", "1")
    with connect(cli.url) as client:
        deadline = time.monotonic() + 10
        while not client.list_schedule_ticks("shown"):
            assert time.monotonic() < deadline, "no server fired the schedule"
            if hasattr(client, "run_schedules"):
                client.run_schedules()
            else:
                time.sleep(0.2)
        message_id = client.list_schedule_ticks("shown")[-1]["message_id"]
    out = cli.ok("message", "show", message_id)
    assert "header conveyor-schedule " in out
    assert "shown" in out


def test_cli_log_lines_use_utc_iso_times(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path}/logs.db")
    cli.ok("queue", "create", "jobs")
    done = cli("--log-level", "info", "schedules", "create", "logged", "jobs",
               "--every-s", "30")
    assert done.returncode == 0
    lines = [line for line in done.stderr.decode().splitlines() if "INFO" in line]
    assert lines, "the CLI logged nothing at INFO"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO ", lines[0])


def test_list_fits_80_columns(cli: Cli) -> None:
    cli.ok("queue", "create", "reports-queue")
    cli.ok("schedules", "create", "nightly-report-builder", "reports-queue",
           "--cron", "30 2 * * *", "--timezone", "Europe/Berlin")
    done = cli("schedules", "list", env={"COLUMNS": "80"})
    out = done.stdout.decode()

    assert done.returncode == 0, done.stderr
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "nightly-report-builder" in out
    assert "active" in out
    assert "…" not in out
