"""Queue settings: defaults, validation and the queue name rule."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import ValidationError
from .text import plural

QUEUE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")
DLQ_SUFFIX = ".dlq"

KIB = 1024
MIB = 1024 * KIB
DAY_S = 86_400.0

MAX_MESSAGE_SIZE_LIMIT = 16 * MIB
# The server rejects a request body above this size unless configured.
DEFAULT_MAX_REQUEST_BYTES = 32 * MIB
MAX_DELAY_S = 365 * DAY_S
MAX_RETENTION_S = 3650 * DAY_S
MAX_VISIBILITY_TIMEOUT_S = 12 * 3600.0
MAX_ATTEMPTS_LIMIT = 1000
# Far above what one queue can deliver, so a larger value is more likely a typo.
MAX_RATE_PER_S = 1_000_000.0
MAX_FLOW_COUNT = 1_000_000
MAX_GROUP_IN_FLIGHT = 1000


def format_seconds(value: float) -> str:
    """Return a duration for messages: `30 seconds`, `4 days`, `365 days`."""
    if value >= DAY_S and value % 3600 == 0:
        return plural(value / DAY_S, "day")
    if value >= 3600 and value % 60 == 0:
        return plural(value / 3600, "hour")
    return plural(value, "second")


def validate_queue_name(name: Any) -> str:
    """Return the name, or raise ValidationError naming the rule it breaks."""
    if not isinstance(name, str) or not QUEUE_NAME_RE.fullmatch(name):
        raise ValidationError(
            f"invalid queue name {name!r}: use 1 to 80 letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class BreakerSettings:
    """A queue's circuit breaker: when it opens, how long it waits, how it probes.

    It opens when at least `min_attempts` attempts finished in the last
    `window_s` seconds and the share that failed is `failure_ratio` or
    more. It then delivers nothing for `cooldown_s`, and after that lets
    `probes` messages through. If all of them succeed it closes; if one
    fails it opens again for twice the last cool-down, at most
    `max_cooldown_s`. With `redrive_on_close`, closing starts a redrive job
    at `redrive_rate_per_s` (None: no rate limit of its own) for the
    messages that were dead-lettered since the breaker opened.
    """

    failure_ratio: float = 0.5
    window_s: float = 60.0
    min_attempts: int = 20
    cooldown_s: float = 30.0
    max_cooldown_s: float = 600.0
    probes: int = 3
    redrive_on_close: bool = False
    redrive_rate_per_s: float | None = None


BREAKER_FIELDS = {f.name: f for f in dataclasses.fields(BreakerSettings)}


@dataclass(frozen=True)
class QueueSettings:
    """Settings of one queue; every field has a safe default.

    Durations are in seconds and sizes in bytes.
    """

    type: str = "standard"
    visibility_timeout_s: float = 30.0
    max_attempts: int = 5
    dead_letter_queue: str | None = None
    backoff_base_s: float = 1.0
    backoff_factor: float = 2.0
    backoff_cap_s: float = 300.0
    backoff_jitter: str = "full"
    retention_s: float = 4 * DAY_S
    max_message_size: int = 256 * KIB
    default_delay_s: float = 0.0
    dedup_window_s: float = 300.0
    # Flow control (see docs/flow-control.md). None means no limit.
    rate_limit_per_s: float | None = None
    rate_burst: int | None = None
    max_in_flight: int | None = None
    group_max_in_flight: int = 1
    paused: bool = False
    breaker: BreakerSettings | None = None

    def __post_init__(self) -> None:
        # Stored settings are JSON, so a breaker read back is a dict.
        if isinstance(self.breaker, dict):
            object.__setattr__(self, "breaker", BreakerSettings(**self.breaker))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, changes: dict[str, Any]) -> QueueSettings:
        """Return a copy with the changes applied and validated."""
        return build_settings({**self.to_dict(), **changes})

    @property
    def is_fifo(self) -> bool:
        return self.type == "fifo"

    @property
    def burst(self) -> int:
        """Return the token bucket's size: rate_burst, else the rate rounded up."""
        if self.rate_burst is not None:
            return self.rate_burst
        return max(1, math.ceil(self.rate_limit_per_s or 1.0))


FIELDS = {f.name: f for f in dataclasses.fields(QueueSettings)}


def check_changes(changes: dict[str, Any]) -> None:
    """Validate each changed setting on its own.

    Rules across settings (the backoff cap against its base) are checked
    when the changes are merged with the queue's current settings.
    """
    if not isinstance(changes, dict):
        raise ValidationError(f"settings changes must be an object, got {changes!r}")
    _check_known(changes)
    for key, value in changes.items():
        _check_field(key, value)


def _check_known(values: dict[str, Any]) -> None:
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValidationError(
            f"unknown queue setting {unknown[0]!r}; "
            f"known settings are: {', '.join(FIELDS)}"
        )


def build_settings(values: dict[str, Any] | None) -> QueueSettings:
    """Validate a mapping of settings and return the QueueSettings.

    Raises ValidationError for an unknown key or a value out of range, so a
    bad setting is rejected before anything is stored.
    """
    values = dict(values or {})
    _check_known(values)
    for key, value in values.items():
        values[key] = _check_field(key, value)

    settings = QueueSettings(**values)
    if settings.backoff_cap_s < settings.backoff_base_s:
        raise ValidationError(
            f"backoff_cap_s={settings.backoff_cap_s} is below "
            f"backoff_base_s={settings.backoff_base_s}; raise the cap"
        )
    if settings.group_max_in_flight != 1 and not settings.is_fifo:
        raise ValidationError(
            f"group_max_in_flight={settings.group_max_in_flight} needs a fifo "
            "queue, because only fifo queues have groups; leave it at 1 or "
            "use max_in_flight to limit the whole queue"
        )
    if settings.rate_burst is not None and settings.rate_limit_per_s is None:
        raise ValidationError(
            f"rate_burst={settings.rate_burst} needs rate_limit_per_s, because "
            "the burst is the size of the rate's token bucket; set "
            "rate_limit_per_s too, or leave rate_burst unset"
        )
    return settings


def merge_settings(current: dict[str, Any], changes: dict[str, Any]) -> QueueSettings:
    """Apply validated changes to a queue's stored settings.

    A change that clears rate_limit_per_s also clears rate_burst unless it
    sets one, because the burst is the size of the rate's token bucket. A
    DLQ name set to null keeps the current one.
    """
    merged = {**current, **changes}
    if changes.get("rate_limit_per_s", 0) is None and "rate_burst" not in changes:
        merged["rate_burst"] = None
    if merged.get("dead_letter_queue") is None:
        merged["dead_letter_queue"] = current.get("dead_letter_queue")
    return build_settings(merged)


def _check_field(key: str, value: Any) -> Any:
    if key == "type":
        return _check_choice(key, value, ("standard", "fifo"))
    if key == "backoff_jitter":
        return _check_choice(key, value, ("full", "none"))
    if key == "dead_letter_queue":
        return None if value is None else validate_queue_name(value)
    if key == "max_attempts":
        return _check_int(key, value, 1, MAX_ATTEMPTS_LIMIT)
    if key == "max_message_size":
        return _check_int(key, value, 1, MAX_MESSAGE_SIZE_LIMIT)
    if key == "rate_limit_per_s":
        return None if value is None else check_rate(key, value)
    if key in ("rate_burst", "max_in_flight"):
        return None if value is None else _check_int(key, value, 1, MAX_FLOW_COUNT)
    if key == "group_max_in_flight":
        return _check_int(key, value, 1, MAX_GROUP_IN_FLIGHT)
    if key == "paused":
        return _check_bool(key, value)
    if key == "breaker":
        return None if value is None else build_breaker(value)
    if key == "backoff_factor":
        return _check_number(key, value, 1.0, 100.0)
    return _check_number(key, value, *_DURATION_RANGES[key])


_DURATION_RANGES = {
    "visibility_timeout_s": (0.1, MAX_VISIBILITY_TIMEOUT_S),
    "backoff_base_s": (0.0, 86_400.0),
    "backoff_cap_s": (0.0, 7 * DAY_S),
    "retention_s": (60.0, MAX_RETENTION_S),
    "default_delay_s": (0.0, MAX_DELAY_S),
    "dedup_window_s": (0.0, 7 * DAY_S),
}


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValidationError(
            f"invalid {key} {value!r}: use one of {', '.join(choices)}"
        )
    return value


def _check_int(key: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"invalid {key} {value!r}: expected an integer")
    if not low <= value <= high:
        raise ValidationError(
            f"invalid {key} {value!r}: use a value from {low:,} to {high:,}"
        )
    return value


def _check_number(key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"invalid {key} {value!r}: expected a number")
    if not low <= value <= high or value != value:
        allowed = (
            f"{low:g} to {high:g}"
            if key == "backoff_factor"
            else f"{format_seconds(low)} to {format_seconds(high)}"
        )
        raise ValidationError(f"invalid {key} {value!r}: use a value from {allowed}")
    return float(value)


def build_breaker(values: Any) -> BreakerSettings:
    """Validate a breaker object; omitted fields get their defaults.

    Raises ValidationError naming the field as `breaker.FIELD`.
    """
    if isinstance(values, BreakerSettings):
        values = dataclasses.asdict(values)
    if not isinstance(values, dict):
        raise ValidationError(
            f"invalid breaker {values!r}: expected an object such as "
            '{"failure_ratio": 0.5}, or null for no breaker'
        )
    unknown = sorted(set(values) - set(BREAKER_FIELDS))
    if unknown:
        raise ValidationError(
            f"unknown breaker setting {unknown[0]!r}; "
            f"known breaker settings are: {', '.join(BREAKER_FIELDS)}"
        )
    checked = {key: _check_breaker_field(key, value) for key, value in values.items()}
    breaker = BreakerSettings(**checked)
    if breaker.max_cooldown_s < breaker.cooldown_s:
        raise ValidationError(
            f"breaker.max_cooldown_s={breaker.max_cooldown_s:g} is below "
            f"breaker.cooldown_s={breaker.cooldown_s:g}; raise max_cooldown_s"
        )
    return breaker


def _check_breaker_field(key: str, value: Any) -> Any:
    name = f"breaker.{key}"
    if key == "failure_ratio":
        return _check_ratio(name, value)
    if key in ("min_attempts", "probes"):
        return _check_int(name, value, 1, MAX_FLOW_COUNT)
    if key == "redrive_on_close":
        return _check_bool(name, value)
    if key == "redrive_rate_per_s":
        return None if value is None else check_rate(name, value)
    return _check_number(name, value, *_BREAKER_DURATION_RANGES[key])


_BREAKER_DURATION_RANGES = {
    "window_s": (1.0, DAY_S),
    "cooldown_s": (0.1, DAY_S),
    "max_cooldown_s": (0.1, 7 * DAY_S),
}


def _check_ratio(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"invalid {key} {value!r}: expected a number above 0 up to 1")
    if not 0 < value <= 1:
        raise ValidationError(
            f"invalid {key} {value!r}: use a share of failed attempts above 0 "
            "and up to 1, such as 0.5"
        )
    return float(value)


def _check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"invalid {key} {value!r}: expected true or false")
    return value


def check_rate(key: str, value: Any) -> float:
    """Return a rate in deliveries per second: above 0, up to MAX_RATE_PER_S."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"invalid {key} {value!r}: expected a number of deliveries per second, "
            "or null for no limit"
        )
    if not 0 < value <= MAX_RATE_PER_S:
        raise ValidationError(
            f"invalid {key} {value!r}: use a number above 0 and up to "
            f"{MAX_RATE_PER_S:,.0f} deliveries per second, or null for no limit"
        )
    return float(value)


def dlq_name_for(name: str) -> str:
    """Return the default dead-letter queue name of a queue."""
    return name[: 80 - len(DLQ_SUFFIX)] + DLQ_SUFFIX
