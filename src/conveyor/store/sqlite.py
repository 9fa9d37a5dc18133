"""The SQLite store: one file, WAL, `synchronous=FULL`, group commit.

Writes run on the file's single writer thread (see `writer.py`) and return
futures that resolve after the commit. Reads use one connection per thread,
which WAL lets run beside the writer.
"""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
import threading
from concurrent.futures import Future
from typing import Any, Callable, Iterable

import orjson

from .. import policy
from ..errors import (
    MessageNotFound,
    QueueAlreadyExists,
    QueueNotFound,
    StoreUnavailable,
    ValidationError,
)
from ..idempotency import split_stored_key
from ..models import (
    AttemptLog,
    EntryResult,
    Message,
    NewMessage,
    PostResult,
    QueueInfo,
    QueueStats,
    TaskResult,
)
from ..models import BreakerReport, RedriveJob
from ..policy import PreparedMessage
from ..settings import DAY_S, QueueSettings, dlq_name_for, merge_settings
from . import flow_rows, outcomes, run_records, sqlite_runs
from . import redrive_jobs, sqlite_flow, sqlite_flow_sql as flow_sql
from . import sqlite_schedule_sql as schedule_sql
from . import sqlite_sql as sql
from .schedules import ScheduleStore, ScheduleTransaction, prepare_all
from . import sqlite_workflows, workflows
from .sqlite_workflows import SQLiteWorkflows
from .writer import GroupCommitWriter, Transaction

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
DLQ_RETENTION_S = 14 * DAY_S
REDRIVE_CHUNK = 500
RECEIPT_BYTES = 16
# Reserve and peek stop adding messages once their bodies pass this total
# (always returning at least one), so one response contains at most about this
# much, however large the batch limit and the messages are.
MAX_RESPONSE_BODY_BYTES = 32 * 1024 * 1024


def connect(path: str) -> sqlite3.Connection:
    """Open a connection with the pragmas every Conveyor connection uses."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA cache_size=-65536")
    return conn


def _prepare_schedule_schema(conn: sqlite3.Connection) -> None:
    """Create the schedule tables and add the columns an older file lacks."""
    conn.executescript(schedule_sql.SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, column_type in schedule_sql.ADDED_COLUMNS:
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {column_type}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class SQLiteStore(SQLiteWorkflows):
    """Stores queues and messages in one SQLite file."""

    def __init__(self, path: str, on_commit: Callable[[set[str]], None]) -> None:
        self.path = path
        try:
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            with connect(path) as conn:
                conn.executescript(sql.SCHEMA)
                sqlite_flow.prepare_schema(conn)
                sqlite_runs.prepare_schema(conn)
                _prepare_schedule_schema(conn)
                sqlite_workflows.prepare_schema(conn)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(
                f"could not open the SQLite store at {path!r}: {exc}; check that "
                "the path names a Conveyor SQLite file in a folder you can write"
            ) from exc
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer = GroupCommitWriter(lambda: connect(path), on_commit)
        self.schedules = ScheduleStore(
            schedule_sql, self._write_schedule, lambda read: read(self._reader().execute)
        )

    def close(self) -> None:
        self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    # Queues ------------------------------------------------------------

    def create_queue(
        self, name: str, settings: QueueSettings, now: float, exist_ok: bool
    ) -> Future:
        def operation(tx: Transaction) -> QueueInfo:
            existing = _select_queue(tx.conn, name)
            if existing is not None:
                if exist_ok:
                    return existing
                raise QueueAlreadyExists(
                    f"queue {name!r} exists already; update it or pick another name"
                )
            info = _insert_queue(tx.conn, name, settings, now)
            _ensure_dlq(tx.conn, info, now)
            return info

        return self._writer.submit(operation)

    def update_queue(self, name: str, changes: dict[str, Any], now: float) -> Future:
        def operation(tx: Transaction) -> QueueInfo:
            current = _require_queue(tx.conn, name)
            _check_type_unchanged(name, current, changes)
            settings = merge_settings(current.settings, changes)
            tx.conn.execute(sql.UPDATE_QUEUE, (_dump(settings.to_dict()), now, name))
            if current.settings.get("breaker") and settings.breaker is None:
                flow_rows.reset_breaker(tx.conn.execute, flow_sql, name)
            info = QueueInfo(name, settings.to_dict(), current.created_at, now)
            _ensure_dlq(tx.conn, info, now)
            tx.wake(name)
            return info

        return self._writer.submit(operation)

    def delete_queue(self, name: str) -> Future:
        def operation(tx: Transaction) -> int:
            _require_queue(tx.conn, name)
            removed = tx.conn.execute(sql.DELETE_QUEUE_MESSAGES, (name,)).rowcount
            tx.conn.execute(sql.DELETE_QUEUE_DEDUP, (name,))
            flow_rows.delete_queue(tx.conn.execute, flow_sql, name)
            tx.conn.execute(sql.DELETE_QUEUE, (name,))
            tx.wake(name)
            return removed

        return self._writer.submit(operation)

    def purge_queue(self, name: str) -> Future:
        def operation(tx: Transaction) -> int:
            _require_queue(tx.conn, name)
            return tx.conn.execute(sql.DELETE_QUEUE_MESSAGES, (name,)).rowcount

        return self._writer.submit(operation)

    def get_queue(self, name: str) -> QueueInfo:
        return _require_queue(self._reader(), name)

    def list_queues(self) -> list[QueueInfo]:
        rows = self._reader().execute(sql.SELECT_QUEUES).fetchall()
        return [_queue_from_row(row) for row in rows]

    # Messages ----------------------------------------------------------

    def post(self, queue: str, messages: list[PreparedMessage], now: float) -> Future:
        return self._writer.submit(lambda tx: _post(tx, queue, messages, now))

    def reserve(
        self, queue: str, max_messages: int, visibility_timeout_s: float | None, now: float
    ) -> Future:
        def operation(tx: Transaction) -> list[Message]:
            settings = _require_settings(tx.conn, queue)
            tx.conn.execute(sql.PROMOTE_DUE, (queue, now))
            _expire_leases(tx, sql.SELECT_EXPIRED_LEASES, (queue, now), now)
            _record_outcomes(tx, now, {queue: settings})

            execute = tx.conn.execute
            limit, ticket = flow_rows.plan_reserve(
                execute, flow_sql, queue, settings, max_messages, now
            )
            seqs = _select_ready(tx.conn, queue, settings, limit) if limit else []
            lease_s = visibility_timeout_s or settings.visibility_timeout_s
            messages = _lease(tx.conn, seqs, now + lease_s)
            flow_rows.finish_reserve(
                execute, flow_sql, queue, settings, ticket, len(messages), now
            )
            return messages

        return self._writer.submit(operation)

    def ack(self, queue: str, entries: list[dict[str, Any]], now: float) -> Future:
        def operation(tx: Transaction) -> list[EntryResult]:
            info = _require_queue(tx.conn, queue)
            # Steps are found before the acks delete their messages, which
            # contain the receive counts the steps keep as attempts.
            steps = sqlite_workflows.find_steps(tx, entries)
            if not outcomes.can_ack_set_wise(entries):
                results = [_ack_one(tx, queue, entry, now) for entry in entries]
            else:
                results = _ack_all(tx, queue, entries, now)
            sqlite_workflows.finish_acked_steps(
                tx, entries, results, steps, lambda: _step_poster(tx, now), now
            )
            if info.settings.get("breaker"):
                acked = sum(1 for result in results if result.ok)
                settings = QueueSettings(**info.settings)
                _record_outcomes(tx, now, {queue: settings}, {queue: acked})
            return results

        return self._writer.submit(operation)

    def nack(self, queue: str, entries: list[dict[str, Any]], now: float) -> Future:
        def operation(tx: Transaction) -> list[EntryResult]:
            settings = _require_settings(tx.conn, queue)
            results = []
            for entry in entries:
                if entry.get("retry_after_s"):
                    results.append(_defer_one(tx, queue, settings, entry, now))
                else:
                    results.append(_nack_one(tx, queue, settings, entry, now))
            _record_outcomes(tx, now, {queue: settings})
            return results

        return self._writer.submit(operation)

    def touch(self, queue: str, entries: list[dict[str, Any]], now: float) -> Future:
        def operation(tx: Transaction) -> list[EntryResult]:
            settings = _require_settings(tx.conn, queue)
            return [_touch_one(tx.conn, queue, settings, entry, now) for entry in entries]

        return self._writer.submit(operation)

    # Task runs ---------------------------------------------------------

    def complete(self, queue: str, entries: list[dict[str, Any]], now: float) -> Future:
        """Store completion records of leased messages; see run_records.py."""
        return self._submit_leased(queue, entries, now, sqlite_runs.complete_leased)

    def progress(self, queue: str, entries: list[dict[str, Any]], now: float) -> Future:
        """Store the progress of leased messages; results carry cancel_requested."""
        return self._submit_leased(queue, entries, now, sqlite_runs.record_progress)

    def cancel(self, message_id: str, result_ttl_s: float | None, now: float) -> Future:
        """Cancel a message by id; see run_records.py for what each state does."""
        return self._writer.submit(
            lambda tx: sqlite_runs.cancel(tx, message_id, result_ttl_s, now)
        )

    def get_logs(self, message_id: str, attempt: int | None, now: float) -> list[AttemptLog]:
        return sqlite_runs.select_logs(self._reader(), message_id, attempt, now)

    def _submit_leased(
        self,
        queue: str,
        entries: list[dict[str, Any]],
        now: float,
        apply: Callable[..., EntryResult],
    ) -> Future:
        """Apply `apply` to each entry whose receipt holds; explain the others."""

        def operation(tx: Transaction) -> list[EntryResult]:
            _require_queue(tx.conn, queue)
            results = []
            for entry in entries:
                row, error = _find_lease(tx.conn, queue, entry, now)
                results.append(error if row is None else apply(tx.conn, queue, entry, row, now))
            return results

        return self._writer.submit(operation)

    def redrive(
        self, dlq: str, message_ids: list[str] | None, limit: int | None, now: float
    ) -> int:
        """Move dead messages back to their source queues, in chunks.

        Each chunk is its own transaction, so a crash part-way leaves every
        message either dead in the DLQ or back in its source, never both.
        """
        if message_ids is not None:
            return self._writer.submit(
                lambda tx: _redrive_rows(tx, _dead_rows_by_id(tx.conn, dlq, message_ids), now)
            ).result()

        moved = 0
        after_seq = 0
        while limit is None or moved < limit:
            chunk = REDRIVE_CHUNK if limit is None else min(REDRIVE_CHUNK, limit - moved)

            def operation(tx: Transaction, chunk: int = chunk, after: int = after_seq) -> tuple:
                _require_queue(tx.conn, dlq)
                rows = tx.conn.execute(sql.SELECT_DEAD, (dlq, after, chunk)).fetchall()
                last_seq = rows[-1][0] if rows else after
                return _redrive_rows(tx, rows, now), len(rows), last_seq

            count, fetched, after_seq = self._writer.submit(operation).result()
            moved += count
            if fetched < chunk:
                break
        return moved

    def sweep(self, now: float) -> Future:
        """Expire leases everywhere and apply retention, in one transaction."""

        def operation(tx: Transaction) -> dict[str, int]:
            expired = _expire_leases(tx, sql.SELECT_ALL_EXPIRED_LEASES, (now,), now)
            _record_outcomes(tx, now, {})
            flow_rows.delete_old_rows(tx.conn.execute, flow_sql, now)
            redrive_jobs.delete_old_jobs(tx.conn.execute, flow_sql, now)
            sqlite_workflows.delete_old_workflows(tx, now)
            removed = tx.conn.execute(sql.DELETE_EXPIRED_MESSAGES, (now,)).rowcount
            tx.conn.execute(sql.DELETE_EXPIRED_DEDUP, (now,))
            tx.conn.execute(sql.DELETE_EXPIRED_RESULTS, (now,))
            tx.conn.execute(sql.DELETE_EXPIRED_LOGS, (now,))
            return {"expired_leases": expired, "removed": removed}

        return self._writer.submit(operation)

    # Redrive jobs ------------------------------------------------------

    def create_redrive_job(self, dlq: str, now: float, **options: Any) -> Future:
        """Store an active redrive job of a DLQ; see redrive_jobs.create_job."""

        def operation(tx: Transaction) -> RedriveJob:
            _require_queue(tx.conn, dlq)
            return redrive_jobs.create_job(tx.conn.execute, flow_sql, dlq, now, **options)

        return self._writer.submit(operation)

    def list_redrive_jobs(
        self, dlq: str | None, state: str | None, limit: int
    ) -> list[RedriveJob]:
        return redrive_jobs.list_jobs(self._reader().execute, flow_sql, dlq, state, limit)

    def get_redrive_job(self, job_id: str) -> RedriveJob:
        return redrive_jobs.get_job(self._reader().execute, flow_sql, job_id)

    def cancel_redrive_job(self, job_id: str, now: float) -> Future:
        return self._writer.submit(
            lambda tx: redrive_jobs.cancel_job(tx.conn.execute, flow_sql, job_id, now)
        )

    def claim_redrive_jobs(self, owner: str, limit: int, lease_s: float, now: float) -> Future:
        return self._writer.submit(
            lambda tx: redrive_jobs.claim_jobs(
                tx.conn.execute, flow_sql, owner, limit, lease_s, now
            )
        )

    def run_redrive_chunk(
        self, job_id: str, owner: str, max_messages: int, lease_s: float, now: float
    ) -> Future:
        """Run one chunk of a job in one transaction; see redrive_jobs.run_chunk."""

        def operation(tx: Transaction) -> RedriveJob:
            return redrive_jobs.run_chunk(
                tx.conn.execute, flow_sql, job_id, owner, max_messages, lease_s, now,
                dlq_exists=lambda name: _select_queue(tx.conn, name) is not None,
                move_rows=lambda rows: _redrive_rows(tx, rows, now),
            )

        return self._writer.submit(operation)

    def release_redrive_jobs(self, owner: str) -> Future:
        return self._writer.submit(
            lambda tx: redrive_jobs.release_jobs(tx.conn.execute, flow_sql, owner)
        )

    # Schedules ---------------------------------------------------------

    def _write_schedule(self, operation: Callable[[ScheduleTransaction], Any]) -> Future:
        """Run a schedule operation in a write transaction that posts like `post`."""

        def run(tx: Transaction) -> Any:
            return operation(ScheduleTransaction(
                tx.conn.execute,
                lambda queue, messages, now: _post(tx, queue, prepare_all(messages), now),
                lambda queue, message: _check_post(tx.conn, queue, message),
            ))

        return self._writer.submit(run)

    def _step_poster(self, tx: Transaction, now: float) -> workflows.StepPoster:
        return _step_poster(tx, now)

    # Circuit breaker ---------------------------------------------------

    def force_breaker(self, queue: str, mode: str, now: float) -> Future:
        """Force a queue's breaker open or closed, or give it back to automatic control."""

        def operation(tx: Transaction) -> None:
            settings = _require_settings(tx.conn, queue)
            flow_rows.check_has_breaker(queue, settings)
            flow_rows.force_breaker(tx.conn.execute, flow_sql, queue, settings, mode, now)
            tx.wake(queue)

        return self._writer.submit(operation)

    def breaker_report(self, queue: str, limit: int, now: float) -> BreakerReport:
        conn = self._reader()
        settings = QueueSettings(**_require_queue(conn, queue).settings)
        return flow_rows.breaker_report(conn.execute, flow_sql, queue, settings, limit, now)

    # Reads -------------------------------------------------------------

    def peek(self, queue: str, limit: int, offset: int, state: str | None) -> list[Message]:
        conn = self._reader()
        _require_queue(conn, queue)
        if state is None:
            rows = conn.execute(sql.SELECT_PEEK, (queue, limit, offset))
        else:
            rows = conn.execute(sql.SELECT_PEEK_STATE, (queue, state, limit, offset))
        messages = []
        total = 0
        for row in rows:
            total += len(row[3])
            if messages and total > MAX_RESPONSE_BODY_BYTES:
                break
            messages.append(_message_from_row(row))
        return messages

    def get_message(self, message_id: str) -> Message:
        row = self._reader().execute(sql.SELECT_MESSAGE, (message_id,)).fetchone()
        if row is None:
            raise MessageNotFound(f"no message with id {message_id!r} is stored")
        return _message_from_row(row)

    def get_result(self, message_id: str, now: float) -> TaskResult | None:
        row = self._reader().execute(sql.SELECT_RESULT, (message_id, now)).fetchone()
        if row is None:
            return None
        value = None if row[3] is None else orjson.loads(row[3])
        return TaskResult(
            row[0], row[1], row[2], value, row[4], row[5], row[6],
            progress=row[7], progress_text=row[8],
        )

    def stats(self, queue: str, now: float) -> QueueStats:
        conn = self._reader()
        info = _require_queue(conn, queue)
        stats = QueueStats(queue=queue)
        for state, count, oldest in conn.execute(sql.SELECT_STATE_COUNTS, (now, queue)):
            setattr(stats, state, count)
            if state == "ready" and oldest is not None:
                stats.oldest_ready_age_s = max(now - oldest, 0.0)
        stats.dead += conn.execute(sql.SELECT_DEAD_FROM_SOURCE, (queue,)).fetchone()[0]
        flow_rows.add_stats(conn.execute, flow_sql, QueueSettings(**info.settings), stats, now)
        return stats

    def next_change_at(self, queue: str, now: float) -> float | None:
        """Return the earliest time a delayed message or a lease comes due.

        Flow control's next wake-up (a token, the end of a cool-down) counts
        only while it lies after `now`.
        """
        conn = self._reader()
        due = conn.execute(sql.SELECT_NEXT_DUE, (queue,)).fetchone()[0]
        lease_end = conn.execute(sql.SELECT_NEXT_LEASE_END, (queue,)).fetchone()[0]
        flow_row = conn.execute(flow_sql.SELECT_FLOW_WAKE, (queue,)).fetchone()
        wake_at = flow_row[0] if flow_row is not None else None
        return earliest(due, lease_end, wake_at if wake_at and wake_at > now else None)

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn


# Helpers run inside the writer's transaction ----------------------------


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


def _select_queue(conn: sqlite3.Connection, name: str) -> QueueInfo | None:
    row = conn.execute(sql.SELECT_QUEUE, (name,)).fetchone()
    return None if row is None else _queue_from_row(row)


def _queue_from_row(row: tuple) -> QueueInfo:
    return QueueInfo(row[0], orjson.loads(row[1]), row[2], row[3])


def _require_queue(conn: sqlite3.Connection, name: str) -> QueueInfo:
    info = _select_queue(conn, name)
    if info is None:
        raise QueueNotFound(
            f"queue {name!r} does not exist; check the name with 'conveyor queue "
            f"list', or create it with 'conveyor queue create {name}' or POST /v1/queues"
        )
    return info


def _check_type_unchanged(name: str, current: QueueInfo, changes: dict[str, Any]) -> None:
    """Raise if an update would switch a queue between standard and fifo.

    Messages already stored were checked against the old type (groups are
    required on fifo queues and rejected on standard ones), so switching
    would break the delivery order the queue promised.
    """
    new_type = changes.get("type", current.settings["type"])
    if new_type != current.settings["type"]:
        raise ValidationError(
            f"queue {name!r} is a {current.settings['type']} queue and its type "
            f"cannot change to {new_type!r}; create a new queue with that type"
        )


def _require_settings(conn: sqlite3.Connection, name: str) -> QueueSettings:
    return QueueSettings(**_require_queue(conn, name).settings)


def _insert_queue(
    conn: sqlite3.Connection, name: str, settings: QueueSettings, now: float
) -> QueueInfo:
    if settings.dead_letter_queue is None:
        settings = settings.replace({"dead_letter_queue": dlq_name_for(name)})
    conn.execute(sql.INSERT_QUEUE, (name, _dump(settings.to_dict()), now, now))
    return QueueInfo(name, settings.to_dict(), now, now)


def _ensure_dlq(conn: sqlite3.Connection, info: QueueInfo, now: float) -> None:
    """Create the queue's DLQ if it does not exist yet.

    A DLQ keeps messages longer than its source (14 days by default) and is
    its own DLQ, so a message that fails there stays dead in place.
    """
    dlq = info.settings["dead_letter_queue"]
    if dlq is None or _select_queue(conn, dlq) is not None:
        return
    retention = max(DLQ_RETENTION_S, info.settings["retention_s"])
    settings = QueueSettings(dead_letter_queue=dlq, retention_s=retention)
    _insert_queue(conn, dlq, settings, now)


def _post(
    tx: Transaction, queue: str, messages: list[PreparedMessage], now: float
) -> list[PostResult]:
    """Post messages to a queue in the caller's transaction, all or nothing."""
    settings = _require_settings(tx.conn, queue)
    policy.check_for_queue(queue, settings, messages)
    results = [_insert_message(tx.conn, queue, settings, m, now) for m in messages]
    tx.wake(queue)
    return results


def _check_post(conn: sqlite3.Connection, queue: str, message: NewMessage) -> None:
    """Raise unless the queue exists and would accept the message."""
    settings = _require_settings(conn, queue)
    policy.check_for_queue(queue, settings, prepare_all([message]))


def _insert_message(
    conn: sqlite3.Connection,
    queue: str,
    settings: QueueSettings,
    message: PreparedMessage,
    now: float,
) -> PostResult:
    if message.dedup_id is not None:
        row = conn.execute(sql.SELECT_DEDUP, (queue, message.dedup_id, now)).fetchone()
        if row is not None:
            return PostResult(row[0], deduplicated=True)
        expiry = now + settings.dedup_window_s
        conn.execute(sql.UPSERT_DEDUP, (queue, message.dedup_id, message.id, expiry))

    due = policy.due_at(settings, message, now)
    state = "delayed" if due > now else "ready"
    conn.execute(
        sql.INSERT_MESSAGE,
        (
            message.id,
            queue,
            state,
            0 if settings.is_fifo else message.priority,
            message.group,
            message.dedup_id,
            message.body,
            int(message.is_binary),
            message.headers,
            now,
            due,
            message.max_attempts,
            policy.expires_at(settings, message, now),
        ),
    )
    return PostResult(message.id)


def earliest(*times: float | None) -> float | None:
    """Return the earliest of the times that are not None, or None."""
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _select_ready(
    conn: sqlite3.Connection, queue: str, settings: QueueSettings, limit: int
) -> list[int]:
    """Return the seqs of up to `limit` deliverable messages, in delivery order."""
    if not settings.is_fifo:
        return _within_budget(conn.execute(sql.SELECT_READY, (queue, limit)))
    if settings.group_max_in_flight == 1:
        return _within_budget(conn.execute(sql.SELECT_READY_FIFO, (queue, limit)))
    params = (queue, settings.group_max_in_flight - 1, limit)
    return _within_budget(conn.execute(sql.SELECT_READY_FIFO_GROUPS, params))


def _within_budget(rows: Iterable[tuple[int, int]]) -> list[int]:
    """Return the seqs of (seq, body size) rows up to MAX_RESPONSE_BODY_BYTES."""
    seqs: list[int] = []
    total = 0
    for seq, size in rows:
        total += size
        if seqs and total > MAX_RESPONSE_BODY_BYTES:
            break
        seqs.append(seq)
    return seqs


def _lease(conn: sqlite3.Connection, seqs: list[int], reserved_until: float) -> list[Message]:
    """Lease the messages in one statement; return them in the order of seqs."""
    if not seqs:
        return []
    receipts = new_receipts(len(seqs))
    params: list[Any] = [reserved_until]
    for seq, receipt in zip(seqs, receipts):
        params += (seq, receipt)
    rows = conn.execute(sql.lease_messages(len(seqs)), params).fetchall()
    by_seq = {row[0]: _message_from_row(row[1:]) for row in rows}
    return [by_seq[seq] for seq in seqs]


def new_receipts(count: int) -> list[str]:
    """Return `count` random receipts of 128 bits each, from one urandom call."""
    raw = os.urandom(RECEIPT_BYTES * count)
    chunks = (raw[i : i + RECEIPT_BYTES] for i in range(0, len(raw), RECEIPT_BYTES))
    return [base64.urlsafe_b64encode(chunk).rstrip(b"=").decode() for chunk in chunks]


def _expire_leases(tx: Transaction, query: str, params: tuple, now: float) -> int:
    """Treat each expired lease as a failed attempt: retry later or dead-letter."""
    rows = tx.conn.execute(query, params).fetchall()
    for seq, message_id, queue, count, max_attempts, cancel_requested, completed_at in rows:
        settings = _require_settings(tx.conn, queue)
        error = f"lease expired after attempt {count}"
        action, delay_s = run_records.expiry_action(
            *outcomes.expiry_action(settings, max_attempts, count),
            bool(cancel_requested), completed_at is not None,
        )
        if action == run_records.CANCELLED:
            sqlite_runs.finish_cancelled(tx, queue, seq, message_id, None, now)
            run_records.log_cancelled(message_id, queue, "when its lease expired")
            continue
        if action == outcomes.RETRIED:
            _retry(tx, queue, seq, delay_s, error, now)
        else:
            _dead_letter(tx, queue, settings, seq, error, now)
        if completed_at is not None:
            run_records.log_completed_expiry(message_id, queue, count)
        else:
            outcomes.log_expiry(message_id, queue, count, action, settings.dead_letter_queue)
    return len(rows)


def _record_outcomes(
    tx: Transaction,
    now: float,
    settings_by_queue: dict[str, QueueSettings],
    successes: dict[str, int] | None = None,
) -> None:
    """Record the operation's finished attempts for their queues' circuit breakers.

    Failures are the ones `_retry` and `_dead_letter` counted. A queue not
    in `settings_by_queue` has its settings read here.
    """
    failures = tx.take_failures()
    successes = successes or {}
    for queue in sorted(failures.keys() | successes.keys()):
        settings = settings_by_queue.get(queue)
        if settings is None:
            info = _select_queue(tx.conn, queue)
            if info is None or not info.settings.get("breaker"):
                continue
            settings = QueueSettings(**info.settings)
        changes = flow_rows.record_outcomes(
            tx.conn.execute, flow_sql, queue, settings,
            successes.get(queue, 0), failures.get(queue, 0), now,
        )
        if changes:
            tx.wake(queue)


def _defer_one(
    tx: Transaction,
    queue: str,
    settings: QueueSettings,
    entry: dict[str, Any],
    now: float,
) -> EntryResult:
    """Bring a message back after the entry's retry_after_s and give its attempt back.

    The task asked for the delay (RetryAfter), so the attempt is not
    counted against max_attempts, but the circuit breaker counts a failure.
    A message whose cancel was requested while it ran is finished as
    cancelled instead, as any nack of it is.
    """
    row, error = _find_lease(tx.conn, queue, entry, now)
    if row is None:
        return error  # type: ignore[return-value]
    if row[3]:
        plain = {key: value for key, value in entry.items() if key != "retry_after_s"}
        return _nack_one(tx, queue, settings, plain, now)
    delay_s = entry["retry_after_s"]
    tx.count_failure(queue)
    tx.conn.execute(flow_sql.DEFER_MESSAGE, (now + delay_s, entry.get("error"), row[0]))
    tx.wake(queue)
    return flow_rows.deferred_result(entry["id"], queue, delay_s)


def _retry(
    tx: Transaction, queue: str, seq: int, delay_s: float, error: str | None, now: float
) -> None:
    tx.count_failure(queue)
    state = "delayed" if delay_s > 0 else "ready"
    tx.conn.execute(sql.RETRY_MESSAGE, (state, now + delay_s, error, seq))
    # Waiting long polls recompute when the next delayed message is due, so
    # a retry sooner than their next check is not missed.
    tx.wake(queue)


def _dead_letter(
    tx: Transaction,
    queue: str,
    settings: QueueSettings,
    seq: int,
    error: str | None,
    now: float,
) -> str:
    tx.count_failure(queue)
    dlq = settings.dead_letter_queue or dlq_name_for(queue)
    dlq_info = _select_queue(tx.conn, dlq)
    if dlq_info is None:
        dlq_info = _insert_queue(
            tx.conn, dlq, QueueSettings(dead_letter_queue=dlq, retention_s=DLQ_RETENTION_S), now
        )
    expiry = now + dlq_info.settings["retention_s"]
    tx.conn.execute(sql.DEAD_LETTER_MESSAGE, (dlq, queue, error, expiry, now, seq))
    sqlite_runs.extend_logs(tx.conn, seq, expiry)
    # The group's next message may now be deliverable.
    tx.wake(queue)
    return dlq


def _find_lease(
    conn: sqlite3.Connection, queue: str, entry: dict[str, Any], now: float
) -> tuple[tuple | None, EntryResult | None]:
    """Return the leased row, or the error result that explains its absence."""
    message_id = entry["id"]
    row = conn.execute(
        sql.SELECT_LEASED, (message_id, queue, entry["receipt"], now)
    ).fetchone()
    if row is not None:
        return row, None
    found = conn.execute(sql.SELECT_MESSAGE_QUEUE, (message_id,)).fetchone()
    return None, outcomes.missing_lease_result(message_id, queue, found)


def _ack_one(tx: Transaction, queue: str, entry: dict[str, Any], now: float) -> EntryResult:
    row, error = _find_lease(tx.conn, queue, entry, now)
    if row is None:
        return error  # type: ignore[return-value]
    sqlite_runs.keep_attempt_report(tx.conn, queue, entry, row, now)
    tx.conn.execute(sql.DELETE_MESSAGE, (row[0],))
    _store_result(tx.conn, queue, entry, now)
    sqlite_runs.finish_logs(tx.conn, entry["id"], entry.get("result_ttl_s"), now)
    # Acking the head of a FIFO group lets its next message go out.
    tx.wake(queue)
    return EntryResult(entry["id"], True, outcome="acked")


def _ack_all(
    tx: Transaction, queue: str, entries: list[dict[str, Any]], now: float
) -> list[EntryResult]:
    """Ack a batch with one DELETE, then explain the entries it did not match."""
    # Text, not bytes: SQLite 3.45 and later read a BLOB argument as JSONB.
    pairs = orjson.dumps([[entry["id"], entry["receipt"]] for entry in entries]).decode()
    acked = dict(tx.conn.execute(sql.ACK_LEASED, (pairs, queue, now)).fetchall())
    results = outcomes.acked_results(
        queue, entries, set(acked),
        lambda message_id: tx.conn.execute(sql.SELECT_MESSAGE_QUEUE, (message_id,)).fetchone(),
    )
    for entry in entries:
        if entry["id"] in acked:
            _store_result(tx.conn, queue, entry, now)
            # Only a message delivered before may have logs of earlier attempts.
            if acked[entry["id"]] > 1:
                sqlite_runs.finish_logs(tx.conn, entry["id"], entry.get("result_ttl_s"), now)
    if acked:
        # Acking the head of a FIFO group lets its next message go out.
        tx.wake(queue)
    return results


def _step_poster(tx: Transaction, now: float) -> workflows.StepPoster:
    """Return what posts workflow step messages in this transaction, as `post` does."""
    return workflows.StepPoster(
        lambda queue: _require_settings(tx.conn, queue),
        lambda queue, message: _post(tx, queue, [message], now),
    )


def _store_result(
    conn: sqlite3.Connection, queue: str, entry: dict[str, Any], now: float
) -> None:
    ttl_s = entry.get("result_ttl_s")
    if not ttl_s:
        return
    value = entry.get("result")
    blob = None if value is None else orjson.dumps(value)
    conn.execute(
        sql.INSERT_RESULT,
        (entry["id"], queue, entry.get("status", "succeeded"), blob,
         entry.get("error"), now, now + ttl_s, entry.get("progress"),
         entry.get("progress_text")),
    )


def _nack_one(
    tx: Transaction,
    queue: str,
    settings: QueueSettings,
    entry: dict[str, Any],
    now: float,
) -> EntryResult:
    row, error = _find_lease(tx.conn, queue, entry, now)
    if row is None:
        return error  # type: ignore[return-value]
    seq, count, max_attempts, cancel_requested, _expires_at = row
    message_id = entry["id"]
    reason = entry.get("error")
    action, delay_s = outcomes.nack_action(settings, max_attempts, count, entry)
    action = run_records.nack_action_after_cancel(action, bool(cancel_requested))
    sqlite_runs.keep_attempt_report(tx.conn, queue, entry, row, now)

    if action == outcomes.CANCELLED:
        tx.conn.execute(sql.DELETE_MESSAGE, (seq,))
        cancelled = run_records.cancelled_nack_entry(entry)
        _store_result(tx.conn, queue, cancelled, now)
        sqlite_runs.finish_logs(tx.conn, message_id, cancelled["result_ttl_s"], now)
        tx.wake(queue)
        run_records.log_cancelled(message_id, queue, f"after attempt {count}")
    elif action == outcomes.RELEASED:
        tx.conn.execute(sql.RELEASE_MESSAGE, (now, seq))
        tx.wake(queue)
    elif action == outcomes.DEAD:
        dlq = _dead_letter(tx, queue, settings, seq, reason, now)
        _store_result(tx.conn, queue, {**entry, "status": "dead"}, now)
        if entry.get("result_ttl_s"):
            sqlite_runs.extend_logs(tx.conn, seq, now + entry["result_ttl_s"])
        outcomes.log_nack_dead_letter(message_id, queue, dlq, count, reason)
    else:
        _retry(tx, queue, seq, delay_s, reason, now)
    return outcomes.nack_result(message_id, action, delay_s)


def _touch_one(
    conn: sqlite3.Connection,
    queue: str,
    settings: QueueSettings,
    entry: dict[str, Any],
    now: float,
) -> EntryResult:
    row, error = _find_lease(conn, queue, entry, now)
    if row is None:
        return error  # type: ignore[return-value]
    lease_s = entry.get("visibility_timeout_s") or settings.visibility_timeout_s
    cancel_requested = conn.execute(sql.EXTEND_LEASE, (now + lease_s, row[0])).fetchone()[0]
    return EntryResult(
        entry["id"], True, outcome="touched", reserved_until=now + lease_s,
        cancel_requested=True if cancel_requested else None,
    )


def _dead_rows_by_id(
    conn: sqlite3.Connection, dlq: str, message_ids: Iterable[str]
) -> list[tuple]:
    _require_queue(conn, dlq)
    rows = []
    for message_id in dict.fromkeys(message_ids):
        row = conn.execute(sql.SELECT_DEAD_BY_ID, (dlq, message_id)).fetchone()
        if row is None:
            raise MessageNotFound(
                f"no dead message with id {message_id!r} is in DLQ {dlq!r}; "
                "nothing was redriven"
            )
        rows.append(row)
    return sorted(rows)


def _redrive_rows(tx: Transaction, rows: list[tuple], now: float) -> int:
    moved = 0
    for seq, message_id, source in rows:
        target = _select_queue(tx.conn, source) if source else None
        if target is None:
            logger.warning(
                "Dead message %s stays in its DLQ: source queue %r no longer exists",
                message_id, source,
            )
            continue
        expiry = now + target.settings["retention_s"]
        tx.conn.execute(sql.REDRIVE_MESSAGE, (source, now, expiry, seq))
        tx.wake(source)
        moved += 1
    return moved


def _message_from_row(row: tuple) -> Message:
    body = row[3] if row[4] else orjson.loads(row[3])
    headers = orjson.loads(row[5]) if row[5] else {}
    dedup_id, idempotency_key = split_stored_key(row[8])
    return Message(
        id=row[0],
        queue=row[1],
        state=row[2],
        body=body,
        headers=headers,
        priority=row[6],
        group=row[7],
        dedup_id=dedup_id,
        posted_at=row[9],
        due_at=row[10],
        receive_count=row[11],
        max_attempts=row[12],
        last_error=row[13],
        source_queue=row[14],
        expires_at=row[15],
        reserved_until=row[16],
        receipt=row[17],
        idempotency_key=idempotency_key,
        cancel_requested=bool(row[18]),
        progress=row[19],
        progress_text=row[20],
        progress_at=row[21],
        completed_at=row[22],
        completed_result=None if row[23] is None else orjson.loads(row[23]),
    )
