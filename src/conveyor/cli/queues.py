"""`conveyor queue ...`: create, list, show, update, delete and purge queues."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import click

from ..errors import QueueNotFound
from ..engine import DEFAULT_BREAKER_EVENTS, MAX_BREAKER_EVENTS
from ..models import BreakerReport, QueueInfo, QueueStats
from ..settings import DLQ_SUFFIX, QueueSettings
from ..text import plural
from . import main
from .common import (
    ClientOptions,
    client_options,
    confirm_or_fail,
    format_duration_s,
    format_time,
    open_client,
    option,
    print_json,
    print_line,
    print_table,
)


class Cleared:
    """The value of a setting flag given as 'none': set the setting to null."""

    def __repr__(self) -> str:
        return "none"


CLEARED = Cleared()


class OrNone(click.ParamType):
    """A flag value of another type, or 'none' to clear a setting that may be null."""

    def __init__(self, inner: click.ParamType) -> None:
        self.inner = inner
        self.name = f"{inner.name}|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.lower() == "none":
            return CLEARED
        return self.inner.convert(value, param, ctx)


class JsonObjectOrNone(click.ParamType):
    """A flag value that is a JSON object, or 'none' to clear the setting."""

    name = "json|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dict):
            return value
        if isinstance(value, str) and value.lower() == "none":
            return CLEARED
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            self.fail(f"{value!r} is not valid JSON ({exc}); give an object such as "
                      "'{\"failure_ratio\": 0.5}' or 'none'", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(f"{value!r} is not a JSON object; give an object such as "
                      "'{\"failure_ratio\": 0.5}' or 'none'", param, ctx)
        return parsed


@dataclass(frozen=True)
class SettingFlag:
    """The command-line flag of one QueueSettings field."""

    name: str
    type: click.ParamType
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTING_FLAGS = (
    SettingFlag(
        "type",
        click.Choice(["standard", "fifo"]),
        "Queue type: standard, or fifo for in-order delivery within each message group.",
    ),
    SettingFlag(
        "visibility_timeout_s",
        click.FLOAT,
        "Lease length in seconds: how long a reserved message stays hidden "
        "before it is delivered again.",
    ),
    SettingFlag(
        "max_attempts",
        click.INT,
        "Deliveries a message gets before it moves to the dead-letter queue.",
    ),
    SettingFlag(
        "dead_letter_queue",
        click.STRING,
        "Name of the queue that receives messages after max_attempts failed "
        "deliveries; created if missing.",
    ),
    SettingFlag(
        "backoff_base_s",
        click.FLOAT,
        "Retry delay in seconds after the first failed attempt.",
    ),
    SettingFlag(
        "backoff_factor",
        click.FLOAT,
        "Factor the retry delay is multiplied by after each further failed attempt.",
    ),
    SettingFlag("backoff_cap_s", click.FLOAT, "Maximum retry delay in seconds."),
    SettingFlag(
        "backoff_jitter",
        click.Choice(["full", "none"]),
        "Retry delay jitter: full draws the delay uniformly from 0 to the "
        "backoff, none uses the backoff as is.",
    ),
    SettingFlag(
        "retention_s",
        click.FLOAT,
        "Seconds a message is kept before it is deleted even if never processed.",
    ),
    SettingFlag(
        "max_message_size",
        click.INT,
        "Maximum size of one message in bytes, body and headers together.",
    ),
    SettingFlag(
        "default_delay_s",
        click.FLOAT,
        "Delay in seconds for messages posted without their own delay.",
    ),
    SettingFlag(
        "dedup_window_s",
        click.FLOAT,
        "Seconds during which a repeated dedup id returns the first message "
        "instead of posting a new one.",
    ),
    SettingFlag(
        "rate_limit_per_s",
        OrNone(click.FLOAT),
        "Deliveries per second across all workers and servers, retries "
        "included; 'none' removes the limit.",
    ),
    SettingFlag(
        "rate_burst",
        OrNone(click.IntRange(1)),
        "Deliveries allowed at once after an idle spell (the token bucket's "
        "size); 'none' means the rate rounded up.",
    ),
    SettingFlag(
        "max_in_flight",
        OrNone(click.IntRange(1)),
        "Messages reserved at once across all workers; 'none' removes the limit.",
    ),
    SettingFlag(
        "group_max_in_flight",
        click.IntRange(1),
        "Fifo queues: messages of one group reserved at once. Above 1, "
        "order holds for starts only.",
    ),
    SettingFlag(
        "paused",
        click.BOOL,
        "true: deliver nothing while still accepting posts; "
        "'conveyor queue pause' and 'resume' set it too.",
    ),
    SettingFlag(
        "breaker",
        JsonObjectOrNone(),
        "Circuit breaker as a JSON object, '{}' for the defaults: failure_ratio "
        "(0.5), window_s (60), min_attempts (20), cooldown_s (30), "
        "max_cooldown_s (600), probes (3), redrive_on_close (false), "
        "redrive_rate_per_s (null); 'none' removes it.",
    ),
)

DEFAULT_SETTINGS = QueueSettings()


def setting_options(envvar_prefix: str, for_update: bool) -> Callable:
    """Add one option per queue setting, each defaulting to None (not sent).

    For create, the help shows the value the queue gets when the flag is
    omitted; for update, an omitted flag leaves the setting unchanged.
    """

    def decorate(command: Callable) -> Callable:
        for spec in reversed(SETTING_FLAGS):
            decorator = option(
                spec.flag,
                spec.name,
                envvar=envvar_prefix + spec.name.upper(),
                type=spec.type,
                default=None,
                show_default=_shown_default(spec.name, for_update),
                help=spec.help,
            )
            command = decorator(command)
        return command

    return decorate


def _shown_default(name: str, for_update: bool) -> str:
    if for_update:
        return "unchanged"
    if name == "dead_letter_queue":
        return f"NAME{DLQ_SUFFIX}"
    value = getattr(DEFAULT_SETTINGS, name)
    return "none" if value is None else str(value)


def _given_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Return the settings whose flags were given; 'none' becomes null."""
    return {
        name: None if value is CLEARED else value
        for name, value in values.items()
        if value is not None
    }


@main.group("queue")
def queue_group() -> None:
    """Create, inspect, change and delete queues."""


# list --------------------------------------------------------------------


@queue_group.command("list")
@client_options
def list_queues(options: ClientOptions) -> None:
    """List every queue with its message counts."""
    with open_client(options) as client:
        rows = [(info, client.stats(info.name)) for info in client.list_queues()]

    if options.json_output:
        print_json([_queue_document(info, stats) for info, stats in rows])
        return
    print_table(
        None,
        [
            "Queue",
            "Type",
            "State",
            "Ready",
            "Delayed",
            "Reserved",
            "Dead",
            "Oldest ready",
            "DLQ",
        ],
        [
            (
                info.name,
                info.settings["type"],
                flow_state_label(stats),
                stats.ready,
                stats.delayed,
                stats.reserved,
                stats.dead,
                format_duration_s(stats.oldest_ready_age_s),
                _dlq_label(info),
            )
            for info, stats in rows
        ],
        wrapped=("DLQ",),
    )


def flow_state_label(stats: QueueStats) -> str:
    """Return whether a queue delivers: active, paused, or its breaker's state."""
    if stats.paused:
        return "paused"
    breaker = stats.breaker or {}
    if breaker.get("state") == "open":
        return "breaker open"
    if breaker.get("state") == "half_open":
        return "breaker half-open"
    return "active"


def _dlq_label(info: QueueInfo) -> str:
    dlq = info.settings.get("dead_letter_queue")
    return "(itself)" if dlq == info.name else dlq or "-"


def _queue_document(info: QueueInfo, stats: QueueStats) -> dict[str, Any]:
    document = info.to_wire()
    document["stats"] = stats.to_wire()
    return document


# create ------------------------------------------------------------------


@queue_group.command("create")
@click.argument("name")
@option(
    "--exist-ok",
    envvar="CONVEYOR_CREATE_EXIST_OK",
    is_flag=True,
    default=False,
    help="Succeed without changes when the queue exists already; its "
    "settings are kept as they are.",
)
@setting_options("CONVEYOR_CREATE_", for_update=False)
@client_options
def create_queue(
    options: ClientOptions, name: str, exist_ok: bool, **settings: Any
) -> None:
    """Create queue NAME and its dead-letter queue."""
    with open_client(options) as client:
        existed = exist_ok and _queue_exists(client, name)
        info = client.create_queue(name, _given_settings(settings), exist_ok=exist_ok)

    if options.json_output:
        print_json(info.to_wire())
    elif existed:
        print_line(f"Queue {name} exists already; its settings were not changed.")
    else:
        print_line(
            f"Created {info.settings['type']} queue {name} with dead-letter "
            f"queue {info.settings['dead_letter_queue']}."
        )


def _queue_exists(client: Any, name: str) -> bool:
    try:
        client.get_queue(name)
    except QueueNotFound:
        return False
    return True


# show --------------------------------------------------------------------


@queue_group.command("show")
@click.argument("name")
@client_options
def show_queue(options: ClientOptions, name: str) -> None:
    """Show the settings of queue NAME and its message counts."""
    with open_client(options) as client:
        info = client.get_queue(name)
        stats = client.stats(name)

    if options.json_output:
        print_json(_queue_document(info, stats))
        return
    print_table(
        f"Queue {name}",
        ["Setting", "Value"],
        [(key, _format_setting(value)) for key, value in info.settings.items()],
    )
    print_table(
        "Messages",
        ["State", "Count"],
        [
            ("ready", stats.ready),
            ("delayed", stats.delayed),
            ("reserved", stats.reserved),
            ("dead", stats.dead),
            ("oldest ready age", format_duration_s(stats.oldest_ready_age_s)),
        ],
    )
    print_table("Flow control", ["Item", "Value"], _flow_rows(info, stats))


def _flow_rows(info: QueueInfo, stats: QueueStats) -> list[tuple[str, str]]:
    rows = [("state", flow_state_label(stats))]
    if stats.tokens is not None:
        rows.append(("tokens now", f"{stats.tokens:.2f}"))
    if stats.breaker is not None:
        rows += breaker_rows(stats.breaker)
    return rows


def breaker_rows(status: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the table rows that describe a breaker status (its wire form)."""
    ratio = status["failure_ratio"]
    rows = [
        ("breaker", status["state"]),
        ("breaker mode", status["mode"]),
        (
            "breaker window",
            f"{status['failures']} of {status['attempts']} attempts failed"
            + ("" if ratio is None else f" (ratio {ratio:.2f})"),
        ),
    ]
    if status["opened_at"] is not None:
        rows.append(("breaker opened at", format_time(status["opened_at"])))
    if status["next_probe_at"] is not None:
        rows.append(("breaker next probe at", format_time(status["next_probe_at"])))
    if status["state"] == "half_open":
        rows.append(
            ("breaker probes", f"{status['probes_succeeded']} of {status['probes_sent']} succeeded")
        )
    return rows


def _format_setting(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# update ------------------------------------------------------------------


@queue_group.command("update")
@click.argument("name")
@setting_options("CONVEYOR_UPDATE_", for_update=True)
@client_options
def update_queue(options: ClientOptions, name: str, **settings: Any) -> None:
    """Change settings of queue NAME; omitted settings keep their values."""
    changes = _given_settings(settings)
    if not changes:
        raise click.UsageError(
            "no setting to change: pass at least one setting flag, "
            "for example --max-attempts 10"
        )
    with open_client(options) as client:
        info = client.update_queue(name, changes)

    if options.json_output:
        print_json(info.to_wire())
        return
    changed = ", ".join(
        f"{key}={_format_setting(info.settings[key])}" for key in sorted(changes)
    )
    print_line(f"Updated queue {name}: {changed}.")


# delete and purge --------------------------------------------------------


@queue_group.command("delete")
@click.argument("name")
@option(
    "--yes",
    envvar="CONVEYOR_DELETE_YES",
    is_flag=True,
    default=False,
    help="Delete without asking for confirmation.",
)
@client_options
def delete_queue(options: ClientOptions, name: str, yes: bool) -> None:
    """Delete queue NAME and all its messages; its DLQ is kept."""
    with open_client(options) as client:
        info = client.get_queue(name)
        schedules = [s.name for s in client.list_schedules(queue=name, limit=1000)]
        if schedules:
            click.echo(
                f"warning: {_schedules_phrase(schedules)} to queue {name}; after the "
                "delete their ticks post nothing until the queue exists again. "
                "Delete or change them with 'conveyor schedules delete' or "
                "'conveyor schedules update'.",
                err=True,
            )
        if not yes:
            confirm_or_fail(f"Delete queue {name} and all its messages?")
        removed = client.delete_queue(name)

    if options.json_output:
        print_json({"queue": name, "messages_deleted": removed})
        return
    print_line(f"Deleted queue {name} and its {plural(removed, 'message')}.")
    dlq = info.settings.get("dead_letter_queue")
    if dlq and dlq != name:
        print_line(f"Its dead-letter queue {dlq} was kept; delete it separately.")


@queue_group.command("purge")
@click.argument("name")
@option(
    "--yes",
    envvar="CONVEYOR_PURGE_YES",
    is_flag=True,
    default=False,
    help="Purge without asking for confirmation.",
)
@client_options
def purge_queue(options: ClientOptions, name: str, yes: bool) -> None:
    """Delete every message of queue NAME and keep the queue."""
    with open_client(options) as client:
        client.get_queue(name)
        if not yes:
            confirm_or_fail(f"Delete every message of queue {name}?")
        removed = client.purge_queue(name)

    if options.json_output:
        print_json({"queue": name, "messages_deleted": removed})
        return
    print_line(f"Purged queue {name}: {plural(removed, 'message')} deleted.")


def _schedules_phrase(names: list[str]) -> str:
    """Return `schedule a posts` or `schedules a, b post`."""
    if len(names) == 1:
        return f"schedule {names[0]} posts"
    return f"schedules {', '.join(names)} post"


# pause and resume --------------------------------------------------------


@queue_group.command("pause")
@click.argument("name")
@client_options
def pause_queue(options: ClientOptions, name: str) -> None:
    """Stop delivering the messages of queue NAME; posts are still accepted."""
    with open_client(options) as client:
        info = client.pause_queue(name)

    if options.json_output:
        print_json(info.to_wire())
        return
    print_line(f"Paused queue {name}: nothing is delivered until 'conveyor queue resume {name}'.")


@queue_group.command("resume")
@click.argument("name")
@client_options
def resume_queue(options: ClientOptions, name: str) -> None:
    """Deliver the messages of paused queue NAME again."""
    with open_client(options) as client:
        info = client.resume_queue(name)

    if options.json_output:
        print_json(info.to_wire())
        return
    print_line(f"Resumed queue {name}.")


# breaker -----------------------------------------------------------------


@queue_group.command("breaker")
@click.argument("name")
@option(
    "--open",
    "force",
    flag_value="open",
    envvar="CONVEYOR_BREAKER_STATE",
    default=None,
    show_default="unchanged",
    help="Force the breaker open: deliver nothing until --auto or --close.",
)
@option(
    "--close",
    "force",
    flag_value="closed",
    envvar="CONVEYOR_BREAKER_STATE",
    default=None,
    show_default="unchanged",
    help="Force the breaker closed: deliver normally whatever fails.",
)
@option(
    "--auto",
    "force",
    flag_value="auto",
    envvar="CONVEYOR_BREAKER_STATE",
    default=None,
    show_default="unchanged",
    help="Hand the breaker back to automatic control.",
)
@option(
    "--limit",
    envvar="CONVEYOR_BREAKER_LIMIT",
    type=click.IntRange(1, MAX_BREAKER_EVENTS),
    default=DEFAULT_BREAKER_EVENTS,
    help="Number of recent breaker changes to list, newest first.",
)
@client_options
def show_breaker(options: ClientOptions, name: str, force: str | None, limit: int) -> None:
    """Show the circuit breaker of queue NAME and its recent changes, or force it."""
    with open_client(options) as client:
        if force is not None:
            client.force_breaker(name, force)
        report: BreakerReport = client.breaker(name, limit)

    if options.json_output:
        print_json(report.to_wire())
        return
    if report.status is None:
        print_line(f"Queue {name} has no circuit breaker.")
    else:
        print_table(f"Breaker of queue {name}", ["Item", "Value"],
                    breaker_rows(report.status.to_wire()))
    if not report.events:
        print_line("No breaker changes recorded.")
        return
    print_table(
        "Recent changes",
        ["Time", "From", "To", "Failed", "Ratio", "Cool-down", "Reason"],
        [
            (
                format_time(event.at),
                event.from_state,
                event.to_state,
                "-" if event.failures is None else f"{event.failures}/{event.attempts}",
                "-" if event.ratio is None else f"{event.ratio:.2f}",
                "-" if event.cooldown_s is None else f"{event.cooldown_s:g} s",
                event.reason,
            )
            for event in report.events
        ],
        wrapped=("Reason",),
    )
