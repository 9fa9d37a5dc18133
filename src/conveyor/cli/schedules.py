"""`conveyor schedules ...`: list, show, create, pause, resume and delete schedules.

`update` and `ticks` live in schedule_changes.py. Times print in local time
with their UTC offset.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import click
import orjson

from ..engine_schedules import MAX_SCHEDULES_LISTED
from ..models import Schedule
from ..schedule_times import CATCH_UP_POLICIES
from . import main
from .common import (
    ClientOptions,
    client_options,
    confirm_or_fail,
    open_client,
    option,
    preview_body,
    print_json,
    print_line,
    print_table,
)


@main.group("schedules")
def schedules_group() -> None:
    """Create, inspect, pause and delete schedules that post messages on cron
    ticks or at fixed intervals. A `conveyor server` fires them."""


def format_zoned_time(timestamp: float | None) -> str:
    """Format a Unix time in local time with its UTC offset: `2026-05-01 14:03:07+02:00`."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(" ", "seconds")


def describe_timing(schedule: Schedule) -> str:
    if schedule.cron is not None:
        return f"{schedule.cron} ({schedule.timezone})"
    return f"every {schedule.interval_s:g}s"


@schedules_group.command("list")
@option(
    "--queue",
    envvar="CONVEYOR_SCHEDULES_QUEUE",
    default=None,
    show_default="every queue",
    help="List only the schedules that post to this queue.",
)
@option(
    "--limit",
    envvar="CONVEYOR_SCHEDULES_LIMIT",
    type=click.IntRange(1, MAX_SCHEDULES_LISTED),
    default=100,
    help=f"Number of schedules to list, by name, at most {MAX_SCHEDULES_LISTED}.",
)
@client_options
def list_schedules(options: ClientOptions, queue: str | None, limit: int) -> None:
    """List schedules by name with their state and next tick."""
    with open_client(options) as client:
        schedules = client.list_schedules(queue=queue, limit=limit)

    if options.json_output:
        print_json({"schedules": [s.to_wire() for s in schedules]})
        return
    if not schedules:
        print_line("No schedules.")
        return
    _print_schedule_list(schedules)


def _print_schedule_list(schedules: list[Schedule]) -> None:
    """Print the list table; `show` and --json carry the last tick and source.

    The Error column appears only when a schedule has an error, so the
    table fits 80 columns in the usual case.
    """
    columns = ["Name", "Queue", "Timing", "State", "Runs", "Next tick"]
    with_errors = any(s.last_error for s in schedules)
    if with_errors:
        columns.append("Error")
    rows = []
    for s in schedules:
        row = [
            s.name,
            s.queue,
            describe_timing(s),
            s.state,
            str(s.run_count) if s.max_runs is None else f"{s.run_count}/{s.max_runs}",
            _format_short_time(s.next_fire_at),
        ]
        if with_errors:
            row.append(_short_error(s.last_error))
        rows.append(tuple(row))
    offset = datetime.now().astimezone().strftime("%z")
    print_table(
        f"Schedules (times in local time, UTC{offset[:3]}:{offset[3:]})", columns, rows,
        whole=("Name", "State", "Runs", "Next tick"), wrapped=("Queue", "Timing", "Error"),
    )


def _format_short_time(timestamp: float | None) -> str:
    """Format a Unix time in local time without year and seconds: `05-01 14:03`."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%m-%d %H:%M")


@schedules_group.command("show")
@click.argument("name")
@client_options
def show_schedule(options: ClientOptions, name: str) -> None:
    """Show schedule NAME: its definition, message and next ticks."""
    with open_client(options) as client:
        schedule = client.get_schedule(name)

    if options.json_output:
        print_json(schedule.to_wire())
        return
    template = schedule.message
    rows = [
        ("Queue", schedule.queue),
        ("Timing", describe_timing(schedule)),
        ("State", schedule.state),
        ("Source", schedule.source),
        ("Start", format_zoned_time(schedule.start_at)),
        ("End", format_zoned_time(schedule.end_at)),
        ("Runs", schedule.run_count if schedule.max_runs is None
         else f"{schedule.run_count} of {schedule.max_runs}"),
        ("Catch-up", schedule.catch_up if schedule.catch_up != "all"
         else f"all, at most {schedule.catch_up_limit}"),
        ("Grace", f"{schedule.grace_s:g} s"),
        ("Last tick", format_zoned_time(schedule.last_fire_at)),
        ("Next ticks",
         ", ".join(format_zoned_time(t) for t in schedule.next_fire_times) or "-"),
        ("Last error", schedule.last_error or "-"),
        ("Body", preview_body(template.get("body"))),
    ]
    for key in ("headers", "priority", "group", "delay_s", "retention_s", "max_attempts"):
        if key in template:
            rows.append((key, orjson.dumps(template[key]).decode()))
    print_table(f"Schedule {schedule.name}", ["Field", "Value"], rows, wrapped=("Value",))


def _short_error(error: str | None, max_chars: int = 60) -> str:
    """Return the last error cut to `max_chars`, or "-"; `show` prints it whole."""
    if error is None:
        return "-"
    error = error.split(" posted nothing: ", 1)[-1]
    return error if len(error) <= max_chars else error[: max_chars - 3] + "..."


class FiniteFloat(click.ParamType):
    """A float option that rejects nan and inf, which JSON cannot carry."""

    name = "float"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds; use e.g. 30", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()


def next_tick_text(schedule: Schedule) -> str:
    if schedule.state == "paused":
        return "paused, so no tick fires until it is resumed"
    if schedule.state == "finished":
        return "finished, with no tick left"
    return f"next tick {format_zoned_time(schedule.next_fire_at)}"


def parse_time(value: str | None, name: str) -> float | None:
    """Read an ISO 8601 time with an offset, or Unix seconds."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds):
            raise click.BadParameter(
                f"{value!r} is not a time: use ISO 8601 with an offset such as "
                "2026-12-01T09:00:00+01:00, or finite Unix seconds",
                param_hint=name,
            )
        return seconds
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not a time: use ISO 8601 with an offset such as "
            "2026-12-01T09:00:00+01:00, or Unix seconds",
            param_hint=name,
        ) from exc
    if moment.tzinfo is None:
        raise click.BadParameter(
            f"{value!r} has no UTC offset; add one, e.g. {value}+00:00", param_hint=name
        )
    return moment.timestamp()


def parse_headers(pairs: tuple[str, ...]) -> dict[str, str] | None:
    headers: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise click.BadParameter(
                f"{pair!r} is not KEY=VALUE", param_hint="--header"
            )
        headers[key] = value
    return headers or None


@schedules_group.command("create")
@click.argument("name")
@click.argument("queue")
@option("--cron", envvar="CONVEYOR_SCHEDULE_CRON", default=None, show_default="none",
        help="Five-field cron expression, e.g. '0 9 * * 1-5'; exclusive with --every-s.")
@option("--timezone", envvar="CONVEYOR_SCHEDULE_TIMEZONE", default=None, show_default="UTC",
        help="IANA time zone that --cron is read in, e.g. Europe/Berlin.")
@option("--every-s", "interval_s", envvar="CONVEYOR_SCHEDULE_EVERY_S", type=FINITE_FLOAT,
        default=None, show_default="none",
        help="Seconds between ticks (at least 1), counted from --start.")
@option("--body", "body_json", envvar="CONVEYOR_SCHEDULE_BODY", default="null",
        help="JSON body of each message.")
@option("--header", "headers", envvar="CONVEYOR_SCHEDULE_HEADER", multiple=True,
        metavar="KEY=VALUE", show_default="none",
        help="Header of each message; repeat the flag for more headers.")
@option("--priority", envvar="CONVEYOR_SCHEDULE_PRIORITY", type=int, default=None,
        show_default="0", help="Priority of each message, from -1000 to 1000.")
@option("--group", envvar="CONVEYOR_SCHEDULE_GROUP", default=None, show_default="none",
        help="Message group; required on fifo queues.")
@option("--start", envvar="CONVEYOR_SCHEDULE_START", default=None, show_default="now",
        help="First time a tick may have: ISO 8601 with offset, or Unix seconds.")
@option("--end", envvar="CONVEYOR_SCHEDULE_END", default=None, show_default="none",
        help="Last time a tick may have: ISO 8601 with offset, or Unix seconds.")
@option("--max-runs", envvar="CONVEYOR_SCHEDULE_MAX_RUNS", type=click.IntRange(1),
        default=None, show_default="no limit", help="Finish after this many posted ticks.")
@option("--catch-up", envvar="CONVEYOR_SCHEDULE_CATCH_UP",
        type=click.Choice(CATCH_UP_POLICIES), default="skip",
        help="Ticks missed while no server ran: skip fires none, once fires one "
        "message for all, all fires each up to --catch-up-limit.")
@option("--catch-up-limit", envvar="CONVEYOR_SCHEDULE_CATCH_UP_LIMIT",
        type=click.IntRange(1), default=None, show_default="100",
        help="With --catch-up all: fire at most this many missed ticks, the newest.")
@option("--grace-s", "grace_s", envvar="CONVEYOR_SCHEDULE_GRACE_S", type=FINITE_FLOAT,
        default=None, show_default="60",
        help="Misfire grace in seconds (0 to 86400): a tick fired at most this late "
        "is on time; later ticks follow --catch-up.")
@option("--paused", envvar="CONVEYOR_SCHEDULE_PAUSED", is_flag=True, default=False,
        help="Store the schedule paused; resume it later.")
@client_options
def create_schedule(options: ClientOptions, name: str, queue: str, **flags: Any) -> None:
    """Create schedule NAME that posts a message to QUEUE on each tick."""
    try:
        body = orjson.loads(flags.pop("body_json"))
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--body") from exc
    fields = {
        "body": body,
        "headers": parse_headers(flags.pop("headers")),
        "start_at": parse_time(flags.pop("start"), "--start"),
        "end_at": parse_time(flags.pop("end"), "--end"),
        **flags,
    }
    if fields.get("cron") is None and fields.get("interval_s") is None:
        raise click.UsageError(
            "a schedule needs its timing: give --cron EXPRESSION (with an optional "
            "--timezone) or --every-s SECONDS"
        )
    if fields.get("cron") is not None and fields.get("interval_s") is not None:
        raise click.UsageError("give either --cron or --every-s, not both")
    paused = fields.pop("paused")
    fields = {key: value for key, value in fields.items() if value is not None}
    with open_client(options) as client:
        schedule = client.create_schedule(name, queue, paused=paused, **fields)

    if options.json_output:
        print_json(schedule.to_wire())
        return
    print_line(
        f"Created schedule {schedule.name} ({describe_timing(schedule)}) posting to queue "
        f"{schedule.queue}; {next_tick_text(schedule)}."
    )


@schedules_group.command("pause")
@click.argument("name")
@client_options
def pause_schedule(options: ClientOptions, name: str) -> None:
    """Pause schedule NAME: no tick fires until it is resumed."""
    with open_client(options) as client:
        schedule = client.pause_schedule(name)
    if options.json_output:
        print_json(schedule.to_wire())
        return
    print_line(f"Paused schedule {schedule.name}.")


@schedules_group.command("resume")
@click.argument("name")
@client_options
def resume_schedule(options: ClientOptions, name: str) -> None:
    """Resume schedule NAME; ticks missed while paused follow its catch-up policy."""
    with open_client(options) as client:
        schedule = client.resume_schedule(name)
    if options.json_output:
        print_json(schedule.to_wire())
        return
    print_line(
        f"Resumed schedule {schedule.name} (catch-up {schedule.catch_up}); "
        f"{next_tick_text(schedule)}."
    )


@schedules_group.command("delete")
@click.argument("name")
@option("--yes", envvar="CONVEYOR_DELETE_YES", is_flag=True, default=False,
        help="Delete without asking for confirmation.")
@client_options
def delete_schedule(options: ClientOptions, name: str, yes: bool) -> None:
    """Delete schedule NAME and its recorded ticks; messages it posted stay."""
    with open_client(options) as client:
        client.get_schedule(name)
        if not yes:
            confirm_or_fail(f"Delete schedule {name}?")
        client.delete_schedule(name)
    if options.json_output:
        print_json({"name": name, "deleted": True})
        return
    print_line(f"Deleted schedule {name}.")
