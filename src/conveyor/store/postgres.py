"""The PostgreSQL store: several servers share one database.

Each write runs as one READ COMMITTED transaction on a small thread pool and
returns a future that resolves after the commit, like the SQLite store.
Row locks (`FOR UPDATE`, with `SKIP LOCKED` on the reserve path) enforce the
rules that must hold across servers. FIFO groups also use transaction-level
advisory locks. A post holds its groups' locks until it commits, so seqs
within a group follow commit order. A reserve takes a group's lock before it
checks that group's head again in a fresh snapshot.

Long polls in other processes learn about commits through LISTEN/NOTIFY
(see `postgres_listener.py`), or only at their next re-check when the URL
says `listen=off` (see `postgres_options.py`). Schema versions and
migrations are in `postgres_schema.py`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, TypeVar

import orjson
import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

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
    PostResult,
    QueueInfo,
    QueueStats,
    TaskResult,
)
from ..models import BreakerReport, RedriveJob
from ..policy import PreparedMessage
from ..settings import QueueSettings, dlq_name_for, merge_settings
from . import flow_rows, outcomes, postgres_runs, run_records
from . import postgres_schema as schema_versions
from . import postgres_flow_sql as flow_sql
from . import redrive_jobs
from . import postgres_schedule_sql as schedule_sql
from . import postgres_sql as sql
from .schedules import ScheduleStore, ScheduleTransaction, prepare_all
from . import postgres_workflow_sql as workflow_sql
from . import postgres_workflows, workflows
from .postgres_workflows import PostgresWorkflows
from .postgres_listener import NotificationListener
from .postgres_maintenance import TableMaintenance
from .postgres_options import StoreOptions, parse_store_url
from .sqlite import DLQ_RETENTION_S, MAX_RESPONSE_BODY_BYTES, REDRIVE_CHUNK, earliest

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
# The pool retries a failed connection with doubling pauses (1, 2, 4 s...)
# until this many seconds have passed, then waits for the next request to
# try again. A short limit keeps those pauses short: with psycopg_pool's
# default of 300 s, the first request after a 30 s outage succeeded only
# 24 s after PostgreSQL was back (measured here).
RECONNECT_GIVE_UP_S = 5.0
# A transaction that PostgreSQL aborts for a deadlock or a serialization
# failure is run again from the start, up to this many times in all.
MAX_TRANSACTION_ATTEMPTS = 5
# A FIFO reserve looks at this many candidate group heads per message asked
# for, because another reserve may hold some of those groups.
FIFO_CANDIDATES_PER_MESSAGE = 4

T = TypeVar("T")


class Transaction:
    """The context an operation runs in: the connection, and queues to wake after commit.

    `failures` counts the operation's failed attempts per queue, which the
    store records for the queues' circuit breakers before it commits.
    """

    __slots__ = ("conn", "failures", "woken_queues")

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.woken_queues: set[str] = set()
        self.failures: dict[str, int] = {}

    def wake(self, queue_name: str) -> None:
        """Wake long polls on the queue once the transaction commits."""
        self.woken_queues.add(queue_name)

    def count_failure(self, queue_name: str) -> None:
        """Count a failed attempt (a retry or a dead-letter) of a message of the queue."""
        self.failures[queue_name] = self.failures.get(queue_name, 0) + 1

    def take_failures(self) -> dict[str, int]:
        """Return the failures counted so far and start counting from zero."""
        failures, self.failures = self.failures, {}
        return failures

    def execute(self, query: str, params: Iterable[Any] | None = None) -> psycopg.Cursor:
        return self.conn.execute(query, params, prepare=True)


class PostgresStore(PostgresWorkflows):
    """Stores queues and messages in one schema of a PostgreSQL database."""

    def __init__(self, url: str, on_commit: Callable[[set[str]], None]) -> None:
        """Open the store a postgresql:// URL names, with its Conveyor parameters.

        Raises ValidationError for an invalid Conveyor parameter and
        StoreUnavailable when the database or its schema cannot be used.
        """
        conninfo, self.options = parse_store_url(url)
        # The engine's long polls re-check the store this often.
        self.poll_interval_s = self.options.poll_interval_s
        self._on_commit = on_commit
        self._description = describe_target(conninfo)
        # Writes run on write_threads threads, each on one pooled connection,
        # so the rest of the pool is always free for reads.
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=self.options.pool_size,
            timeout=CONNECT_TIMEOUT_S,
            reconnect_timeout=RECONNECT_GIVE_UP_S,
            open=False,
            name="conveyor",
            kwargs=connection_arguments(self.options),
        )
        try:
            _check_connection(conninfo, self.options)
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            self.schema = self._prepare_schema()
        except (PoolTimeout, psycopg.Error) as exc:
            self._pool.close()
            raise StoreUnavailable(
                f"could not open the PostgreSQL store at {self._description}: {exc}; "
                "check that the server runs, the database exists and the user may "
                "connect and create tables"
            ) from exc
        except Exception:
            self._pool.close()
            raise
        self._group_lock_prefix = f"{self.schema}\0".encode()
        self._sender = secrets.token_hex(8)
        self._channel = notification_channel(self.schema)
        self._executor = ThreadPoolExecutor(
            max_workers=self.options.write_threads,
            thread_name_prefix="conveyor-postgres-writer",
        )
        self._closed = False
        self._close_lock = threading.Lock()
        self.schedules = ScheduleStore(
            schedule_sql,
            self._write_schedule,
            lambda read: self._read(lambda conn: read(conn.execute)),
        )
        self._listener: NotificationListener | None = None
        if self.options.listen:
            self._listener = NotificationListener(
                conninfo, self._channel, self._sender, on_commit, self._description
            )
        self._maintenance: TableMaintenance | None = None
        if self.options.maintenance:
            self._maintenance = TableMaintenance(conninfo, self._description)

    def close(self) -> None:
        """Finish queued writes, then stop the listener and close the connections."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._executor.shutdown(wait=True)
        if self._listener is not None:
            self._listener.close()
        if self._maintenance is not None:
            self._maintenance.close()
        self._pool.close()

    # Schema ------------------------------------------------------------

    def _prepare_schema(self) -> str:
        """Create the tables in an empty schema, or check the version of existing ones.

        A server never upgrades a schema: `conveyor migrate` does, so that
        an operator decides when. The schema lock makes servers that start
        together on an empty schema create it once.
        """
        with self._pool.connection() as conn, conn.transaction():
            conn.execute(sql.LOCK_SCHEMA, (sql.SCHEMA_LOCK_KEY,))
            state = schema_versions.read_state(conn, self._description)
            if state.version is None:
                schema_versions.create_latest(conn, state.schema, self._description)
                return state.schema
        schema_versions.check_version(state, self._description)
        return state.schema

    # Running transactions ----------------------------------------------

    def _submit(self, operation: Callable[[Transaction], T]) -> Future:
        """Queue a write; the future resolves after its commit."""
        if self._closed:
            future: Future = Future()
            future.set_exception(StoreUnavailable("the store is closed"))
            return future
        try:
            return self._executor.submit(self._run_write, operation)
        except RuntimeError:
            future = Future()
            future.set_exception(StoreUnavailable("the store is closed"))
            return future

    def _run_write(self, operation: Callable[[Transaction], T]) -> T:
        """Run an operation in one transaction, retrying deadlocks; wake after commit."""
        for attempt in range(1, MAX_TRANSACTION_ATTEMPTS + 1):
            try:
                result, woken = self._run_transaction(operation)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                if attempt == MAX_TRANSACTION_ATTEMPTS:
                    raise StoreUnavailable(
                        f"the PostgreSQL transaction failed {attempt} times on "
                        f"conflicts with concurrent ones; retry later: {exc}"
                    ) from exc
                logger.info("Transaction conflict, running it again (attempt %d): %s",
                            attempt + 1, exc)
                continue
            except PoolTimeout as exc:
                raise StoreUnavailable(
                    f"no PostgreSQL connection to {self._description} became free "
                    f"within {CONNECT_TIMEOUT_S:g}s; retry later"
                ) from exc
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(
                    f"the PostgreSQL store at {self._description} failed: {exc}"
                ) from exc
            if woken:
                self._on_commit(woken)
            return result
        raise AssertionError("unreachable")

    def _run_transaction(self, operation: Callable[[Transaction], T]) -> tuple[T, set[str]]:
        with self._pool.connection() as conn, conn.transaction():
            tx = Transaction(conn)
            result = operation(tx)
            for queue in sorted(tx.woken_queues):
                tx.execute(sql.NOTIFY, (self._channel, f"{self._sender} {queue}"))
        return result, tx.woken_queues

    def _read(self, operation: Callable[[psycopg.Connection], T]) -> T:
        """Run a read in one transaction, so its queries see one snapshot."""
        try:
            with self._pool.connection() as conn, conn.transaction():
                return operation(conn)
        except PoolTimeout as exc:
            raise StoreUnavailable(
                f"no PostgreSQL connection to {self._description} became free "
                f"within {CONNECT_TIMEOUT_S:g}s; retry later"
            ) from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(
                f"the PostgreSQL store at {self._description} failed: {exc}"
            ) from exc

    def _group_lock_key(self, queue: str, group: bytes) -> int:
        """Return the advisory lock key of a FIFO group in this schema.

        A 64-bit hash: two groups that collide only share a lock, which
        serializes them but breaks no rule.
        """
        digest = hashlib.blake2b(
            self._group_lock_prefix + queue.encode() + b"\0" + group, digest_size=8
        ).digest()
        return int.from_bytes(digest, "big", signed=True)

    # Queues ------------------------------------------------------------

    def create_queue(
        self, name: str, settings: QueueSettings, now: float, exist_ok: bool
    ) -> Future:
        def operation(tx: Transaction) -> QueueInfo:
            info = _insert_queue(tx, name, settings, now)
            if info is None:
                if exist_ok:
                    return _require_queue(tx, name)
                raise QueueAlreadyExists(
                    f"queue {name!r} exists already; update it or pick another name"
                )
            _ensure_dlq(tx, info, now)
            return info

        return self._submit(operation)

    def update_queue(self, name: str, changes: dict[str, Any], now: float) -> Future:
        def operation(tx: Transaction) -> QueueInfo:
            current = _require_queue(tx, name, lock=" FOR UPDATE")
            _check_type_unchanged(name, current, changes)
            settings = merge_settings(current.settings, changes)
            tx.execute(sql.UPDATE_QUEUE, (_dump(settings.to_dict()), now, name))
            if current.settings.get("breaker") and settings.breaker is None:
                flow_rows.reset_breaker(tx.execute, flow_sql, name)
            info = QueueInfo(name, settings.to_dict(), current.created_at, now)
            _ensure_dlq(tx, info, now)
            tx.wake(name)
            return info

        return self._submit(operation)

    def delete_queue(self, name: str) -> Future:
        def operation(tx: Transaction) -> int:
            _require_queue(tx, name, lock=" FOR UPDATE")
            removed = tx.execute(sql.DELETE_QUEUE_MESSAGES, (name,)).rowcount
            tx.execute(sql.DELETE_QUEUE_DEDUP, (name,))
            flow_rows.delete_queue(tx.execute, flow_sql, name)
            tx.execute(sql.DELETE_QUEUE, (name,))
            tx.wake(name)
            return removed

        return self._submit(operation)

    def purge_queue(self, name: str) -> Future:
        def operation(tx: Transaction) -> int:
            _require_queue(tx, name, lock=" FOR UPDATE")
            return tx.execute(sql.DELETE_QUEUE_MESSAGES, (name,)).rowcount

        return self._submit(operation)

    def get_queue(self, name: str) -> QueueInfo:
        return self._read(lambda conn: _require_queue(conn, name))

    def list_queues(self) -> list[QueueInfo]:
        rows = self._read(lambda conn: conn.execute(sql.SELECT_QUEUES).fetchall())
        return [_queue_from_row(row) for row in rows]

    # Messages ----------------------------------------------------------

    def post(self, queue: str, messages: list[PreparedMessage], now: float) -> Future:
        return self._submit(lambda tx: self._post(tx, queue, messages, now))

    def _post(
        self, tx: Transaction, queue: str, messages: list[PreparedMessage], now: float
    ) -> list[PostResult]:
        """Post messages to a queue in the caller's transaction, all or nothing."""
        settings = _require_settings(tx, queue)
        policy.check_for_queue(queue, settings, messages)
        if settings.is_fifo:
            groups = {_encode_text(m.group) for m in messages}
            keys = sorted({self._group_lock_key(queue, g) for g in groups if g is not None})
            tx.execute(sql.LOCK_GROUPS, (keys,))
        results, rows = _prepare_rows(tx, queue, settings, messages, now)
        if rows:
            tx.execute(sql.INSERT_MESSAGES, (queue, now, *map(list, zip(*rows))))
        tx.wake(queue)
        return results

    def reserve(
        self, queue: str, max_messages: int, visibility_timeout_s: float | None, now: float
    ) -> Future:
        def operation(tx: Transaction) -> list[Message]:
            settings = _require_settings(tx, queue)
            tx.execute(sql.PROMOTE_DUE, (queue, now))
            _expire_leases(tx, sql.SELECT_EXPIRED_LEASES, (queue, now), now)
            _record_outcomes(tx, now, {queue: settings})
            limit, ticket = flow_rows.plan_reserve(
                tx.execute, flow_sql, queue, settings, max_messages, now
            )
            seqs: list[int] = []
            if limit and settings.is_fifo:
                seqs = self._pick_fifo_heads(tx, queue, settings, limit)
            elif limit:
                seqs = _within_budget(tx.execute(sql.SELECT_READY, (queue, limit)))
            lease_s = visibility_timeout_s or settings.visibility_timeout_s
            messages = _lease(tx, seqs, now + lease_s)
            flow_rows.finish_reserve(
                tx.execute, flow_sql, queue, settings, ticket, len(messages), now
            )
            return messages

        return self._submit(operation)

    def _pick_fifo_heads(
        self, tx: Transaction, queue: str, settings: QueueSettings, max_messages: int
    ) -> list[int]:
        """Return the seqs of up to max_messages deliverable messages, each group locked.

        A group whose lock another transaction holds is skipped, not waited
        for. Each message is checked again after the lock is taken, because
        the candidate query ran before it and may have missed a commit.
        """
        limit = max_messages * FIFO_CANDIDATES_PER_MESSAGE
        if settings.group_max_in_flight == 1:
            candidates = tx.execute(sql.SELECT_FIFO_CANDIDATES, (queue, limit)).fetchall()
            check, extra = sql.CHECK_FIFO_HEAD, ()
        else:
            offset = settings.group_max_in_flight - 1
            candidates = tx.execute(
                sql.SELECT_FIFO_GROUP_CANDIDATES, (queue, offset, limit)
            ).fetchall()
            check, extra = sql.CHECK_FIFO_GROUP_MESSAGE, (offset,)
        seqs: list[int] = []
        total = 0
        for seq, group in candidates:
            if len(seqs) == max_messages:
                break
            key = self._group_lock_key(queue, group)
            if not tx.execute(sql.TRY_LOCK_GROUP, (key,)).fetchone()[0]:
                continue
            row = tx.execute(check, (seq, queue, *extra)).fetchone()
            if row is None:
                continue
            total += row[1]
            if seqs and total > MAX_RESPONSE_BODY_BYTES:
                break
            seqs.append(seq)
        return seqs

    def ack(self, queue: str, entries: list[dict[str, Any]], now: float) -> Future:
        def operation(tx: Transaction) -> list[EntryResult]:
            info = _require_queue(tx, queue, lock=" FOR KEY SHARE")
            if not outcomes.can_ack_set_wise(entries):
                # Steps are found before the acks delete their messages, which
                # contain the receive counts the steps keep as attempts.
                steps = postgres_workflows.find_steps(tx, entries)
                results = [_ack_one(tx, queue, entry, now) for entry in entries]
            else:
                results, steps = _ack_all(tx, queue, entries, now)
            postgres_workflows.finish_acked_steps(
                tx, entries, results, steps, lambda: self._step_poster(tx, now), now
            )
            if info.settings.get("breaker"):
                acked = sum(1 for result in results if result.ok)
                settings = QueueSettings(**info.settings)
                _record_outcomes(tx, now, {queue: settings}, {queue: acked})
            return results

        return self._submit(operation)

    def nack(self, queue: str, entries: list[dict[str, Any]], now: float) -> Future:
        def operation(tx: Transaction) -> list[EntryResult]:
            settings = _require_settings(tx, queue)
            results = []
            for entry in entries:
                if entry.get("retry_after_s"):
                    results.append(_defer_one(tx, queue, settings, entry, now))
                else:
                    results.append(_nack_one(tx, queue, settings, entry, now))
            _record_outcomes(tx, now, {queue: settings})
            return results

        return self._submit(operation)

    def touch(self, queue: str, entries: list[dict[str, Any]], now: float) -> Future:
        def operation(tx: Transaction) -> list[EntryResult]:
            settings = _require_settings(tx, queue)
            return [_touch_one(tx, queue, settings, entry, now) for entry in entries]

        return self._submit(operation)

    # Task runs ---------------------------------------------------------

    def complete(self, queue: str, entries: list[dict[str, Any]], now: float) -> Future:
        """Store completion records of leased messages; see run_records.py."""
        return self._submit_leased(queue, entries, now, postgres_runs.complete_leased)

    def progress(self, queue: str, entries: list[dict[str, Any]], now: float) -> Future:
        """Store the progress of leased messages; results carry cancel_requested."""
        return self._submit_leased(queue, entries, now, postgres_runs.record_progress)

    def cancel(self, message_id: str, result_ttl_s: float | None, now: float) -> Future:
        """Cancel a message by id; see run_records.py for what each state does."""
        return self._submit(
            lambda tx: postgres_runs.cancel(tx, message_id, result_ttl_s, now)
        )

    def get_logs(self, message_id: str, attempt: int | None, now: float) -> list[AttemptLog]:
        return self._read(
            lambda conn: postgres_runs.select_logs(conn, message_id, attempt, now)
        )

    def _submit_leased(
        self,
        queue: str,
        entries: list[dict[str, Any]],
        now: float,
        apply: Callable[..., EntryResult],
    ) -> Future:
        """Apply `apply` to each entry whose receipt holds; explain the others."""

        def operation(tx: Transaction) -> list[EntryResult]:
            _require_queue(tx, queue, lock=" FOR KEY SHARE")
            results = []
            for entry in entries:
                row, error = _find_lease(tx, queue, entry, now)
                results.append(error if row is None else apply(tx, queue, entry, row, now))
            return results

        return self._submit(operation)

    def redrive(
        self, dlq: str, message_ids: list[str] | None, limit: int | None, now: float
    ) -> int:
        """Move dead messages back to their source queues, in chunks.

        Each chunk is its own transaction, so a crash part-way leaves every
        message either dead in the DLQ or back in its source, never both.
        """
        if message_ids is not None:
            return self._submit(
                lambda tx: _redrive_rows(tx, _dead_rows_by_id(tx, dlq, message_ids), now)
            ).result()

        moved = 0
        after_seq = 0
        while limit is None or moved < limit:
            chunk = REDRIVE_CHUNK if limit is None else min(REDRIVE_CHUNK, limit - moved)

            def operation(tx: Transaction, chunk: int = chunk, after: int = after_seq) -> tuple:
                _require_queue(tx, dlq, lock=" FOR KEY SHARE")
                rows = tx.execute(sql.SELECT_DEAD, (dlq, after, chunk)).fetchall()
                last_seq = rows[-1][0] if rows else after
                return _redrive_rows(tx, rows, now), len(rows), last_seq

            count, fetched, after_seq = self._submit(operation).result()
            moved += count
            if fetched < chunk:
                break
        return moved

    def sweep(self, now: float) -> Future:
        """Expire leases everywhere and apply retention, in one transaction."""

        def operation(tx: Transaction) -> dict[str, int]:
            expired = _expire_leases(tx, sql.SELECT_ALL_EXPIRED_LEASES, (now,), now)
            _record_outcomes(tx, now, {})
            flow_rows.delete_old_rows(tx.execute, flow_sql, now)
            redrive_jobs.delete_old_jobs(tx.execute, flow_sql, now)
            workflows.delete_old_workflows(tx.execute, workflow_sql, now)
            removed = tx.execute(sql.DELETE_EXPIRED_MESSAGES, (now,)).rowcount
            tx.execute(sql.DELETE_EXPIRED_DEDUP, (now,))
            tx.execute(sql.DELETE_EXPIRED_RESULTS, (now,))
            tx.execute(sql.DELETE_EXPIRED_LOGS, (now,))
            return {"expired_leases": expired, "removed": removed}

        return self._submit(operation)

    # Redrive jobs ------------------------------------------------------

    def create_redrive_job(self, dlq: str, now: float, **options: Any) -> Future:
        """Store an active redrive job of a DLQ; see redrive_jobs.create_job."""

        def operation(tx: Transaction) -> RedriveJob:
            _require_queue(tx, dlq, lock=" FOR KEY SHARE")
            return redrive_jobs.create_job(tx.execute, flow_sql, dlq, now, **options)

        return self._submit(operation)

    def list_redrive_jobs(
        self, dlq: str | None, state: str | None, limit: int
    ) -> list[RedriveJob]:
        return self._read(
            lambda conn: redrive_jobs.list_jobs(conn.execute, flow_sql, dlq, state, limit)
        )

    def get_redrive_job(self, job_id: str) -> RedriveJob:
        return self._read(lambda conn: redrive_jobs.get_job(conn.execute, flow_sql, job_id))

    def cancel_redrive_job(self, job_id: str, now: float) -> Future:
        return self._submit(
            lambda tx: redrive_jobs.cancel_job(tx.execute, flow_sql, job_id, now)
        )

    def claim_redrive_jobs(self, owner: str, limit: int, lease_s: float, now: float) -> Future:
        return self._submit(
            lambda tx: redrive_jobs.claim_jobs(tx.execute, flow_sql, owner, limit, lease_s, now)
        )

    def run_redrive_chunk(
        self, job_id: str, owner: str, max_messages: int, lease_s: float, now: float
    ) -> Future:
        """Run one chunk of a job in one transaction; see redrive_jobs.run_chunk."""

        def operation(tx: Transaction) -> RedriveJob:
            return redrive_jobs.run_chunk(
                tx.execute, flow_sql, job_id, owner, max_messages, lease_s, now,
                dlq_exists=lambda name: _select_queue(tx, name) is not None,
                move_rows=lambda rows: _redrive_rows(tx, rows, now),
            )

        return self._submit(operation)

    def release_redrive_jobs(self, owner: str) -> Future:
        return self._submit(lambda tx: redrive_jobs.release_jobs(tx.execute, flow_sql, owner))

    # Schedules ---------------------------------------------------------

    def _write_schedule(self, operation: Callable[[ScheduleTransaction], T]) -> Future:
        """Run a schedule operation in a write transaction that posts like `post`."""

        def run(tx: Transaction) -> T:
            return operation(ScheduleTransaction(
                tx.execute,
                lambda queue, messages, now: self._post(tx, queue, prepare_all(messages), now),
                lambda queue, message: policy.check_for_queue(
                    queue, _require_settings(tx, queue), prepare_all([message])
                ),
            ))

        return self._submit(run)

    def _step_poster(self, tx: Transaction, now: float) -> workflows.StepPoster:
        """Return what posts workflow step messages in this transaction, as `post` does."""
        return workflows.StepPoster(
            lambda queue: _require_settings(tx, queue),
            lambda queue, message: self._post(tx, queue, [message], now),
        )

    # Circuit breaker ---------------------------------------------------

    def force_breaker(self, queue: str, mode: str, now: float) -> Future:
        """Force a queue's breaker open or closed, or give it back to automatic control."""

        def operation(tx: Transaction) -> None:
            settings = _require_settings(tx, queue)
            flow_rows.check_has_breaker(queue, settings)
            flow_rows.force_breaker(tx.execute, flow_sql, queue, settings, mode, now)
            tx.wake(queue)

        return self._submit(operation)

    def breaker_report(self, queue: str, limit: int, now: float) -> BreakerReport:
        def read(conn: psycopg.Connection) -> BreakerReport:
            settings = QueueSettings(**_require_queue(conn, queue).settings)
            return flow_rows.breaker_report(
                conn.execute, flow_sql, queue, settings, limit, now
            )

        return self._read(read)

    # Reads -------------------------------------------------------------

    def peek(self, queue: str, limit: int, offset: int, state: str | None) -> list[Message]:
        def read(conn: psycopg.Connection) -> list[Message]:
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

        return self._read(read)

    def get_message(self, message_id: str) -> Message:
        row = None
        if "\0" not in message_id:
            row = self._read(
                lambda conn: conn.execute(sql.SELECT_MESSAGE, (message_id,)).fetchone()
            )
        if row is None:
            raise MessageNotFound(f"no message with id {message_id!r} is stored")
        return _message_from_row(row)

    def get_result(self, message_id: str, now: float) -> TaskResult | None:
        if "\0" in message_id:
            return None
        row = self._read(
            lambda conn: conn.execute(sql.SELECT_RESULT, (message_id, now)).fetchone()
        )
        if row is None:
            return None
        value = None if row[3] is None else orjson.loads(row[3])
        return TaskResult(
            row[0], row[1], row[2], value, _decode_text(row[4]), row[5], row[6],
            progress=row[7], progress_text=_decode_text(row[8]),
        )

    def stats(self, queue: str, now: float) -> QueueStats:
        def read(conn: psycopg.Connection) -> QueueStats:
            info = _require_queue(conn, queue)
            stats = QueueStats(queue=queue)
            for state, count, oldest in conn.execute(sql.SELECT_STATE_COUNTS, (now, queue)):
                setattr(stats, state, count)
                if state == "ready" and oldest is not None:
                    stats.oldest_ready_age_s = max(now - oldest, 0.0)
            stats.dead += conn.execute(sql.SELECT_DEAD_FROM_SOURCE, (queue,)).fetchone()[0]
            settings = QueueSettings(**info.settings)
            flow_rows.add_stats(conn.execute, flow_sql, settings, stats, now)
            return stats

        return self._read(read)

    def next_change_at(self, queue: str, now: float) -> float | None:
        """Return the earliest time a delayed message or a lease comes due.

        Flow control's next wake-up (a token, the end of a cool-down) counts
        only while it lies after `now`.
        """
        due, lease_end, wake_at = self._read(
            lambda conn: conn.execute(
                sql.SELECT_NEXT_CHANGE, (queue, queue, queue)
            ).fetchone()
        )
        return earliest(due, lease_end, wake_at if wake_at and wake_at > now else None)


# Names and versions ------------------------------------------------------


def describe_target(conninfo: str) -> str:
    """Return 'host:port/dbname' for messages, leaving out the password."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "the configured PostgreSQL server"
    host = params.get("host") or "the default host"
    port = params.get("port") or "5432"
    return f"postgresql://{host}:{port}/{params.get('dbname') or ''}"


def _check_connection(conninfo: str, options: StoreOptions) -> None:
    """Connect once, so that a wrong URL fails at once with PostgreSQL's reason.

    The pool would retry a failing connection until its timeout and then
    report only that it timed out.
    """
    arguments = connection_arguments(options)
    if "connect_timeout" not in conninfo_to_dict(conninfo):
        arguments["connect_timeout"] = int(CONNECT_TIMEOUT_S)
    psycopg.connect(conninfo, **arguments).close()


def connection_arguments(options: StoreOptions) -> dict[str, Any]:
    """Return psycopg.connect's keyword arguments for the store's options.

    A prepare_threshold of None turns prepared statements off, even for
    the queries that Transaction.execute asks to prepare.
    """
    if options.prepare:
        return {}
    return {"prepare_threshold": None}


def notification_channel(schema: str) -> str:
    """Return the LISTEN channel of a schema: at most 63 bytes, like every identifier."""
    return "conveyor_" + hashlib.sha1(schema.encode()).hexdigest()[:16]


# Helpers run inside a transaction ----------------------------------------


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


def _encode_text(value: str | bytes | None) -> bytes | None:
    """Return text as UTF-8 bytes; bytes (an idempotency key) pass unchanged."""
    if value is None or isinstance(value, bytes):
        return value
    return value.encode()


def _decode_text(value: bytes | None) -> str | None:
    return None if value is None else bytes(value).decode()


def _select_queue(
    conn: Transaction | psycopg.Connection, name: str, lock: str = ""
) -> QueueInfo | None:
    row = conn.execute(sql.SELECT_QUEUE + lock, (name,)).fetchone()
    return None if row is None else _queue_from_row(row)


def _queue_from_row(row: tuple) -> QueueInfo:
    return QueueInfo(row[0], orjson.loads(row[1]), row[2], row[3])


def _require_queue(
    conn: Transaction | psycopg.Connection, name: str, lock: str = ""
) -> QueueInfo:
    info = _select_queue(conn, name, lock)
    if info is None:
        raise QueueNotFound(
            f"queue {name!r} does not exist; check the name with 'conveyor queue "
            f"list', or create it with 'conveyor queue create {name}' or POST /v1/queues"
        )
    return info


def _require_settings(tx: Transaction, name: str) -> QueueSettings:
    """Return a queue's settings and hold its row FOR KEY SHARE until commit."""
    return QueueSettings(**_require_queue(tx, name, lock=" FOR KEY SHARE").settings)


def _check_type_unchanged(name: str, current: QueueInfo, changes: dict[str, Any]) -> None:
    """Raise if an update would switch a queue between standard and fifo.

    Messages already stored were checked against the old type, so switching
    would break the delivery order the queue promised.
    """
    new_type = changes.get("type", current.settings["type"])
    if new_type != current.settings["type"]:
        raise ValidationError(
            f"queue {name!r} is a {current.settings['type']} queue and its type "
            f"cannot change to {new_type!r}; create a new queue with that type"
        )


def _insert_queue(
    tx: Transaction, name: str, settings: QueueSettings, now: float
) -> QueueInfo | None:
    """Insert a queue; return None when a queue of that name exists already."""
    if settings.dead_letter_queue is None:
        settings = settings.replace({"dead_letter_queue": dlq_name_for(name)})
    row = tx.execute(sql.INSERT_QUEUE, (name, _dump(settings.to_dict()), now, now)).fetchone()
    if row is None:
        return None
    return QueueInfo(name, settings.to_dict(), now, now)


def _ensure_dlq(tx: Transaction, info: QueueInfo, now: float) -> None:
    """Create the queue's DLQ if it does not exist yet.

    A DLQ keeps messages longer than its source (14 days by default) and is
    its own DLQ, so a message that fails there stays dead in place.
    """
    dlq = info.settings["dead_letter_queue"]
    if dlq is None:
        return
    retention = max(DLQ_RETENTION_S, info.settings["retention_s"])
    settings = QueueSettings(dead_letter_queue=dlq, retention_s=retention)
    _insert_queue(tx, dlq, settings, now)


def _prepare_rows(
    tx: Transaction,
    queue: str,
    settings: QueueSettings,
    messages: list[PreparedMessage],
    now: float,
) -> tuple[list[PostResult], list[tuple]]:
    """Claim dedup ids and return each message's result and the rows to insert."""
    results: list[PostResult] = []
    rows: list[tuple] = []
    for message in messages:
        dedup_id = _encode_text(message.dedup_id)
        if dedup_id is not None:
            expiry = now + settings.dedup_window_s
            claimed = tx.execute(
                sql.CLAIM_DEDUP, (queue, dedup_id, message.id, expiry, now)
            ).fetchone()
            if claimed is None:
                first_id = tx.execute(sql.SELECT_DEDUP, (queue, dedup_id)).fetchone()[0]
                results.append(PostResult(first_id, deduplicated=True))
                continue

        due = policy.due_at(settings, message, now)
        # The columns of INSERT_MESSAGES's arrays; queue and posted_at are
        # the same for the whole batch.
        rows.append((
            message.id,
            "delayed" if due > now else "ready",
            0 if settings.is_fifo else message.priority,
            _encode_text(message.group),
            dedup_id,
            message.body,
            message.is_binary,
            message.headers,
            due,
            message.max_attempts,
            policy.expires_at(settings, message, now),
        ))
        results.append(PostResult(message.id))
    return results, rows


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


def _lease(tx: Transaction, seqs: list[int], reserved_until: float) -> list[Message]:
    """Lease the rows with one statement; return them in the order of seqs."""
    if not seqs:
        return []
    receipts = [secrets.token_urlsafe(16) for _ in seqs]
    rows = tx.execute(sql.LEASE_MESSAGES, (reserved_until, seqs, receipts)).fetchall()
    by_seq = {row[0]: _message_from_row(row[1:]) for row in rows}
    return [by_seq[seq] for seq in seqs]


def _expire_leases(tx: Transaction, query: str, params: tuple, now: float) -> int:
    """Treat each expired lease as a failed attempt: retry later or dead-letter."""
    rows = tx.execute(query, params).fetchall()
    settings_by_queue: dict[str, QueueSettings] = {}
    for seq, message_id, queue, count, max_attempts, cancel_requested, completed_at in rows:
        if queue not in settings_by_queue:
            settings_by_queue[queue] = _require_settings(tx, queue)
        settings = settings_by_queue[queue]
        error = f"lease expired after attempt {count}"
        action, delay_s = run_records.expiry_action(
            *outcomes.expiry_action(settings, max_attempts, count),
            cancel_requested, completed_at is not None,
        )
        if action == run_records.CANCELLED:
            postgres_runs.finish_cancelled(tx, queue, seq, message_id, None, now)
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
    in `settings_by_queue` has its settings read here. Queues are taken in
    name order, so two transactions lock their flow rows in the same order.
    """
    failures = tx.take_failures()
    successes = successes or {}
    for queue in sorted(failures.keys() | successes.keys()):
        settings = settings_by_queue.get(queue)
        if settings is None:
            info = _select_queue(tx, queue, lock=" FOR KEY SHARE")
            if info is None or not info.settings.get("breaker"):
                continue
            settings = QueueSettings(**info.settings)
        changes = flow_rows.record_outcomes(
            tx.execute, flow_sql, queue, settings,
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
    row, error = _find_lease(tx, queue, entry, now)
    if row is None:
        return error  # type: ignore[return-value]
    if row[3]:
        plain = {key: value for key, value in entry.items() if key != "retry_after_s"}
        return _nack_one(tx, queue, settings, plain, now)
    delay_s = entry["retry_after_s"]
    tx.count_failure(queue)
    reason = _encode_text(entry.get("error"))
    tx.execute(flow_sql.DEFER_MESSAGE, (now + delay_s, reason, row[0]))
    tx.wake(queue)
    return flow_rows.deferred_result(entry["id"], queue, delay_s)


def _retry(
    tx: Transaction, queue: str, seq: int, delay_s: float, error: str | None, now: float
) -> None:
    tx.count_failure(queue)
    state = "delayed" if delay_s > 0 else "ready"
    tx.execute(sql.RETRY_MESSAGE, (state, now + delay_s, _encode_text(error), seq))
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
    dlq_info = _select_queue(tx, dlq, lock=" FOR KEY SHARE")
    if dlq_info is None:
        dlq_settings = QueueSettings(dead_letter_queue=dlq, retention_s=DLQ_RETENTION_S)
        _insert_queue(tx, dlq, dlq_settings, now)
        dlq_info = _require_queue(tx, dlq, lock=" FOR KEY SHARE")
    expiry = now + dlq_info.settings["retention_s"]
    tx.execute(sql.DEAD_LETTER_MESSAGE, (dlq, queue, _encode_text(error), expiry, now, seq))
    postgres_runs.extend_logs(tx, seq, expiry)
    # The group's next message may now be deliverable.
    tx.wake(queue)
    return dlq


def _find_lease(
    tx: Transaction, queue: str, entry: dict[str, Any], now: float
) -> tuple[tuple | None, EntryResult | None]:
    """Return the leased row, or the error result that explains its absence."""
    message_id = entry["id"]
    receipt = entry["receipt"]
    # PostgreSQL text cannot contain NUL, and no stored id or receipt does.
    if "\0" in message_id:
        detail = f"no message with id {message_id!r} is in queue {queue!r}"
        return None, EntryResult(message_id, False, "message-not-found", detail)
    row = None
    if "\0" not in receipt:
        row = tx.execute(sql.SELECT_LEASED, (message_id, queue, receipt, now)).fetchone()
    if row is not None:
        return row, None
    found = tx.execute(sql.SELECT_MESSAGE_QUEUE, (message_id,)).fetchone()
    return None, outcomes.missing_lease_result(message_id, queue, found)


def _ack_one(tx: Transaction, queue: str, entry: dict[str, Any], now: float) -> EntryResult:
    row, error = _find_lease(tx, queue, entry, now)
    if row is None:
        return error  # type: ignore[return-value]
    postgres_runs.keep_attempt_report(tx, queue, entry, row, now)
    tx.execute(sql.DELETE_MESSAGE, (row[0],))
    _store_result(tx, queue, entry, now)
    postgres_runs.finish_logs(tx, entry["id"], entry.get("result_ttl_s"), now)
    # Acking the head of a FIFO group lets its next message go out.
    tx.wake(queue)
    return EntryResult(entry["id"], True, outcome="acked")


def _ack_all(
    tx: Transaction, queue: str, entries: list[dict[str, Any]], now: float
) -> tuple[list[EntryResult], list[tuple]]:
    """Ack a batch with one DELETE, then explain the entries it did not match.

    Also returns the (message id, workflow id, step index) rows of the
    acked messages that are workflow steps, which the same statement finds.
    """
    ids = [entry["id"] for entry in entries]
    receipts = [entry["receipt"] for entry in entries]
    rows = tx.execute(workflow_sql.ACK_LEASED_STEPS, (ids, receipts, queue, now)).fetchall()
    acked = {row[0]: row[1] for row in rows}
    steps = [(row[0], row[2], row[3], row[1]) for row in rows if row[2] is not None]
    results = outcomes.acked_results(
        queue, entries, set(acked),
        lambda message_id: tx.execute(sql.SELECT_MESSAGE_QUEUE, (message_id,)).fetchone(),
    )
    _store_results(tx, queue, [e for e in entries if e["id"] in acked], now)
    for entry in entries:
        # Only a message delivered before may have logs of earlier attempts.
        if acked.get(entry["id"], 0) > 1:
            postgres_runs.finish_logs(tx, entry["id"], entry.get("result_ttl_s"), now)
    if acked:
        # Acking the head of a FIFO group lets its next message go out.
        tx.wake(queue)
    return results, steps



def _store_results(
    tx: Transaction, queue: str, entries: list[dict[str, Any]], now: float
) -> None:
    """Store the results of acked entries that have a time to live, in one round trip."""
    rows = [_result_row(queue, entry, now) for entry in entries if entry.get("result_ttl_s")]
    if rows:
        with tx.conn.cursor() as cursor:
            cursor.executemany(sql.UPSERT_RESULT, rows)


def _result_row(queue: str, entry: dict[str, Any], now: float) -> tuple:
    value = entry.get("result")
    blob = None if value is None else orjson.dumps(value)
    return (entry["id"], queue, entry.get("status", "succeeded"), blob,
            _encode_text(entry.get("error")), now, now + entry["result_ttl_s"],
            entry.get("progress"), _encode_text(entry.get("progress_text")))


def _store_result(tx: Transaction, queue: str, entry: dict[str, Any], now: float) -> None:
    if entry.get("result_ttl_s"):
        tx.execute(sql.UPSERT_RESULT, _result_row(queue, entry, now))


def _nack_one(
    tx: Transaction,
    queue: str,
    settings: QueueSettings,
    entry: dict[str, Any],
    now: float,
) -> EntryResult:
    row, error = _find_lease(tx, queue, entry, now)
    if row is None:
        return error  # type: ignore[return-value]
    seq, count, max_attempts, cancel_requested, _expires_at = row
    message_id = entry["id"]
    reason = entry.get("error")
    action, delay_s = outcomes.nack_action(settings, max_attempts, count, entry)
    action = run_records.nack_action_after_cancel(action, cancel_requested)
    postgres_runs.keep_attempt_report(tx, queue, entry, row, now)

    if action == outcomes.CANCELLED:
        tx.execute(sql.DELETE_MESSAGE, (seq,))
        cancelled = run_records.cancelled_nack_entry(entry)
        _store_result(tx, queue, cancelled, now)
        postgres_runs.finish_logs(tx, message_id, cancelled["result_ttl_s"], now)
        tx.wake(queue)
        run_records.log_cancelled(message_id, queue, f"after attempt {count}")
    elif action == outcomes.RELEASED:
        tx.execute(sql.RELEASE_MESSAGE, (now, seq))
        tx.wake(queue)
    elif action == outcomes.DEAD:
        dlq = _dead_letter(tx, queue, settings, seq, reason, now)
        _store_result(tx, queue, {**entry, "status": "dead"}, now)
        if entry.get("result_ttl_s"):
            postgres_runs.extend_logs(tx, seq, now + entry["result_ttl_s"])
        outcomes.log_nack_dead_letter(message_id, queue, dlq, count, reason)
    else:
        _retry(tx, queue, seq, delay_s, reason, now)
    return outcomes.nack_result(message_id, action, delay_s)


def _touch_one(
    tx: Transaction,
    queue: str,
    settings: QueueSettings,
    entry: dict[str, Any],
    now: float,
) -> EntryResult:
    row, error = _find_lease(tx, queue, entry, now)
    if row is None:
        return error  # type: ignore[return-value]
    lease_s = entry.get("visibility_timeout_s") or settings.visibility_timeout_s
    cancel_requested = tx.execute(sql.EXTEND_LEASE, (now + lease_s, row[0])).fetchone()[0]
    return EntryResult(
        entry["id"], True, outcome="touched", reserved_until=now + lease_s,
        cancel_requested=True if cancel_requested else None,
    )


def _dead_rows_by_id(tx: Transaction, dlq: str, message_ids: Iterable[str]) -> list[tuple]:
    _require_queue(tx, dlq, lock=" FOR KEY SHARE")
    rows = []
    for message_id in dict.fromkeys(message_ids):
        row = None
        if "\0" not in message_id:
            row = tx.execute(sql.SELECT_DEAD_BY_ID, (dlq, message_id)).fetchone()
        if row is None:
            raise MessageNotFound(
                f"no dead message with id {message_id!r} is in DLQ {dlq!r}; "
                "nothing was redriven"
            )
        rows.append(row)
    return sorted(rows)


def _redrive_rows(tx: Transaction, rows: list[tuple], now: float) -> int:
    moved = 0
    targets: dict[str, QueueInfo | None] = {}
    for seq, message_id, source in rows:
        if source and source not in targets:
            targets[source] = _select_queue(tx, source, lock=" FOR KEY SHARE")
        target = targets.get(source) if source else None
        if target is None:
            logger.warning(
                "Dead message %s stays in its DLQ: source queue %r no longer exists",
                message_id, source,
            )
            continue
        expiry = now + target.settings["retention_s"]
        tx.execute(sql.REDRIVE_MESSAGE, (source, now, expiry, seq))
        tx.wake(source)
        moved += 1
    return moved


def _message_from_row(row: tuple) -> Message:
    body = bytes(row[3]) if row[4] else orjson.loads(row[3])
    headers = orjson.loads(row[5]) if row[5] else {}
    dedup_id, idempotency_key = split_stored_key(row[8])
    return Message(
        id=row[0],
        queue=row[1],
        state=row[2],
        body=body,
        headers=headers,
        priority=row[6],
        group=_decode_text(row[7]),
        dedup_id=dedup_id,
        posted_at=row[9],
        due_at=row[10],
        receive_count=row[11],
        max_attempts=row[12],
        last_error=_decode_text(row[13]),
        source_queue=row[14],
        expires_at=row[15],
        reserved_until=row[16],
        receipt=row[17],
        idempotency_key=idempotency_key,
        cancel_requested=row[18],
        progress=row[19],
        progress_text=_decode_text(row[20]),
        progress_at=row[21],
        completed_at=row[22],
        completed_result=None if row[23] is None else orjson.loads(row[23]),
    )
