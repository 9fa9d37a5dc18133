"""Schedules declared in code: `@app.periodic` on a task.

A declaration builds the schedule's definition at import time: the task's
message for the given args and kwargs (checked against the signature, as
`enqueue` does) and the timing. `app.sync_schedules()` stores every
declaration with PUT semantics and source "code": an unchanged definition
keeps its next tick and run count, a changed one is updated. `conveyor
worker` syncs the schedules of the queues it serves when it starts.

A schedule removed from code stays stored, and keeps firing, until it is
deleted (`conveyor schedules delete NAME`). Sync logs a WARNING naming
each stored code schedule of the app's queues that the app no longer
declares. It deletes none, because another app or an older worker version
that shares the queue may still declare them.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import ScheduleNotFound, ValidationError
from ..models import Schedule
from ..schedule_input import check_definition, validate_schedule_name
from ..schedule_times import to_iso
from .options import EnqueueOptions, to_timestamp
from .task import Task

if TYPE_CHECKING:
    from .app import Conveyor

logger = logging.getLogger(__name__)

# The stored fields of a schedule that a declaration sets.
COMPARED_FIELDS = (
    "queue", "cron", "timezone", "interval_s", "start_at", "end_at", "max_runs",
    "catch_up", "catch_up_limit", "grace_s", "message",
)
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class PeriodicSchedule:
    """A schedule declared in code: its name, task and definition fields."""

    name: str
    task: Task
    fields: dict[str, Any]


def declare(
    task: Task,
    cron: str | None,
    timezone: str | None,
    every: timedelta | float | None,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    start: Any,
    end: Any,
    max_runs: int | None,
    catch_up: str,
    catch_up_limit: int | None,
    grace: timedelta | float | None,
    name: str | None,
) -> PeriodicSchedule:
    """Build a task's schedule declaration; raise ValidationError for a bad call or timing.

    The definition is checked here with the store's rules (cron syntax,
    time zone, ranges, catch-up policy), so a bad declaration fails at
    import with the task and schedule named. The store checks it again
    when the declaration is synced.
    """
    schedule_name = name or default_name(task)
    where = f"@app.periodic on task {task.name!r} (schedule {schedule_name!r})"
    if (cron is None) == (every is None):
        raise ValidationError(
            f"{where} needs exactly one of cron=... (with an optional timezone=...) "
            "and every=..."
        )
    try:
        validate_schedule_name(schedule_name)
        fields = _definition_fields(
            task, cron, timezone, every, args, kwargs, start, end, max_runs,
            catch_up, catch_up_limit, grace,
        )
        check_definition({**fields, "queue": task.queue}, time.time())
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc.detail}") from exc
    return PeriodicSchedule(schedule_name, task, fields)


def _definition_fields(
    task: Task,
    cron: str | None,
    timezone: str | None,
    every: timedelta | float | None,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    start: Any,
    end: Any,
    max_runs: int | None,
    catch_up: str,
    catch_up_limit: int | None,
    grace: timedelta | float | None,
) -> dict[str, Any]:
    """Return the schedule fields of a declaration, without the unset ones."""
    message = task.build_message(list(args), dict(kwargs or {}), EnqueueOptions())
    fields: dict[str, Any] = {
        "cron": cron,
        "timezone": timezone,
        "interval_s": _to_seconds("every", every),
        "start_at": None if start is None else to_timestamp(start),
        "end_at": None if end is None else to_timestamp(end),
        "max_runs": max_runs,
        "catch_up": catch_up,
        "catch_up_limit": catch_up_limit,
        "grace_s": _to_seconds("grace", grace),
        "body": message.body,
        "priority": message.priority,
        "max_attempts": message.max_attempts,
    }
    return {key: value for key, value in fields.items() if value is not None}


def default_name(task: Task) -> str:
    """Return the schedule name for a task, following the rule in docs/schedules.md.

    A leading "__main__." (a task defined in a script) becomes "main.". Then
    each run of characters other than letters, digits, '_', '.' and '-'
    becomes '-', leading characters other than letters and digits are
    dropped, and the name is cut to 80 characters.
    """
    name = task.name
    if name.startswith("__main__."):
        name = "main." + name.removeprefix("__main__.")
    name = _NOT_IN_NAME.sub("-", name).lstrip("-_.")[:80]
    return name or "periodic"


def sync(app: Conveyor, queues: Sequence[str] | None = None) -> list[Any]:
    """Store the app's declared schedules of `queues` (default: all); return them.

    Creates each task queue that is missing first. Logs a WARNING for
    stored code schedules of those queues that the app no longer declares.
    """
    declared = [
        p for p in app.periodic_schedules.values()
        if queues is None or p.task.queue in queues
    ]
    stored = []
    for periodic in declared:
        app.ensure_queue(periodic.task.queue)
        before = _stored_schedule(app, periodic.name)
        try:
            schedule = app.client.put_schedule(
                periodic.name, periodic.task.queue, source="code", **periodic.fields
            )
        except ValidationError as exc:
            raise ValidationError(
                f"storing schedule {periodic.name!r} of task {periodic.task.name!r} "
                f"failed: {exc.detail}"
            ) from exc
        _log_changes(periodic, before, schedule)
        logger.info(
            "Schedule %s of task %s is stored; next tick at %s",
            schedule.name, periodic.task.name, _format_time(schedule.next_fire_at),
        )
        stored.append(schedule)
    _warn_about_removed(app, declared, queues)
    return stored


def _stored_schedule(app: Conveyor, name: str) -> Schedule | None:
    try:
        return app.client.get_schedule(name)
    except ScheduleNotFound:
        return None


def _log_changes(
    periodic: PeriodicSchedule, before: Schedule | None, after: Schedule
) -> None:
    """Log a WARNING naming the fields a sync changed in a stored schedule."""
    if before is None:
        return
    changed = [
        field for field in COMPARED_FIELDS
        if getattr(before, field) != getattr(after, field)
    ]
    if changed:
        logger.warning(
            "Schedule %s of task %s changed on sync: %s. If another app declares a "
            "schedule of this name, each sync replaces the other's definition; give "
            "one of them another name=...",
            periodic.name, periodic.task.name,
            ", ".join(f"{field} {getattr(before, field)!r} -> {getattr(after, field)!r}"
                      for field in changed),
        )


def _format_time(timestamp: float | None) -> str:
    return "none" if timestamp is None else to_iso(timestamp)


def _warn_about_removed(
    app: Conveyor, declared: list[PeriodicSchedule], queues: Sequence[str] | None
) -> None:
    names = {p.name for p in declared}
    app_queues = set(queues) if queues is not None else set(app.queues())
    for queue in sorted(app_queues):
        for schedule in app.client.list_schedules(queue=queue, source="code", limit=1000):
            if schedule.name not in names and schedule.state != "finished":
                logger.warning(
                    "Schedule %s on queue %s was declared in code but this app no "
                    "longer declares it; it keeps firing until deleted with "
                    "'conveyor schedules delete %s'",
                    schedule.name, queue, schedule.name,
                )


def _to_seconds(argument: str, value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"invalid {argument} {value!r}: pass a timedelta or a number of seconds"
        )
    return float(value)
