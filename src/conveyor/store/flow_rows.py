"""Flow-control rows, read and written the same way by both stores.

Each function takes the transaction's `execute(query, params)` and the
store's module of named statements (`sqlite_sql` or `postgres_sql`), which
give the same statements the same names. The decisions come from `flow.py`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

from ..models import QueueStats
from ..settings import QueueSettings
from . import flow
from .flow import FlowState

Execute = Callable[[str, Any], Any]


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
    execute(sql.UPDATE_FLOW, (state.tokens, state.tokens_at, state.wake_at, queue))


def plan_reserve(
    execute: Execute,
    sql: ModuleType,
    queue: str,
    settings: QueueSettings,
    requested: int,
    now: float,
) -> tuple[int, FlowState | None]:
    """Return how many messages a reserve may lease, and the state to finish with.

    The state is None when the queue uses no flow control, so the reserve
    touches no flow row.
    """
    if settings.paused:
        return 0, None
    if not flow.needs_state(settings):
        return requested, None
    state = load_state(execute, sql, queue)
    in_flight = 0
    if settings.max_in_flight is not None:
        in_flight = execute(sql.COUNT_IN_FLIGHT, (queue, now)).fetchone()[0]
    return flow.reserve_limit(settings, state, in_flight, requested, now), state


def finish_reserve(
    execute: Execute,
    sql: ModuleType,
    queue: str,
    settings: QueueSettings,
    state: FlowState | None,
    leased: int,
    now: float,
) -> None:
    """Take the leased messages' tokens and store the state."""
    if state is None:
        return
    flow.after_reserve(settings, state, leased, now)
    save_state(execute, sql, queue, state)


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
