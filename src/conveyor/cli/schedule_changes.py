"""`conveyor schedules update` and `conveyor schedules ticks`.

`update` sends only the flags given (PATCH semantics): a schedule keeps
every field that no flag names. `ticks` lists the ticks a schedule fired.
"""

from __future__ import annotations

from typing import Any

import click
import orjson

from ..engine_schedules import MAX_TICKS_LISTED
from ..schedule_times import CATCH_UP_POLICIES
from .common import (
    ClientOptions,
    client_options,
    open_client,
    option,
    print_json,
    print_line,
    print_table,
)
from .schedules import (
    FINITE_FLOAT,
    describe_timing,
    format_zoned_time,
    next_tick_text,
    parse_headers,
    parse_time,
    schedules_group,
)


@schedules_group.command("update")
@click.argument("name")
@option("--cron", envvar="CONVEYOR_SCHEDULE_CRON", default=None, show_default="unchanged",
        help="New five-field cron expression; replaces --every-s.")
@option("--timezone", envvar="CONVEYOR_SCHEDULE_TIMEZONE", default=None,
        show_default="unchanged", help="New IANA time zone of --cron, e.g. Europe/Berlin.")
@option("--every-s", "interval_s", envvar="CONVEYOR_SCHEDULE_EVERY_S", type=FINITE_FLOAT,
        default=None, show_default="unchanged",
        help="New seconds between ticks (at least 1); replaces --cron.")
@option("--queue", envvar="CONVEYOR_SCHEDULE_QUEUE", default=None, show_default="unchanged",
        help="Post to this queue from now on.")
@option("--body", "body_json", envvar="CONVEYOR_SCHEDULE_BODY", default=None,
        show_default="unchanged", help="New JSON body of each message.")
@option("--header", "headers", envvar="CONVEYOR_SCHEDULE_HEADER", multiple=True,
        metavar="KEY=VALUE", show_default="unchanged",
        help="Header of each message; repeat the flag. The given headers replace all "
        "of the old ones.")
@option("--clear-headers", envvar="CONVEYOR_SCHEDULE_CLEAR_HEADERS", is_flag=True,
        default=False, help="Remove every header of the schedule's messages.")
@option("--priority", envvar="CONVEYOR_SCHEDULE_PRIORITY", type=int, default=None,
        show_default="unchanged", help="Priority of each message, from -1000 to 1000.")
@option("--group", envvar="CONVEYOR_SCHEDULE_GROUP", default=None, show_default="unchanged",
        help="Message group; required on fifo queues.")
@option("--start", envvar="CONVEYOR_SCHEDULE_START", default=None, show_default="unchanged",
        help="First time a tick may have: ISO 8601 with offset, or Unix seconds.")
@option("--end", envvar="CONVEYOR_SCHEDULE_END", default=None, show_default="unchanged",
        help="Last time a tick may have: ISO 8601 with offset, or Unix seconds.")
@option("--max-runs", envvar="CONVEYOR_SCHEDULE_MAX_RUNS", type=click.IntRange(1),
        default=None, show_default="unchanged", help="Finish after this many posted ticks.")
@option("--catch-up", envvar="CONVEYOR_SCHEDULE_CATCH_UP",
        type=click.Choice(CATCH_UP_POLICIES), default=None, show_default="unchanged",
        help="Policy for missed ticks: skip, once or all.")
@option("--catch-up-limit", envvar="CONVEYOR_SCHEDULE_CATCH_UP_LIMIT",
        type=click.IntRange(1), default=None, show_default="unchanged",
        help="With --catch-up all: fire at most this many missed ticks, the newest.")
@option("--grace-s", "grace_s", envvar="CONVEYOR_SCHEDULE_GRACE_S", type=FINITE_FLOAT,
        default=None, show_default="unchanged",
        help="Misfire grace in seconds (0 to 86400).")
@option("--pause/--resume", "paused", envvar="CONVEYOR_SCHEDULE_PAUSED", default=None,
        show_default="unchanged",
        help="Pause the schedule, or resume it (missed ticks follow its catch-up policy).")
@client_options
def update_schedule(options: ClientOptions, name: str, **flags: Any) -> None:
    """Change the given fields of schedule NAME; the others stay as they are."""
    paused = flags.pop("paused")
    changes = _changes_from_flags(flags)
    if not changes and paused is None:
        raise click.UsageError(
            "nothing to change: give at least one flag, e.g. --every-s 60 or --pause; "
            "see 'conveyor schedules update --help'"
        )
    with open_client(options) as client:
        schedule = client.update_schedule(name, **changes) if changes else None
        if paused is True:
            schedule = client.pause_schedule(name)
        elif paused is False:
            schedule = client.resume_schedule(name)

    assert schedule is not None
    if options.json_output:
        print_json(schedule.to_wire())
        return
    print_line(
        f"Updated schedule {schedule.name} ({describe_timing(schedule)}) posting to queue "
        f"{schedule.queue}; {next_tick_text(schedule)}."
    )


def _changes_from_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """Return the PATCH fields of the flags that were given."""
    body_json = flags.pop("body_json")
    headers = flags.pop("headers")
    clear_headers = flags.pop("clear_headers")
    if headers and clear_headers:
        raise click.UsageError("give --header or --clear-headers, not both")
    changes = {key: value for key, value in flags.items() if value is not None}
    for flag, field in (("start", "start_at"), ("end", "end_at")):
        value = changes.pop(flag, None)
        if value is not None:
            changes[field] = parse_time(value, f"--{flag}")
    if body_json is not None:
        try:
            changes["body"] = orjson.loads(body_json)
        except orjson.JSONDecodeError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--body") from exc
    if headers:
        changes["headers"] = parse_headers(headers)
    if clear_headers:
        changes["headers"] = None
    return changes


@schedules_group.command("ticks")
@click.argument("name")
@option("--limit", envvar="CONVEYOR_SCHEDULES_TICKS_LIMIT",
        type=click.IntRange(1, MAX_TICKS_LISTED), default=20,
        help=f"Number of ticks to list, newest first, at most {MAX_TICKS_LISTED}.")
@client_options
def list_ticks(options: ClientOptions, name: str, limit: int) -> None:
    """List the ticks schedule NAME fired, newest first, with the messages they posted."""
    with open_client(options) as client:
        ticks = client.list_schedule_ticks(name, limit=limit)
    if options.json_output:
        print_json({"ticks": ticks})
        return
    if not ticks:
        print_line(f"Schedule {name} has fired no tick yet.")
        return
    print_table(
        f"Ticks of schedule {name}",
        ["Tick", "Fired", "Message", "Missed"],
        [
            (
                format_zoned_time(tick["tick_at"]),
                format_zoned_time(tick["fired_at"]),
                tick["message_id"] or "none (the post failed)",
                tick["missed"] or "-",
            )
            for tick in ticks
        ],
    )
