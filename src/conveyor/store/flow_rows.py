"""Flow-control rows, read and written the same way by both stores.

Each function takes the transaction's `execute(query, params)` and the
store's module of flow statements (`sqlite_flow_sql` or
`postgres_flow_sql`), which give the same statements the same names. The
decisions come from `flow.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from ..errors import ValidationError
from ..models import BreakerEvent, BreakerReport, BreakerStatus, EntryResult, QueueStats
from ..settings import QueueSettings
from . import flow, redrive_jobs
from .flow import BreakerChange, FlowState

logger = logging.getLogger(__name__)

Execute = Callable[[str, Any], Any]

# Outcome counts older than the longest breaker window are no longer read.
OUTCOME_RETENTION_S = 86_400.0
EVENT_RETENTION_S = 30 * 86_400.0


@dataclass
class ReserveTicket:
    """The flow state and plan that `plan_reserve` returns and `finish_reserve` takes."""

    state: FlowState
    limit: int
    changes: list[BreakerChange]


# State ---------------------------------------------------------------------


def load_state(execute: Execute, sql: ModuleType, queue: str) -> FlowState:
    """Return the queue's flow state, creating its row on first use.

    The PostgreSQL statement locks the row until the transaction ends.
    """
    row = execute(sql.SELECT_FLOW, (queue,)).fetchone()
    if row is None:
        execute(sql.INSERT_FLOW, (queue,))
        row = execute(sql.SELECT_FLOW, (queue,)).fetchone()
    return FlowState(*row)


def save_state(execute: Execute, sql: ModuleType, queue: str, state: FlowState) -> None:
    execute(
        sql.UPDATE_FLOW,
        (
            state.tokens, state.tokens_at, state.wake_at, state.state, state.mode,
            state.opened_at, state.incident_at, state.cooldown_s, state.probes_sent,
            state.probes_ok, queue,
        ),
    )


def delete_queue(execute: Execute, sql: ModuleType, queue: str) -> None:
    """Delete a deleted queue's flow row, outcome counts and breaker events."""
    execute(sql.DELETE_QUEUE_FLOW, (queue,))
    execute(sql.DELETE_QUEUE_OUTCOMES, (queue,))
    execute(sql.DELETE_QUEUE_EVENTS, (queue,))


def delete_old_rows(execute: Execute, sql: ModuleType, now: float) -> None:
    """Apply retention to outcome counts and breaker events."""
    execute(sql.DELETE_OLD_OUTCOMES, (now - OUTCOME_RETENTION_S,))
    execute(sql.DELETE_OLD_EVENTS, (now - EVENT_RETENTION_S,))


# Reserve -------------------------------------------------------------------


def plan_reserve(
    execute: Execute,
    sql: ModuleType,
    queue: str,
    settings: QueueSettings,
    requested: int,
    now: float,
) -> tuple[int, ReserveTicket | None]:
    """Return how many messages a reserve may lease, and the ticket to finish with.

    The ticket is None when the queue uses no flow control, so the reserve
    touches no flow row.
    """
    if settings.paused:
        return 0, None
    if not flow.needs_state(settings):
        return requested, None
    state = load_state(execute, sql, queue)
    in_flight = 0
    if settings.max_in_flight is not None:
        in_flight = _count_in_flight(execute, sql, queue, now)
    plan = flow.reserve_limit(settings, state, in_flight, requested, now)
    return plan.limit, ReserveTicket(state, plan.limit, plan.changes)


def finish_reserve(
    execute: Execute,
    sql: ModuleType,
    queue: str,
    settings: QueueSettings,
    ticket: ReserveTicket | None,
    leased: int,
    now: float,
) -> None:
    """Take the leased messages' tokens, count probes and store the state."""
    if ticket is None:
        return
    state = ticket.state
    found_nothing = ticket.limit > 0 and leased == 0
    in_flight = 0
    if found_nothing and state.state == flow.HALF_OPEN:
        in_flight = _count_in_flight(execute, sql, queue, now)
    changes = ticket.changes
    changes += flow.after_reserve(settings, state, leased, found_nothing, in_flight, now)
    apply_changes(execute, sql, queue, settings, changes)
    save_state(execute, sql, queue, state)


def _count_in_flight(execute: Execute, sql: ModuleType, queue: str, now: float) -> int:
    return execute(sql.COUNT_IN_FLIGHT, (queue, now)).fetchone()[0]


def deferred_result(message_id: str, queue: str, delay_s: float) -> EntryResult:
    """Build the result of a nack with retry_after_s, and log the deferral."""
    logger.info(
        "Message %s on queue %s deferred by its task for %.3f s; the attempt is not counted",
        message_id, queue, delay_s,
    )
    detail = f"retry in {delay_s:.3f}s; retry_after_s gave the attempt back"
    return EntryResult(message_id, True, outcome="retried", detail=detail)


# Breaker -------------------------------------------------------------------


def record_outcomes(
    execute: Execute,
    sql: ModuleType,
    queue: str,
    settings: QueueSettings,
    successes: int,
    failures: int,
    now: float,
) -> list[BreakerChange]:
    """Count finished attempts for the queue's breaker and apply what they change.

    Does nothing for a queue without a breaker. Returns the breaker's
    changes, so the store can wake long polls after one.
    """
    breaker = settings.breaker
    if breaker is None or successes + failures == 0:
        return []
    state = load_state(execute, sql, queue)
    bucket = flow.bucket_start(breaker, now)
    execute(sql.ADD_OUTCOMES, (queue, bucket, successes, failures))
    window_failures, window_attempts = window_counts(execute, sql, queue, settings, now)
    changes = flow.after_outcomes(
        breaker, state, successes, failures, window_failures, window_attempts, now
    )
    if changes:
        state.wake_at = flow.wake_at(settings, state, now)
        apply_changes(execute, sql, queue, settings, changes)
    save_state(execute, sql, queue, state)
    return changes


def window_counts(
    execute: Execute, sql: ModuleType, queue: str, settings: QueueSettings, now: float
) -> tuple[int, int]:
    """Return (failures, attempts) in the breaker's window ending at `now`."""
    assert settings.breaker is not None
    since = now - settings.breaker.window_s
    failures, attempts = execute(sql.SUM_OUTCOMES, (queue, since)).fetchone()
    return int(failures), int(attempts)


def force_breaker(
    execute: Execute,
    sql: ModuleType,
    queue: str,
    settings: QueueSettings,
    mode: str,
    now: float,
) -> list[BreakerChange]:
    """Apply an operator's "open", "closed" or "auto" to the queue's breaker."""
    assert settings.breaker is not None
    state = load_state(execute, sql, queue)
    window_failures, window_attempts = window_counts(execute, sql, queue, settings, now)
    changes = flow.force(settings.breaker, state, mode, window_failures, window_attempts, now)
    state.wake_at = flow.wake_at(settings, state, now)
    apply_changes(execute, sql, queue, settings, changes)
    save_state(execute, sql, queue, state)
    return changes


def reset_breaker(execute: Execute, sql: ModuleType, queue: str) -> None:
    """Forget a removed breaker's state, so a breaker added later starts closed."""
    row = execute(sql.SELECT_FLOW, (queue,)).fetchone()
    if row is None:
        return
    state = FlowState(*row)
    fresh = FlowState(state.tokens, state.tokens_at)
    save_state(execute, sql, queue, fresh)
    execute(sql.DELETE_QUEUE_OUTCOMES, (queue,))


def apply_changes(
    execute: Execute,
    sql: ModuleType,
    queue: str,
    settings: QueueSettings,
    changes: list[BreakerChange],
) -> None:
    """Store and log each breaker change.

    A close also resets the window and, with redrive_on_close, starts the
    redrive job of the incident's dead messages in the same transaction.
    """
    for change in changes:
        execute(
            sql.INSERT_EVENT,
            (
                queue, change.at, change.from_state, change.to_state, change.failures,
                change.attempts, change.ratio, change.cooldown_s, change.reason,
            ),
        )
        flow.log_change(queue, change)
        if change.window_reset:
            execute(sql.DELETE_QUEUE_OUTCOMES, (queue,))
        if change.redrive_since is not None:
            _start_recovery(execute, sql, queue, settings, change.redrive_since, change.at)


def _start_recovery(
    execute: Execute,
    sql: ModuleType,
    queue: str,
    settings: QueueSettings,
    since: float,
    now: float,
) -> None:
    """Start a redrive job of the messages dead-lettered since the breaker opened."""
    assert settings.breaker is not None
    dlq = settings.dead_letter_queue
    if dlq is None:
        return
    job = redrive_jobs.create_job(
        execute, sql, dlq, now,
        rate_per_s=settings.breaker.redrive_rate_per_s,
        source_queue=queue,
        dead_after=since,
    )
    logger.warning(
        "Circuit breaker of queue %s closed; redrive job %s moves the messages "
        "dead-lettered into %s since the breaker opened",
        queue, job.id, dlq,
    )


def check_has_breaker(queue: str, settings: QueueSettings) -> None:
    """Raise ValidationError when the queue has no breaker to force."""
    if settings.breaker is None:
        raise ValidationError(
            f"queue {queue!r} has no circuit breaker to force; add one with "
            f"'conveyor queue update {queue} --breaker {{}}' or by setting its "
            "breaker setting"
        )


# Reads ---------------------------------------------------------------------


def breaker_report(
    execute: Execute,
    sql: ModuleType,
    queue: str,
    settings: QueueSettings,
    limit: int,
    now: float,
) -> BreakerReport:
    """Return the breaker's status and its latest `limit` events, newest first.

    Events stay readable after the breaker setting is removed.
    """
    status = breaker_status(execute, sql, queue, settings, now)
    return BreakerReport(queue, status, breaker_events(execute, sql, queue, limit))


def breaker_status(
    execute: Execute, sql: ModuleType, queue: str, settings: QueueSettings, now: float
) -> BreakerStatus | None:
    """Return the breaker's state and window counts without locking, or None."""
    if settings.breaker is None:
        return None
    row = execute(sql.SELECT_FLOW_READ, (queue,)).fetchone()
    state = FlowState() if row is None else FlowState(*row)
    failures, attempts = window_counts(execute, sql, queue, settings, now)
    return BreakerStatus(
        state=state.state,
        mode=state.mode,
        opened_at=state.opened_at,
        next_probe_at=flow.next_probe_at(state),
        cooldown_s=state.cooldown_s,
        failures=failures,
        attempts=attempts,
        failure_ratio=flow.failure_ratio(failures, attempts),
        probes_sent=state.probes_sent,
        probes_succeeded=state.probes_ok,
    )


def breaker_events(
    execute: Execute, sql: ModuleType, queue: str, limit: int
) -> list[BreakerEvent]:
    """Return the queue's latest breaker changes, newest first."""
    rows = execute(sql.SELECT_EVENTS, (queue, limit)).fetchall()
    return [BreakerEvent(*row) for row in rows]


def add_stats(
    execute: Execute, sql: ModuleType, settings: QueueSettings, stats: QueueStats, now: float
) -> None:
    """Fill the flow-control fields of a queue's stats, without locking anything."""
    stats.paused = settings.paused
    if not flow.needs_state(settings):
        return
    row = execute(sql.SELECT_FLOW_READ, (stats.queue,)).fetchone()
    state = None if row is None else FlowState(*row)
    stats.tokens = flow.tokens_now(settings, state, now)
    status = breaker_status(execute, sql, stats.queue, settings, now)
    stats.breaker = None if status is None else status.to_wire()
