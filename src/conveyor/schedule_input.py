"""Checks of schedule definitions, before anything is stored.

A definition is a flat mapping: the timing (`cron` with `timezone`, or
`interval_s`), its limits (`start_at`, `end_at`, `max_runs`), the catch-up
policy, the target `queue` and the message template (`body`, `headers`,
`priority`, `group`, `delay_s`, `retention_s`, `max_attempts`). The same
keys travel over HTTP, through the SDK and into the store.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from cronsim import CronSim, CronSimError

from . import validation as check
from .errors import ValidationError
from .models import NewMessage
from .schedule_times import CATCH_UP_POLICIES, Timing
from .settings import validate_queue_name

# Error messages quote at most this many characters of a bad value.
MAX_ECHO_CHARS = 100
SCHEDULE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}")
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 366 * 86_400.0
MAX_CRON_LENGTH = 200
# The five cron fields in order, with the values each accepts.
CRON_FIELD_RULES = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31 or L",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT (0 and 7 are Sunday)",
}
MAX_TIMEZONE_LENGTH = 64
MAX_RUNS_LIMIT = 10**9
DEFAULT_CATCH_UP_LIMIT = 100
# A tick fired at most grace_s seconds late is on time; see schedule_times.plan_ticks.
DEFAULT_GRACE_S = 60.0
MAX_GRACE_S = 86_400.0
MAX_CATCH_UP_LIMIT = 1000
# The body of a template, encoded as JSON, may have at most this many bytes.
MAX_TEMPLATE_BODY_BYTES = 64 * 1024
# Headers that every fired message carries; a template may not set them.
SCHEDULE_HEADER = "conveyor-schedule"
TICK_HEADER = "conveyor-schedule-tick"
MISSED_HEADER = "conveyor-schedule-missed"
RESERVED_HEADERS = (SCHEDULE_HEADER, TICK_HEADER, MISSED_HEADER)
MAX_TEMPLATE_HEADERS = check.MAX_HEADERS - len(RESERVED_HEADERS)
SOURCES = ("api", "code")

TEMPLATE_FIELDS = (
    "body", "headers", "priority", "group", "delay_s", "retention_s", "max_attempts",
)
TIMING_FIELDS = (
    "cron", "timezone", "interval_s", "start_at", "end_at", "max_runs",
    "catch_up", "catch_up_limit", "grace_s",
)
DEFINITION_FIELDS = ("queue", *TIMING_FIELDS, *TEMPLATE_FIELDS)


@dataclass(frozen=True)
class ScheduleSpec:
    """A checked definition, ready to store.

    `template` contains the TEMPLATE_FIELDS that are set, with JSON values.
    """

    queue: str
    cron: str | None
    timezone: str
    interval_s: float | None
    start_at: float
    end_at: float | None
    max_runs: int | None
    catch_up: str
    catch_up_limit: int
    grace_s: float
    template: dict[str, Any]

    @property
    def timing(self) -> Timing:
        return Timing(self.cron, self.timezone, self.interval_s, self.start_at, self.end_at)

    def to_fields(self) -> dict[str, Any]:
        """Return the definition as a flat mapping of DEFINITION_FIELDS."""
        fields = {name: getattr(self, name) for name in ("queue", *TIMING_FIELDS)}
        fields.update({name: self.template.get(name) for name in TEMPLATE_FIELDS})
        return fields


def echo(value: Any, max_chars: int = MAX_ECHO_CHARS) -> str:
    """Return repr(value) for an error message, cut to `max_chars` with its full length."""
    text = repr(value)
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}... ({len(text)} characters)"


def validate_schedule_name(name: Any) -> str:
    """Return the name, or raise ValidationError naming the rule it breaks."""
    if not isinstance(name, str) or not SCHEDULE_NAME_RE.fullmatch(name):
        raise ValidationError(
            f"invalid schedule name {echo(name)}: use 1 to 80 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    return name


# Fields in seconds that SDK callers may give as a timedelta.
DURATION_FIELDS = ("interval_s", "grace_s", "delay_s", "retention_s")
# Fields in Unix seconds that SDK callers may give as an aware datetime.
TIME_FIELDS = ("start_at", "end_at")


def convert_sdk_values(fields: dict[str, Any]) -> dict[str, Any]:
    """Return `fields` with timedeltas as seconds and aware datetimes as Unix seconds.

    Both SDK transports run this first, so they accept the same values and
    raise the same errors. A naive datetime raises ValidationError because
    its time zone would be a guess.
    """
    converted = dict(fields)
    for name in DURATION_FIELDS:
        if isinstance(converted.get(name), timedelta):
            converted[name] = converted[name].total_seconds()
    for name in TIME_FIELDS:
        moment = converted.get(name)
        if isinstance(moment, datetime):
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValidationError(
                    f"invalid {name} {moment.isoformat()}: the datetime has no time "
                    "zone; pass an aware datetime such as datetime(2026, 12, 1, 9, "
                    "tzinfo=timezone.utc), or Unix seconds"
                )
            converted[name] = moment.timestamp()
    reject_non_finite(converted)
    return converted


def reject_non_finite(fields: dict[str, Any]) -> None:
    """Raise ValidationError for a NaN or infinite number anywhere in `fields`.

    JSON has no form for them: orjson writes NaN as null, so over HTTP a NaN
    `interval_s` would arrive as "no interval". Both transports run this
    check before anything else, so they reject such values alike.
    """
    for name, value in fields.items():
        found = _find_non_finite(value, name)
        if found is not None:
            path, number = found
            raise ValidationError(
                f"invalid {path} {number!r}: NaN and infinity are not allowed; "
                "use a finite number"
            )


def _find_non_finite(value: Any, path: str) -> tuple[str, float] | None:
    """Return the path and value of the first NaN or infinity in `value`, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    items: Any = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    for key, item in items:
        found = _find_non_finite(item, f"{path}[{key!r}]")
        if found is not None:
            return found
    return None


def check_source(source: Any) -> str:
    if source not in SOURCES:
        raise ValidationError(f"invalid schedule source {source!r}: use api or code")
    return source


def check_definition(fields: dict[str, Any], now: float) -> ScheduleSpec:
    """Check a whole definition; `start_at` defaults to `now`.

    Raises ValidationError naming the first invalid field and its fix.
    """
    if not isinstance(fields, dict):
        raise ValidationError(
            f"a schedule definition must be an object, got {type(fields).__name__}"
        )
    unknown = sorted(set(fields) - set(DEFINITION_FIELDS))
    if unknown:
        raise ValidationError(
            f"unknown schedule fields {', '.join(map(repr, unknown))}: use "
            f"{', '.join(DEFINITION_FIELDS)}"
        )
    if fields.get("queue") is None:
        raise ValidationError("a schedule needs a queue to post its messages to")
    cron, zone, interval_s = _check_timing_rule(fields)
    start_at = _check_time("start_at", fields.get("start_at"))
    start_at = now if start_at is None else start_at
    end_at = _check_time("end_at", fields.get("end_at"))
    if end_at is not None and end_at <= start_at:
        raise ValidationError(
            f"invalid end_at {end_at!r}: it is not after start_at {start_at!r}; "
            "set an end after the start, or no end"
        )
    spec = ScheduleSpec(
        queue=validate_queue_name(fields["queue"]),
        cron=cron,
        timezone=zone,
        interval_s=interval_s,
        start_at=start_at,
        end_at=end_at,
        max_runs=_check_optional_int("max_runs", fields.get("max_runs"), 1, MAX_RUNS_LIMIT),
        catch_up=_check_catch_up(fields.get("catch_up")),
        catch_up_limit=_check_optional_int(
            "catch_up_limit", fields.get("catch_up_limit"), 1, MAX_CATCH_UP_LIMIT
        ) or DEFAULT_CATCH_UP_LIMIT,
        grace_s=_check_grace(fields.get("grace_s")),
        template=_check_template(fields),
    )
    if cron is not None and spec.timing.next_after(start_at) is None:
        raise ValidationError(
            f"cron expression {cron!r} never fires between start_at and end_at; "
            "check the day and month fields, or widen the time range"
        )
    return spec


def build_message(template: dict[str, Any], headers: dict[str, str]) -> NewMessage:
    """Build the message a tick posts: the template plus the schedule's headers."""
    return NewMessage(
        body=template.get("body"),
        headers={**(template.get("headers") or {}), **headers},
        priority=template.get("priority") or 0,
        group=template.get("group"),
        delay_s=template.get("delay_s"),
        retention_s=template.get("retention_s"),
        max_attempts=template.get("max_attempts"),
    )


def _check_timing_rule(fields: dict[str, Any]) -> tuple[str | None, str, float | None]:
    cron = fields.get("cron")
    interval_s = fields.get("interval_s")
    if (cron is None) == (interval_s is None):
        raise ValidationError(
            "a schedule needs exactly one of cron (with an optional timezone) "
            "and interval_s"
        )
    zone = _check_timezone(fields.get("timezone"))
    if interval_s is not None:
        if fields.get("timezone") is not None:
            raise ValidationError(
                "timezone applies to cron schedules only; an interval_s schedule "
                "counts seconds from its start_at"
            )
        interval = check.check_optional_duration(
            "interval_s", interval_s, MIN_INTERVAL_S, MAX_INTERVAL_S
        )
        return None, "UTC", interval
    return _check_cron(cron, zone), zone, None


def _check_cron(cron: Any, zone: str) -> str:
    if not isinstance(cron, str) or not 1 <= len(cron) <= MAX_CRON_LENGTH:
        raise ValidationError(
            f"invalid cron expression {echo(cron)}: use a string of at most "
            f"{MAX_CRON_LENGTH} characters such as '0 9 * * 1-5'"
        )
    fields = cron.split()
    if len(fields) != 5:
        raise ValidationError(
            f"invalid cron expression {cron!r}: it has {len(fields)} fields; use five "
            "(minute hour day-of-month month day-of-week), e.g. '*/15 * * * *'; for "
            "periods under a minute use interval_s"
        )
    try:
        CronSim(cron, datetime.now(tz=timezone.utc).astimezone(ZoneInfo(zone)))
    except CronSimError as exc:
        raise ValidationError(_explain_cron_error(cron, fields, str(exc))) from exc
    return " ".join(fields)


def _explain_cron_error(cron: str, fields: list[str], error: str) -> str:
    """Return a message that names the bad field of a five-field expression.

    cronsim (2.9) reports errors as "Bad <field>"; other wording is passed on.
    """
    bad = next((name for name in CRON_FIELD_RULES if error == f"Bad {name}"), None)
    if bad is None:
        return f"invalid cron expression {cron!r}: {error}; e.g. '0 9 * * 1-5'"
    position = list(CRON_FIELD_RULES).index(bad)
    day, month = fields[2], fields[3]
    if bad == "day-of-month" and _is_day_number(day):
        return (
            f"invalid cron expression {cron!r}: the date never occurs, because no "
            f"month in {month!r} has a day {day}; pick a day that exists in those months"
        )
    return (
        f"invalid cron expression {cron!r}: the {bad} field (field {position + 1}) "
        f"{fields[position]!r} is invalid; use {CRON_FIELD_RULES[bad]}, as a single "
        "value, a list (1,15), a range (1-5) or a step (*/15)"
    )


def _is_day_number(field: str) -> bool:
    return field.isdigit() and 1 <= int(field) <= 31


def _check_timezone(zone: Any) -> str:
    if zone is None:
        return "UTC"
    if not isinstance(zone, str) or not 1 <= len(zone) <= MAX_TIMEZONE_LENGTH:
        raise ValidationError(
            f"invalid timezone {echo(zone)}: use an IANA time zone name such as "
            "'Europe/Berlin' or 'UTC'"
        )
    if zone not in iana_zone_names():
        raise ValidationError(
            f"unknown timezone {zone!r}: use a canonical IANA time zone name such as "
            "'Europe/Berlin', 'America/New_York' or 'UTC'"
        )
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            f"timezone {zone!r} has no data on this server: {exc}; install the "
            "tzdata package that Conveyor depends on"
        ) from exc
    return zone


@functools.cache
def iana_zone_names() -> frozenset[str]:
    """Return the time zone names that schedules accept: those the tzdata package lists.

    Names from the host's zoneinfo folder that are no IANA zone (localtime,
    posixrules, right/..., posix/...) are left out, so every server accepts
    the same names. "Factory" is in the list but is no real zone.
    NOTE: zoneinfo still reads a zone's rules from the host's folder when it
    has one, so hosts with older system data than tzdata may disagree on
    recently changed rules.
    """
    listed = importlib.resources.files("tzdata").joinpath("zones").read_text()
    return frozenset(listed.split()) - {"Factory"}


def _check_time(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"invalid {name} {value!r}: expected a Unix time in seconds")
    if not 0 <= value <= 253402300799:
        raise ValidationError(
            f"invalid {name} {value!r}: use a Unix time between 1970 and the year 9999"
        )
    return float(value)


def _check_optional_int(name: str, value: Any, low: int, high: int) -> int | None:
    return None if value is None else check.check_int(name, value, low, high)


def _check_grace(grace_s: Any) -> float:
    if grace_s is None:
        return DEFAULT_GRACE_S
    return check.check_optional_duration("grace_s", grace_s, 0.0, MAX_GRACE_S)


def _check_catch_up(policy: Any) -> str:
    if policy is None:
        return "skip"
    if policy not in CATCH_UP_POLICIES:
        raise ValidationError(
            f"invalid catch_up {policy!r}: use skip (fire no missed tick), once "
            "(fire one message for all of them) or all (fire each, up to catch_up_limit)"
        )
    return policy


def _check_template(fields: dict[str, Any]) -> dict[str, Any]:
    template = {name: fields[name] for name in TEMPLATE_FIELDS if fields.get(name) is not None}
    headers = template.get("headers")
    if headers is not None:
        _check_template_headers(headers)
    try:
        body_bytes = orjson.dumps(template.get("body"))
    except TypeError as exc:
        raise ValidationError(
            f"the schedule's body is not JSON-serialisable ({exc}); use JSON values"
        ) from exc
    if len(body_bytes) > MAX_TEMPLATE_BODY_BYTES:
        raise ValidationError(
            f"the schedule's body has {len(body_bytes)} bytes as JSON; use at most "
            f"{MAX_TEMPLATE_BODY_BYTES}, and keep large data elsewhere with a reference "
            "in the body"
        )
    # The message check of a post covers priority, group, delays and limits.
    try:
        check.prepare(build_message(template, {}), 0)
    except ValidationError as exc:
        raise ValidationError(
            f"invalid schedule message: {exc.detail.removeprefix('message 0: ')}"
        ) from exc
    return template


def _check_template_headers(headers: Any) -> None:
    if not isinstance(headers, dict) or len(headers) > MAX_TEMPLATE_HEADERS:
        raise ValidationError(
            f"the schedule's headers must be an object of at most "
            f"{MAX_TEMPLATE_HEADERS} string entries"
        )
    reserved = sorted(name for name in headers if str(name).lower() in RESERVED_HEADERS)
    if reserved:
        raise ValidationError(
            f"the schedule's headers set {', '.join(map(repr, reserved))}, which every "
            "fired message gets from its schedule; remove them"
        )
