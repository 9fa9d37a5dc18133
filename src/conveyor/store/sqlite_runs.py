"""The SQLite store's records of task runs: completion records, progress,
cancellation and attempt logs.

The functions run inside the writer's transaction (or on a reader
connection for `select_logs`). `run_records.py` contains the rules they
share with the PostgreSQL store.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from ..models import AttemptLog, EntryResult
from . import run_records
from . import sqlite_sql as sql
from .writer import Transaction


def prepare_schema(conn: sqlite3.Connection) -> None:
    """Create the run tables and add the run columns an older file lacks."""
    conn.executescript(sql.RUN_SCHEMA)
    for table, columns in sql.RUN_COLUMNS.items():
        add_missing_columns(conn, table, columns)


def add_missing_columns(
    conn: sqlite3.Connection, table: str, columns: tuple[tuple[str, str], ...]
) -> None:
    """Add each of `columns` (name, type and constraints) that `table` lacks.

    SQLite has no ADD COLUMN IF NOT EXISTS, so this reads the table's
    columns from PRAGMA table_info first. It runs in one IMMEDIATE
    transaction, so two processes that open an old file at once take turns
    and the second finds the columns there. `table` and the column
    definitions come from sqlite_sql.RUN_COLUMNS or
    sqlite_workflow_sql.ADDED_*_COLUMNS, never from input.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        present = {row[0] for row in conn.execute(sql.SELECT_TABLE_COLUMNS, (table,))}
        for name, definition in columns:
            if name not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# Leased entries ------------------------------------------------------------
# `row` is the leased row that SELECT_LEASED returned: seq, receive_count,
# max_attempts, cancel_requested, expires_at.


def complete_leased(
    conn: sqlite3.Connection, queue: str, entry: dict[str, Any], row: tuple, now: float
) -> EntryResult:
    """Store the completion record of a leased message."""
    value = entry.get("result")
    blob = None if value is None else orjson.dumps(value)
    conn.execute(sql.SET_COMPLETED, (now, blob, row[0]))
    return EntryResult(entry["id"], True, outcome=run_records.COMPLETED)


def record_progress(
    conn: sqlite3.Connection, queue: str, entry: dict[str, Any], row: tuple, now: float
) -> EntryResult:
    """Store a leased message's progress and tell the caller whether to cancel."""
    params = (entry["progress"], entry.get("progress_text"), now, row[0])
    cancel_requested = conn.execute(sql.SET_PROGRESS, params).fetchone()[0]
    return EntryResult(
        entry["id"], True, outcome=run_records.UPDATED,
        cancel_requested=True if cancel_requested else None,
    )


def keep_attempt_report(
    conn: sqlite3.Connection, queue: str, entry: dict[str, Any], row: tuple, now: float
) -> None:
    """Store what an ack or nack entry reports about its attempt: logs and last progress.

    The logs are kept as long as the message, until finish_logs or
    extend_logs changes that.
    """
    seq, attempt, _max_attempts, _cancel_requested, expires_at = row
    logs = entry.get("logs")
    if logs is not None:
        conn.execute(
            sql.INSERT_ATTEMPT_LOG, (entry["id"], attempt, queue, logs, now, expires_at)
        )
    if entry.get("progress") is not None:
        conn.execute(sql.SET_PROGRESS, (entry["progress"], entry.get("progress_text"), now, seq))


# Finishing -------------------------------------------------------------------


def finish_logs(
    conn: sqlite3.Connection, message_id: str, result_ttl_s: float | None, now: float
) -> None:
    """Make a finished message's logs expire with its result, or delete them if none is kept."""
    expires_at = run_records.logs_expiry(result_ttl_s, now)
    if expires_at is None:
        conn.execute(sql.DELETE_MESSAGE_LOGS, (message_id,))
    else:
        conn.execute(sql.SET_LOGS_EXPIRY, (expires_at, message_id))


def extend_logs(conn: sqlite3.Connection, seq: int, expires_at: float) -> None:
    """Keep a dead message's logs at least as long as the DLQ keeps the message."""
    conn.execute(sql.EXTEND_LOGS_EXPIRY, (expires_at, seq))


def insert_cancelled_result(
    conn: sqlite3.Connection, message_id: str, queue: str, result_ttl_s: float | None,
    now: float,
) -> None:
    """Store the `cancelled` result of a message the store cancelled itself."""
    entry = run_records.cancelled_entry(message_id, result_ttl_s)
    ttl_s = entry["result_ttl_s"]
    if ttl_s:
        conn.execute(
            sql.INSERT_RESULT,
            (message_id, queue, entry["status"], None, entry["error"], now, now + ttl_s,
             None, None),
        )
    finish_logs(conn, message_id, ttl_s, now)


def cancel(
    tx: Transaction, message_id: str, result_ttl_s: float | None, now: float,
    include_dead: bool = False,
) -> EntryResult:
    """Cancel a message by id: remove it if it waits, flag it if it runs.

    Raises MessageFinished for a finished message, or for a dead one unless
    `include_dead` (a workflow cancel) removes that from its DLQ too.
    Raises MessageNotFound for an unknown id.
    """
    conn = tx.conn
    row = conn.execute(sql.SELECT_CANCEL_TARGET, (message_id,)).fetchone()
    if row is None:
        status = conn.execute(sql.SELECT_RESULT_STATUS, (message_id, now)).fetchone()
        raise run_records.missing_message_error(message_id, status[0] if status else None)
    seq, queue, state, reserved_until = row
    if not include_dead:
        run_records.check_cancellable(message_id, queue, state)

    if not run_records.cancel_is_immediate(state, reserved_until, now):
        conn.execute(sql.REQUEST_CANCEL, (seq,))
        run_records.log_cancel_requested(message_id, queue)
        return run_records.cancel_result(message_id, run_records.CANCEL_REQUESTED)

    finish_cancelled(tx, queue, seq, message_id, result_ttl_s, now)
    run_records.log_cancelled(message_id, queue, f"while {state}; it will not run")
    return run_records.cancel_result(message_id, run_records.CANCELLED)


def finish_cancelled(
    tx: Transaction, queue: str, seq: int, message_id: str, result_ttl_s: float | None,
    now: float,
) -> None:
    """Delete a message and store its cancelled result."""
    tx.conn.execute(sql.DELETE_MESSAGE, (seq,))
    insert_cancelled_result(tx.conn, message_id, queue, result_ttl_s, now)
    # The next message of a FIFO group may now go out.
    tx.wake(queue)


# Reads -------------------------------------------------------------------------


def select_logs(
    conn: sqlite3.Connection, message_id: str, attempt: int | None, now: float
) -> list[AttemptLog]:
    """Return a message's attempt logs in attempt order, or only those of `attempt`."""
    if attempt is None:
        rows = conn.execute(sql.SELECT_LOGS, (message_id, now)).fetchall()
    else:
        rows = conn.execute(sql.SELECT_ATTEMPT_LOG, (message_id, attempt, now)).fetchall()
    return [AttemptLog(*row) for row in rows]
