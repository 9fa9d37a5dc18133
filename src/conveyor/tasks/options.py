"""Task definition options and per-call enqueue options, checked when set.

Definition errors (a bad queue name, an option out of range) raise
ValidationError at decoration time, so a broken task never reaches a queue.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .. import validation as check
from ..errors import ValidationError
from ..policy import retry_delay_s
from ..settings import (
    MAX_ATTEMPTS_LIMIT,
    MAX_DELAY_S,
    MAX_RETENTION_S,
    QueueSettings,
    build_settings,
)

DEFAULT_RESULT_TTL_S = 86_400.0
# A batch task gets at most this many items per call, one message each.
MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_WAIT_S = 1.0
# Items wait leased while a batch fills, so the wait stays short.
MAX_BATCH_WAIT_S = 60.0


@dataclass(frozen=True)
class Backoff:
    """Retry delays of one task: `min(cap_s, base_s * factor**(attempt-1))`.

    With `jitter` (the default) each delay is drawn uniformly between 0 and
    that value, like the queue's own backoff. Durations are in seconds.
    """

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0
    jitter: bool = True

    def delay_s(self, attempt: int) -> float:
        """Return the delay before retrying after failed attempt `attempt` (1-based)."""
        return retry_delay_s(self._settings(), attempt)

    def _settings(self) -> QueueSettings:
        return build_settings(
            {
                "backoff_base_s": self.base_s,
                "backoff_factor": self.factor,
                "backoff_cap_s": self.cap_s,
                "backoff_jitter": "full" if self.jitter else "none",
            }
        )


def build_backoff(task_name: str, value: Any) -> Backoff | None:
    """Return a validated Backoff from a Backoff, a dict of its fields, or None."""
    if value is None:
        return None
    if isinstance(value, dict):
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(Backoff)})
        if unknown:
            raise ValidationError(
                f"invalid backoff for task {task_name!r}: unknown key {unknown[0]!r}; "
                "use base_s, factor, cap_s and jitter"
            )
        value = Backoff(**value)
    if not isinstance(value, Backoff):
        raise ValidationError(
            f"invalid backoff {value!r} for task {task_name!r}: pass a "
            "conveyor.Backoff or a dict with base_s, factor and cap_s"
        )
    try:
        value._settings()
    except ValidationError as exc:
        raise ValidationError(f"invalid backoff for task {task_name!r}: {exc.detail}") from exc
    return value


def check_max_attempts(task_name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"invalid max_attempts {value!r} for task {task_name!r}: expected an integer"
        )
    if not 1 <= value <= MAX_ATTEMPTS_LIMIT:
        raise ValidationError(
            f"invalid max_attempts {value!r} for task {task_name!r}: "
            f"use 1 to {MAX_ATTEMPTS_LIMIT}"
        )
    return value


def check_timeout_s(task_name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"invalid timeout_s {value!r} for task {task_name!r}: expected seconds"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(
            f"invalid timeout_s {value!r} for task {task_name!r}: use a positive "
            "number of seconds, or None for no timeout"
        )
    return float(value)


def check_hard_timeout_s(task_name: str, value: Any, timeout_s: float | None) -> float | None:
    """Check a hard timeout: positive seconds, and longer than the soft timeout_s if set."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"invalid hard_timeout_s {value!r} for task {task_name!r}: expected seconds"
        )
    if not math.isfinite(value) or value <= 0:
        raise ValidationError(
            f"invalid hard_timeout_s {value!r} for task {task_name!r}: use a positive "
            "number of seconds, or None for no hard timeout"
        )
    if timeout_s is not None and value <= timeout_s:
        raise ValidationError(
            f"invalid hard_timeout_s {value!r} for task {task_name!r}: it must be "
            f"longer than timeout_s ({timeout_s:g} s), so that the task gets the "
            "soft timeout first and can clean up"
        )
    return float(value)


def check_batch_size(task_name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH_SIZE:
        raise ValidationError(
            f"invalid batch_size {value!r} for task {task_name!r}: use an integer "
            f"from 1 to {MAX_BATCH_SIZE}, or None for a task that takes one call at a time"
        )
    return value


def check_batch_wait_s(task_name: str, value: Any, batch_size: int | None) -> float:
    """Check how long a batch may wait to fill; only batch tasks may set it."""
    if value is None:
        return DEFAULT_BATCH_WAIT_S
    if batch_size is None:
        raise ValidationError(
            f"batch_wait_s {value!r} for task {task_name!r} needs batch_size; set "
            "batch_size to make it a batch task, or drop batch_wait_s"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"invalid batch_wait_s {value!r} for task {task_name!r}: expected seconds"
        )
    if not 0 <= value <= MAX_BATCH_WAIT_S:
        raise ValidationError(
            f"invalid batch_wait_s {value!r} for task {task_name!r}: use 0 to "
            f"{MAX_BATCH_WAIT_S:g} seconds"
        )
    return float(value)


def check_result_ttl_s(task_name: str, value: Any) -> float:
    try:
        ttl = check.check_optional_duration("result_ttl_s", value, 0.0, check.MAX_RESULT_TTL_S)
    except ValidationError as exc:
        raise ValidationError(f"{exc.detail} (task {task_name!r}); use 0 to keep no result") from exc
    if ttl is None:
        raise ValidationError(
            f"invalid result_ttl_s None for task {task_name!r}: use 0 to keep no result"
        )
    return ttl


def check_permanent_errors(task_name: str, value: Any) -> tuple[type[BaseException], ...]:
    errors = (value,) if isinstance(value, type) else tuple(value or ())
    for item in errors:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ValidationError(
                f"invalid permanent_errors entry {item!r} for task {task_name!r}: "
                "list exception classes, for example (ValueError, KeyError)"
            )
    return errors


def check_priority(value: Any) -> int:
    return check.check_int("priority", value, -check.MAX_PRIORITY, check.MAX_PRIORITY)


def check_option_names(where: str, options: dict[str, Any], known: tuple[str, ...]) -> None:
    """Raise ValidationError naming an unknown keyword option and the known ones."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValidationError(
            f"unknown option {unknown[0]!r} for {where}; known options are: "
            f"{', '.join(known)}"
        )


@dataclass(frozen=True)
class EnqueueOptions:
    """Per-call message options; None leaves the task's or queue's default.

    `delay_s` and `not_before` (Unix seconds) exclude each other, and so do
    `dedup_id` and `idempotency_key`. `group` is required on FIFO queues and
    rejected on standard ones.
    """

    priority: int | None = None
    dedup_id: str | None = None
    idempotency_key: str | None = None
    delay_s: float | None = None
    not_before: float | None = None
    group: str | None = None
    headers: dict[str, str] | None = None
    max_attempts: int | None = None
    retention_s: float | None = None

    def __post_init__(self) -> None:
        if self.priority is not None:
            check_priority(self.priority)
        check.check_key("dedup_id", self.dedup_id)
        check.check_key("idempotency_key", self.idempotency_key)
        if self.dedup_id is not None and self.idempotency_key is not None:
            raise ValidationError("set dedup_id or idempotency_key, not both")
        check.check_key("group", self.group)
        check.check_optional_duration("delay_s", self.delay_s, 0.0, MAX_DELAY_S)
        check.check_optional_duration("retention_s", self.retention_s, 60.0, MAX_RETENTION_S)
        if self.not_before is not None:
            to_timestamp(self.not_before)
        if self.delay_s is not None and self.not_before is not None:
            raise ValidationError("set delay_s or not_before, not both")
        if self.max_attempts is not None:
            check.check_int("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS_LIMIT)

    def replace(self, **changes: Any) -> EnqueueOptions:
        return dataclasses.replace(self, **changes)


def to_timestamp(when: Any) -> float:
    """Return Unix seconds for an aware datetime or a number of Unix seconds.

    A naive datetime raises ValidationError, because its time zone would be a
    guess.
    """
    if isinstance(when, datetime):
        if when.tzinfo is None or when.utcoffset() is None:
            raise ValidationError(
                f"naive datetime {when.isoformat()} has no time zone; pass an aware "
                "datetime such as datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
        return when.timestamp()
    if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
        raise ValidationError(
            f"invalid time {when!r}: pass an aware datetime or Unix seconds"
        )
    return float(when)


def to_delay_s(delay: Any) -> float:
    """Return seconds for a timedelta or a number of seconds (0 up to a year)."""
    if isinstance(delay, timedelta):
        delay = delay.total_seconds()
    seconds = check.check_optional_duration("delay", delay, 0.0, MAX_DELAY_S)
    if seconds is None:
        raise ValidationError("invalid delay None: pass a timedelta or seconds")
    return seconds


ENQUEUE_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(EnqueueOptions))
