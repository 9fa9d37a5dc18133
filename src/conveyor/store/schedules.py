"""Schedules, stored and fired the same way by both stores.

A scheduler step fires one due schedule in one transaction. It re-reads
the schedule, on PostgreSQL with a row lock that other servers skip, and
decides which ticks fire (schedule_times.plan_ticks). It records each tick
in `schedule_ticks`, posts its message through the store's post path, and
advances `next_fire_at`, `last_fire_at` and `run_count`. The primary key
(schedule, tick_ms) of `schedule_ticks` lets a tick fire once even if two
transactions planned it: the second insert does nothing and posts nothing.

Each function takes the transaction's `execute(query, params)` and the
store's module of schedule statements, as `redrive_jobs` does.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from types import ModuleType
from typing import Any, Callable

import orjson

from ..errors import (
    ConveyorError,
    ScheduleAlreadyExists,
    ScheduleNotFound,
    ValidationError,
)
from ..models import NewMessage, PostResult, Schedule
from ..policy import PreparedMessage
from ..schedule_input import (
    MISSED_HEADER,
    SCHEDULE_HEADER,
    TICK_HEADER,
    ScheduleSpec,
    build_message,
    check_definition,
)
from ..schedule_times import FIRE_SLACK_S, FirePlan, PlannedTick, plan_ticks, to_iso
from ..validation import prepare
from .schedule_post_errors import POST_ERRORS

logger = logging.getLogger(__name__)

Execute = Callable[[str, Any], Any]
# Posts messages to a queue at a time in the caller's transaction, through
# the store's normal post path. It raises QueueNotFound or ValidationError
# before it writes anything.
PostMessages = Callable[[str, list[NewMessage], float], list[PostResult]]
# Checks, without writing, that the queue exists and accepts the message.
CheckQueue = Callable[[str, NewMessage], None]

# How many upcoming ticks a read lists.
NEXT_FIRE_TIMES = 5
# Ticks are kept this long after they fired; each schedule's latest stays.
TICK_RETENTION_S = 7 * 86_400.0


def prepare_all(messages: list[NewMessage]) -> list[PreparedMessage]:
    """Validate messages and encode them for storage, as a post request is."""
    return [prepare(message, index) for index, message in enumerate(messages)]


def create_schedule(
    execute: Execute,
    sql: ModuleType,
    name: str,
    spec: ScheduleSpec,
    source: str,
    paused: bool,
    now: float,
    check_queue: CheckQueue,
) -> Schedule:
    """Store a new schedule, or raise ScheduleAlreadyExists."""
    _check_target_queue(check_queue, spec)
    next_fire_at = spec.timing.next_after(now - 0.001)
    inserted = execute(sql.INSERT_SCHEDULE, (
        name, spec.queue, spec.cron, spec.timezone, spec.interval_s, spec.start_at,
        spec.end_at, spec.max_runs, spec.catch_up, spec.catch_up_limit,
        _dump(spec.template), source, paused, 0, None, next_fire_at, None, now, now,
        spec.grace_s,
    ))
    if not inserted.rowcount:
        raise ScheduleAlreadyExists(
            f"schedule {name!r} exists already; change it with 'conveyor schedules "
            f"update {name}' (PATCH /v1/schedules/{name}), delete it first, or pick "
            "another name"
        )
    logger.info(
        "Schedule %s created (%s) posting to queue %s; next tick at %s",
        name, _describe(spec), spec.queue, _format(next_fire_at),
    )
    return get_schedule(execute, sql, name)


def put_schedule(
    execute: Execute,
    sql: ModuleType,
    name: str,
    fields: dict[str, Any],
    source: str,
    now: float,
    check_queue: CheckQueue,
) -> tuple[Schedule, str]:
    """Create a schedule or replace its definition; return it and what happened.

    What happened is "created", "updated" or "unchanged". An unchanged
    definition keeps its next tick and run count. A changed one keeps its
    run count and pause state, and its next tick is recomputed from `now`.
    Without `start_at`, an existing schedule keeps its stored start.
    """
    row = execute(sql.SELECT_SCHEDULE_LOCKED, (name,)).fetchone()
    if row is None:
        spec = check_definition(fields, now)
        try:
            created = create_schedule(
                execute, sql, name, spec, source, False, now, check_queue
            )
            return created, "created"
        except ScheduleAlreadyExists:
            # Another transaction created it since the select, e.g. a second
            # worker of the same app starting at the same moment.
            row = execute(sql.SELECT_SCHEDULE_LOCKED, (name,)).fetchone()
    current = schedule_from_row(row)
    if source == "code" and current.source == "api":
        raise ScheduleAlreadyExists(
            f"schedule {name!r} was created through the API or CLI, so code may not "
            f"replace it; give the @app.periodic declaration another name=..., or "
            f"delete the stored schedule first with 'conveyor schedules delete {name}'"
        )
    if fields.get("start_at") is None:
        fields = {**fields, "start_at": current.start_at}
    spec = check_definition(fields, now)
    if spec == _spec_of(current) and source == current.source:
        return current, "unchanged"
    return _replace_definition(execute, sql, current, spec, source, now, check_queue), "updated"


def _check_target_queue(check_queue: CheckQueue, spec: ScheduleSpec) -> None:
    """Check that the queue accepts the template, with schedule words in group errors."""
    try:
        check_queue(spec.queue, build_message(spec.template, {}))
    except ValidationError as exc:
        if spec.template.get("group") is None and "has no group" in exc.detail:
            raise ValidationError(
                f"queue {spec.queue!r} is a fifo queue, so the schedule needs a group "
                "for its messages; set group (--group in the CLI)"
            ) from exc
        if spec.template.get("group") is not None and "standard queue" in exc.detail:
            raise ValidationError(
                f"queue {spec.queue!r} is a standard queue, so the schedule may not "
                "set a group; remove group (--group in the CLI), or post to a fifo queue"
            ) from exc
        raise


def update_schedule(
    execute: Execute,
    sql: ModuleType,
    name: str,
    changes: dict[str, Any],
    now: float,
    check_queue: CheckQueue,
) -> Schedule:
    """Apply a partial change to a definition; a None value clears an optional field.

    Setting `cron` clears `interval_s` and the other way round. The next
    tick is recomputed from `now`; the run count stays.
    """
    current = get_schedule(execute, sql, name, locked=True)
    fields = _spec_of(current).to_fields()
    if "cron" in changes and changes["cron"] is not None:
        fields["interval_s"] = None
    if "interval_s" in changes and changes["interval_s"] is not None:
        fields["cron"] = None
        fields["timezone"] = None
    if fields.get("interval_s") is not None:
        fields["timezone"] = None
    fields.update(changes)
    spec = check_definition(fields, now)
    return _replace_definition(execute, sql, current, spec, current.source, now, check_queue)


def _replace_definition(
    execute: Execute,
    sql: ModuleType,
    current: Schedule,
    spec: ScheduleSpec,
    source: str,
    now: float,
    check_queue: CheckQueue,
) -> Schedule:
    _check_target_queue(check_queue, spec)
    next_fire_at = spec.timing.next_after(now - 0.001)
    if spec.max_runs is not None and current.run_count >= spec.max_runs:
        next_fire_at = None
    execute(sql.UPDATE_DEFINITION, (
        spec.queue, spec.cron, spec.timezone, spec.interval_s, spec.start_at,
        spec.end_at, spec.max_runs, spec.catch_up, spec.catch_up_limit, spec.grace_s,
        _dump(spec.template), source, next_fire_at, now, current.name,
    ))
    logger.info(
        "Schedule %s changed (%s) posting to queue %s; changed fields: %s; next tick at %s",
        current.name, _describe(spec), spec.queue,
        ", ".join(changed_fields(_spec_of(current), spec)) or "source",
        _format(next_fire_at),
    )
    return get_schedule(execute, sql, current.name)


def get_schedule(
    execute: Execute, sql: ModuleType, name: str, locked: bool = False
) -> Schedule:
    """Return a schedule, or raise ScheduleNotFound.

    With `locked`, the PostgreSQL statement locks the schedule's row.
    """
    query = sql.SELECT_SCHEDULE_LOCKED if locked else sql.SELECT_SCHEDULE
    row = execute(query, (name,)).fetchone()
    if row is None:
        raise ScheduleNotFound(
            f"no schedule named {name!r} is stored; list schedules with "
            "'conveyor schedules list' or GET /v1/schedules"
        )
    return schedule_from_row(row)


def list_schedules(
    execute: Execute,
    sql: ModuleType,
    queue: str | None,
    source: str | None,
    limit: int,
    after: str | None = None,
) -> list[Schedule]:
    """Return schedules by name, optionally of one queue or one source, after a name."""
    params = (queue, queue, source, source, after, after, limit)
    rows = execute(sql.SELECT_SCHEDULES, params).fetchall()
    return [schedule_from_row(row) for row in rows]


def set_paused(
    execute: Execute,
    sql: ModuleType,
    name: str,
    paused: bool,
    now: float,
    post: PostMessages,
) -> Schedule:
    """Pause or resume a schedule.

    Resuming applies the catch-up policy at once, in the same transaction:
    every tick that passed while the schedule was paused is missed, even
    one within the grace period, and a tick due exactly at `now` is on
    time. So the returned schedule's `next_fire_at` is the real next tick.
    """
    get_schedule(execute, sql, name, locked=True)
    current = schedule_from_row(
        execute(sql.SELECT_SCHEDULE_LOCKED, (name,)).fetchone(), as_stored=True
    )
    if current.paused == paused:
        return get_schedule(execute, sql, name)
    execute(sql.UPDATE_PAUSED, (paused, now, name))
    logger.info("Schedule %s %s", name, "paused" if paused else "resumed")
    if not paused and current.next_fire_at is not None:
        _fire_due_ticks(execute, sql, current, now, post, 0.0, "while paused")
    return get_schedule(execute, sql, name)


def delete_schedule(execute: Execute, sql: ModuleType, name: str) -> None:
    """Delete a schedule and its recorded ticks; messages it posted stay."""
    get_schedule(execute, sql, name, locked=True)
    execute(sql.DELETE_SCHEDULE_TICKS, (name,))
    execute(sql.DELETE_SCHEDULE, (name,))
    logger.info("Schedule %s deleted", name)


def due_names(execute: Execute, sql: ModuleType, now: float, limit: int) -> list[str]:
    """Return the names of up to `limit` due schedules, the longest due first."""
    return [row[0] for row in execute(sql.SELECT_DUE_NAMES, (now, limit)).fetchall()]


def next_due_at(execute: Execute, sql: ModuleType) -> float | None:
    """Return the earliest next tick of any active schedule, or None."""
    return execute(sql.SELECT_NEXT_DUE, ()).fetchone()[0]


def fire_schedule(
    execute: Execute, sql: ModuleType, name: str, now: float, post: PostMessages
) -> int:
    """Fire a schedule's due ticks and advance it; return how many messages it posted.

    A schedule that is no longer due, or that another transaction holds,
    is left alone and 0 is returned.
    """
    row = execute(sql.SELECT_DUE_SCHEDULE, (name, now)).fetchone()
    if row is None:
        return 0
    schedule = schedule_from_row(row)
    return _fire_due_ticks(
        execute, sql, schedule, now, post, schedule.grace_s + FIRE_SLACK_S,
        "while no server fired it",
    )


def _fire_due_ticks(
    execute: Execute,
    sql: ModuleType,
    schedule: Schedule,
    now: float,
    post: PostMessages,
    grace_s: float,
    missed_because: str,
) -> int:
    """Fire the ticks that `plan_ticks` picks at `now`, advance the schedule, return the posts.

    `missed_because` ends the WARNING about missed ticks, e.g. "while paused".
    """
    spec = _spec_of(schedule)
    runs_left = None if spec.max_runs is None else spec.max_runs - schedule.run_count
    plan = plan_ticks(
        spec.timing, schedule.next_fire_at, now, spec.catch_up, spec.catch_up_limit,
        runs_left, grace_s,
    )
    if plan.skipped:
        _log_missed(schedule.name, plan, spec.catch_up, missed_because)
    if plan.coalesced:
        logger.info(
            "Schedule %s had %s on time in one step; catch-up policy %s fires "
            "only the newest", schedule.name, _count(plan.coalesced + 1, "tick"),
            spec.catch_up,
        )

    posted = 0
    last_error = schedule.last_error
    for tick in plan.fire:
        error = _fire_tick(execute, sql, schedule, tick, now, post)
        if error is None:
            posted += 1
            last_error = None
        else:
            last_error = error

    last_fire_at = plan.fire[-1].at if plan.fire else schedule.last_fire_at
    execute(sql.UPDATE_FIRED, (
        schedule.run_count + posted, last_fire_at, plan.next_fire_at, last_error,
        schedule.name,
    ))
    if plan.next_fire_at is None:
        logger.info(
            "Schedule %s finished after %d runs: no tick is left before its end or "
            "its max_runs", schedule.name, schedule.run_count + posted,
        )
    return posted


def _log_missed(name: str, plan: FirePlan, catch_up: str, missed_because: str) -> None:
    missed = plan.skipped + sum(tick.missed for tick in plan.fire)
    fired = sum(1 for tick in plan.fire if tick.missed)
    logger.warning(
        "Schedule %s missed %s %s; catch-up policy %s fires %d of them",
        name, _count(missed, "tick"), missed_because, catch_up, fired,
    )


def _count(number: int, noun: str) -> str:
    """Return e.g. "1 tick" or "3 ticks"."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _fire_tick(
    execute: Execute,
    sql: ModuleType,
    schedule: Schedule,
    tick: PlannedTick,
    now: float,
    post: PostMessages,
) -> str | None:
    """Record a tick and post its message; return why nothing was posted, or None."""
    tick_ms = round(tick.at * 1000)
    inserted = execute(sql.INSERT_TICK, (schedule.name, tick_ms, now, None, tick.missed))
    if not inserted.rowcount:
        logger.warning(
            "Schedule %s tick %s was fired already; not posting it again",
            schedule.name, to_iso(tick.at),
        )
        return f"tick {to_iso(tick.at)} was fired already"
    headers = {SCHEDULE_HEADER: schedule.name, TICK_HEADER: to_iso(tick.at)}
    if tick.missed:
        headers[MISSED_HEADER] = str(tick.missed)
    try:
        result = post(schedule.queue, [build_message(schedule.message, headers)], now)[0]
    except ConveyorError as exc:
        POST_ERRORS.failed(schedule.name, schedule.queue, tick.at, str(exc), now)
        return f"tick {to_iso(tick.at)} posted nothing: {exc}"
    POST_ERRORS.posted(schedule.name)
    execute(sql.SET_TICK_MESSAGE, (result.id, schedule.name, tick_ms))
    logger.debug(
        "Schedule %s fired tick %s: message %s in queue %s",
        schedule.name, to_iso(tick.at), result.id, schedule.queue,
    )
    return None


def list_ticks(
    execute: Execute, sql: ModuleType, name: str, limit: int
) -> list[dict[str, Any]]:
    """Return a schedule's recorded ticks, newest first."""
    rows = execute(sql.SELECT_TICKS, (name, limit)).fetchall()
    return [
        {"tick_at": row[0] / 1000, "fired_at": row[1], "message_id": row[2], "missed": row[3]}
        for row in rows
    ]


def prune_ticks(execute: Execute, sql: ModuleType, now: float) -> int:
    """Delete ticks older than TICK_RETENTION_S, keeping each schedule's latest."""
    return execute(sql.PRUNE_TICKS, (now - TICK_RETENTION_S,)).rowcount


def schedule_from_row(row: tuple, as_stored: bool = False) -> Schedule:
    """Build a schedule from a row of SCHEDULE_COLUMNS, with its next few ticks.

    A paused schedule has no next tick until it is resumed, so it shows
    `next_fire_at` None and no `next_fire_times`. With `as_stored`, it keeps
    the stored `next_fire_at`, because resuming counts the missed ticks from it.
    """
    schedule = Schedule(
        name=row[0],
        queue=row[1],
        cron=row[2],
        timezone=row[3],
        interval_s=row[4],
        start_at=row[5],
        end_at=row[6],
        max_runs=row[7],
        catch_up=row[8],
        catch_up_limit=row[9],
        grace_s=row[19],
        message=orjson.loads(row[10]),
        source=row[11],
        paused=bool(row[12]),
        state="active",
        run_count=row[13],
        last_fire_at=row[14],
        next_fire_at=row[15],
        last_error=row[16],
        created_at=row[17],
        updated_at=row[18],
    )
    if schedule.next_fire_at is None:
        schedule.state = "finished"
    elif schedule.paused:
        schedule.state = "paused"
        if not as_stored:
            schedule.next_fire_at = None
    schedule.next_fire_times = _next_fire_times(schedule)
    return schedule


def _next_fire_times(schedule: Schedule) -> list[float]:
    if schedule.next_fire_at is None:
        return []
    count = NEXT_FIRE_TIMES
    if schedule.max_runs is not None:
        count = min(count, schedule.max_runs - schedule.run_count)
    times = [schedule.next_fire_at]
    for tick in _spec_of(schedule).timing.ticks_after(schedule.next_fire_at):
        if len(times) >= count:
            break
        times.append(tick)
    return times[:max(count, 0)]


def _spec_of(schedule: Schedule) -> ScheduleSpec:
    return ScheduleSpec(
        queue=schedule.queue,
        cron=schedule.cron,
        timezone=schedule.timezone,
        interval_s=schedule.interval_s,
        start_at=schedule.start_at,
        end_at=schedule.end_at,
        max_runs=schedule.max_runs,
        catch_up=schedule.catch_up,
        catch_up_limit=schedule.catch_up_limit,
        grace_s=schedule.grace_s,
        template=schedule.message,
    )


def changed_fields(old: ScheduleSpec, new: ScheduleSpec) -> list[str]:
    """Return the names of the definition fields that differ, in DEFINITION_FIELDS order."""
    old_fields, new_fields = old.to_fields(), new.to_fields()
    return [name for name in old_fields if old_fields[name] != new_fields[name]]


def _describe(spec: ScheduleSpec) -> str:
    if spec.cron is not None:
        return f"cron {spec.cron!r} in {spec.timezone}"
    return f"every {spec.interval_s:g} s from {to_iso(spec.start_at)}"


def _format(timestamp: float | None) -> str:
    return "none" if timestamp is None else to_iso(timestamp)


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()



class ScheduleTransaction:
    """The parts of a store's write transaction that schedule operations use."""

    __slots__ = ("execute", "post", "check_queue")

    def __init__(self, execute: Execute, post: PostMessages, check_queue: CheckQueue) -> None:
        self.execute = execute
        self.post = post
        self.check_queue = check_queue


Write = Callable[[Callable[[ScheduleTransaction], Any]], Future]
Read = Callable[[Callable[[Execute], Any]], Any]


class ScheduleStore:
    """A store's schedule operations: each write is one transaction, returning a future.

    `write` runs an operation in the store's write transaction; `read`
    runs one on a read connection. Both stores build one of these over
    their own statement module, so the rules above live in one place.
    """

    def __init__(self, sql: ModuleType, write: Write, read: Read) -> None:
        self._sql = sql
        self._write = write
        self._read = read

    def create(
        self, name: str, spec: ScheduleSpec, source: str, paused: bool, now: float
    ) -> Future:
        return self._write(lambda tx: create_schedule(
            tx.execute, self._sql, name, spec, source, paused, now, tx.check_queue
        ))

    def put(self, name: str, fields: dict[str, Any], source: str, now: float) -> Future:
        return self._write(lambda tx: put_schedule(
            tx.execute, self._sql, name, fields, source, now, tx.check_queue
        ))

    def update(self, name: str, changes: dict[str, Any], now: float) -> Future:
        return self._write(lambda tx: update_schedule(
            tx.execute, self._sql, name, changes, now, tx.check_queue
        ))

    def set_paused(self, name: str, paused: bool, now: float) -> Future:
        return self._write(
            lambda tx: set_paused(tx.execute, self._sql, name, paused, now, tx.post)
        )

    def delete(self, name: str) -> Future:
        return self._write(lambda tx: delete_schedule(tx.execute, self._sql, name))

    def fire(self, name: str, now: float) -> Future:
        return self._write(lambda tx: fire_schedule(tx.execute, self._sql, name, now, tx.post))

    def prune_ticks(self, now: float) -> Future:
        return self._write(lambda tx: prune_ticks(tx.execute, self._sql, now))

    def get(self, name: str) -> Schedule:
        return self._read(lambda execute: get_schedule(execute, self._sql, name))

    def list(
        self, queue: str | None, source: str | None, limit: int, after: str | None = None
    ) -> list[Schedule]:
        return self._read(
            lambda execute: list_schedules(execute, self._sql, queue, source, limit, after)
        )

    def due_names(self, now: float, limit: int) -> list[str]:
        return self._read(lambda execute: due_names(execute, self._sql, now, limit))

    def next_due_at(self) -> float | None:
        return self._read(lambda execute: next_due_at(execute, self._sql))

    def ticks(self, name: str, limit: int) -> list[dict[str, Any]]:
        return self._read(lambda execute: list_ticks(execute, self._sql, name, limit))
