"""The queue engine: validated operations over a store, with long polls.

The engine is what both the HTTP server and the in-process SDK transport
call. Every write goes to the store's transaction; the engine adds input
checks, long-poll waiting and a background sweeper that expires leases and
applies retention.

Each write has a blocking form (`post`) and a coroutine form (`apost`) that
awaits the same commit without blocking an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import urlparse

from . import validation as check
from .errors import StoreUnavailable, ValidationError
from .models import (
    STATES,
    AttemptLog,
    BreakerReport,
    EntryResult,
    Message,
    NewMessage,
    PostResult,
    QueueInfo,
    QueueStats,
    RedriveJob,
    TaskResult,
    Workflow,
)
from .settings import (
    MAX_VISIBILITY_TIMEOUT_S,
    build_settings,
    check_rate,
    check_changes,
    validate_queue_name,
)
from .engine_schedules import MAX_SCHEDULES_LISTED, ScheduleMethods
from .redrive_runner import RedriveRunner
from .scheduler import Scheduler
from .store.flow import MODES as BREAKER_MODES
from .store.redrive_jobs import JOB_STATES
from .store.sqlite import SQLiteStore
from .store.workflows import WORKFLOW_STATES
from .workflows.compiler import compile_workflow
from .wakeup import AsyncWaiter, Notifier, ThreadWaiter

if TYPE_CHECKING:
    from .store.postgres import PostgresStore

logger = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
# A waiting long poll calls its caller's keep_waiting check this often.
STOP_CHECK_S = 1.0
# A long poll re-checks a SQLite store this often, so it also finds
# messages that another process committed to the same file. A PostgreSQL
# store sets its own interval (the URL's poll_interval parameter).
MAX_IDLE_CHECK_S = 1.0
MAX_PEEK = 1000
DEFAULT_BREAKER_EVENTS = 20
MAX_BREAKER_EVENTS = 1000


def _check_source_queue(name: Any) -> str | None:
    """Return a redrive job's source queue filter, or raise naming the field."""
    if name is None:
        return None
    try:
        return validate_queue_name(name)
    except ValidationError as exc:
        raise ValidationError(f"invalid source_queue: {exc.detail}") from exc


def open_store(
    url: str, on_commit: Callable[[set[str]], None]
) -> SQLiteStore | PostgresStore:
    """Open the store a URL names.

    `sqlite:///relative.db` and `sqlite:////abs.db` name a SQLite file.
    `postgresql://user@host:port/dbname` (or `postgres://`) names a
    PostgreSQL database. Its tables go in the first schema of the
    connection's search_path, which `?options=-csearch_path%3DNAME` sets.
    Its parameters pool_size, listen, poll_interval and prepare configure the store
    (see `store/postgres_options.py`); the others go to psycopg.
    """
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise ValidationError(
                f"invalid store URL {url!r}: use sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        return SQLiteStore(path, on_commit)
    if parsed.scheme in ("postgres", "postgresql"):
        from .store.postgres import PostgresStore

        return PostgresStore(url, on_commit)
    raise ValidationError(
        f"invalid store URL {url!r}: use sqlite:///path/to/file.db or "
        "postgresql://user@host:5432/dbname"
    )


class Engine(ScheduleMethods):
    """Queue operations over one store, shared by every caller in a process."""

    def __init__(
        self,
        url: str,
        clock: Callable[[], float] = time.time,
        sweep: bool = True,
        redrive_jobs: bool = False,
        schedules: bool = False,
    ) -> None:
        """Open the store at `url`.

        `sweep` runs the background sweeper; `redrive_jobs` runs the store's
        background redrive jobs in this process, and `schedules` fires its
        due schedules (scheduler.py), as `conveyor server` does.
        """
        self.url = url
        self.clock = clock
        self._notifier = Notifier()
        self.store = open_store(url, self._notifier.notify)
        self._idle_check_s = getattr(self.store, "poll_interval_s", MAX_IDLE_CHECK_S)
        self._stopping = threading.Event()
        self._sweeper: threading.Thread | None = None
        if sweep:
            self._sweeper = threading.Thread(
                target=self._sweep_forever, name="conveyor-sweeper", daemon=True
            )
            self._sweeper.start()
        self._redrive_runner: RedriveRunner | None = None
        if redrive_jobs:
            self._redrive_runner = RedriveRunner(self)
            self._redrive_runner.start()
        self._scheduler: Scheduler | None = None
        if schedules:
            self._scheduler = Scheduler(self)
            self._scheduler.start()

    def close(self) -> None:
        """Stop the background threads and close the store; queued writes finish first."""
        if self._redrive_runner is not None:
            self._redrive_runner.close()
        if self._scheduler is not None:
            self._scheduler.close()
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=10)
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Queues ------------------------------------------------------------

    def create_queue(
        self, name: str, settings: dict[str, Any] | None = None, exist_ok: bool = False
    ) -> QueueInfo:
        """Create a queue (and its DLQ); raise QueueAlreadyExists unless exist_ok."""
        validate_queue_name(name)
        built = build_settings(settings)
        info = self.store.create_queue(name, built, self.clock(), exist_ok).result()
        logger.info("Queue %s is ready (%s)", name, info.settings["type"])
        return info

    def update_queue(self, name: str, changes: dict[str, Any]) -> QueueInfo:
        """Change settings at run time; unknown keys and bad values raise."""
        validate_queue_name(name)
        check_changes(changes)
        info = self.store.update_queue(name, changes, self.clock()).result()
        logger.info("Queue %s settings changed: %s", name, sorted(changes))
        return info

    def pause_queue(self, name: str) -> QueueInfo:
        """Stop delivering a queue's messages; posts are still accepted."""
        return self._set_paused(name, True)

    def resume_queue(self, name: str) -> QueueInfo:
        """Deliver a paused queue's messages again."""
        return self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> QueueInfo:
        validate_queue_name(name)
        info = self.store.update_queue(name, {"paused": paused}, self.clock()).result()
        if paused:
            logger.info("Queue %s paused: reserves deliver nothing until it is resumed", name)
        else:
            logger.info("Queue %s resumed", name)
        return info

    def get_queue(self, name: str) -> QueueInfo:
        return self.store.get_queue(validate_queue_name(name))

    def list_queues(self) -> list[QueueInfo]:
        return self.store.list_queues()

    def delete_queue(self, name: str) -> int:
        """Delete a queue and its messages; return how many messages were deleted."""
        removed = self.store.delete_queue(validate_queue_name(name)).result()
        logger.info("Queue %s deleted with %d messages", name, removed)
        self._warn_about_orphaned_schedules(name)
        return removed

    def _warn_about_orphaned_schedules(self, queue: str) -> None:
        """Log a WARNING naming the schedules that still post to a deleted queue."""
        schedules = self.list_schedules(queue=queue, limit=MAX_SCHEDULES_LISTED)
        if schedules:
            logger.warning(
                "Queue %s was deleted, but schedules %s still post to it; each tick "
                "posts nothing until the queue is created again or the schedules are "
                "deleted or changed",
                queue, ", ".join(s.name for s in schedules),
            )

    def purge_queue(self, name: str) -> int:
        """Delete every message of a queue; return how many."""
        removed = self.store.purge_queue(validate_queue_name(name)).result()
        logger.info("Queue %s purged: %d messages deleted", name, removed)
        return removed

    # Post --------------------------------------------------------------

    def post(self, queue: str, messages: list[NewMessage]) -> list[PostResult]:
        """Post a batch, all or nothing; return ids once committed durably."""
        return self._submit_post(queue, messages).result()

    async def apost(self, queue: str, messages: list[NewMessage]) -> list[PostResult]:
        return await asyncio.wrap_future(self._submit_post(queue, messages))

    def _submit_post(self, queue: str, messages: list[NewMessage]) -> Future:
        validate_queue_name(queue)
        check.check_batch("messages", messages, check.MAX_POST_BATCH)
        prepared = [check.prepare(m, i) for i, m in enumerate(messages)]
        return self.store.post(queue, prepared, self.clock())

    # Reserve -----------------------------------------------------------

    def reserve(
        self,
        queue: str,
        max_messages: int = 1,
        wait_s: float = 0.0,
        visibility_timeout_s: float | None = None,
    ) -> list[Message]:
        """Lease up to max_messages ready messages, waiting up to wait_s.

        Returns as soon as at least one message was leased, or an empty list
        when the wait ends. Each message carries a new receipt.
        """
        args = self._check_reserve(queue, max_messages, wait_s, visibility_timeout_s)
        deadline = time.monotonic() + args[2]
        waiter = ThreadWaiter()
        self._notifier.register(queue, waiter)
        try:
            while True:
                messages = self._submit_reserve(*args).result()
                if messages:
                    return messages
                pause_s = self._pause_before_retry(queue, deadline)
                if pause_s <= 0:
                    return messages
                waiter.wait(pause_s)
        finally:
            self._notifier.unregister(queue, waiter)

    async def areserve(
        self,
        queue: str,
        max_messages: int = 1,
        wait_s: float = 0.0,
        visibility_timeout_s: float | None = None,
        keep_waiting: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[Message]:
        """Lease like `reserve`, without blocking the event loop.

        `keep_waiting`, if given, is awaited about once a second while the
        poll waits; when it returns False the poll ends with no messages.
        It lets a server end polls of clients that left, without querying
        the store more often than the poll's re-check.
        """
        args = self._check_reserve(queue, max_messages, wait_s, visibility_timeout_s)
        deadline = time.monotonic() + args[2]
        waiter = AsyncWaiter(asyncio.get_running_loop())
        self._notifier.register(queue, waiter)
        try:
            while True:
                messages = await asyncio.wrap_future(self._submit_reserve(*args))
                # The pause costs store reads, so a reserve that leased
                # something returns before computing it.
                if messages:
                    return messages
                pause_s = self._pause_before_retry(queue, deadline)
                if pause_s <= 0:
                    return messages
                if not await _wait_or_stop(waiter, pause_s, keep_waiting):
                    return []
        finally:
            self._notifier.unregister(queue, waiter)

    def _check_reserve(
        self, queue: str, max_messages: int, wait_s: float, visibility_timeout_s: float | None
    ) -> tuple[str, int, float, float | None]:
        validate_queue_name(queue)
        check.check_int("max_messages", max_messages, 1, check.MAX_RESERVE_BATCH)
        wait = check.check_optional_duration("wait_s", wait_s, 0.0, check.MAX_WAIT_S)
        lease = check.check_optional_duration(
            "visibility_timeout_s", visibility_timeout_s, 0.1, MAX_VISIBILITY_TIMEOUT_S
        )
        return queue, max_messages, wait or 0.0, lease

    def _submit_reserve(
        self, queue: str, max_messages: int, _wait_s: float, lease_s: float | None
    ) -> Future:
        return self.store.reserve(queue, max_messages, lease_s, self.clock())

    def _pause_before_retry(self, queue: str, deadline: float) -> float:
        """Return how long a long poll may sleep before it must look again."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return 0.0
        pause = min(remaining, self._idle_check_s)
        next_change = self.store.next_change_at(queue, self.clock())
        if next_change is not None:
            pause = min(pause, max(next_change - self.clock(), 0.0) + 0.001)
        return pause

    # Ack, nack, touch --------------------------------------------------

    def ack(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        """Delete leased messages; each entry needs the current receipt.

        An entry may carry `result` and `result_ttl_s` to store the outcome.
        """
        return self._submit_entries("ack", queue, entries).result()

    async def aack(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        return await asyncio.wrap_future(self._submit_entries("ack", queue, entries))

    def nack(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        """Fail leased messages: retry after a backoff or move to the DLQ.

        Entry keys: `delay_s` overrides the backoff, `error` is kept as the
        last error, `dead` dead-letters now, `release` returns the message at
        once without using up an attempt. `retry_after_s` returns it after
        that delay without using up an attempt, and counts as a failure for
        the queue's circuit breaker.
        """
        return self._submit_entries("nack", queue, entries).result()

    async def anack(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        return await asyncio.wrap_future(self._submit_entries("nack", queue, entries))

    def touch(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        """Extend leases by `visibility_timeout_s` (default: the queue's)."""
        return self._submit_entries("touch", queue, entries).result()

    async def atouch(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        return await asyncio.wrap_future(self._submit_entries("touch", queue, entries))

    def _submit_entries(
        self, action: str, queue: str, entries: list[dict[str, Any]]
    ) -> Future:
        validate_queue_name(queue)
        check.check_batch("entries", entries, check.MAX_ENTRY_BATCH)
        checked = [check.check_receipt_entry(e, i, action) for i, e in enumerate(entries)]
        operation = getattr(self.store, action)
        return operation(queue, checked, self.clock())

    # Task runs ---------------------------------------------------------

    def complete(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        """Store completion records: each entry's `result`, before the ack.

        The record survives a lost ack. If the lease ends, the message is
        delivered again at once, even after its last attempt, carrying
        `completed_at` and `completed_result`, so its next consumer can ack
        it without doing the work again. Each entry needs the current receipt.
        """
        return self._submit_entries("complete", queue, entries).result()

    async def acomplete(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        return await asyncio.wrap_future(self._submit_entries("complete", queue, entries))

    def progress(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        """Store leased messages' `progress` (0 to 1) and optional `progress_text`.

        A result carries `cancel_requested` when someone asked to cancel the
        message. Each entry needs the current receipt.
        """
        return self._submit_entries("progress", queue, entries).result()

    async def aprogress(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        return await asyncio.wrap_future(self._submit_entries("progress", queue, entries))

    def cancel(self, message_id: str, result_ttl_s: float | None = None) -> EntryResult:
        """Cancel a message by id, in any queue.

        A delayed or ready message is deleted and gets a result with status
        `cancelled`, kept for `result_ttl_s` (default one day; 0 keeps
        none): outcome `cancelled`. A reserved one is flagged, and its
        consumer stops it when it learns of the flag: outcome
        `cancel-requested`. Raises MessageFinished for a dead or finished
        message and MessageNotFound for an unknown id.
        """
        self._check_id(message_id)
        ttl_s = check.check_optional_duration(
            "result_ttl_s", result_ttl_s, 0.0, check.MAX_RESULT_TTL_S
        )
        return self.store.cancel(message_id, ttl_s, self.clock()).result()

    def get_logs(self, message_id: str, attempt: int | None = None) -> list[AttemptLog]:
        """Return the logs stored for a message's attempts, or for one attempt.

        An empty list means none are stored: the id is unknown, the attempts
        logged nothing, or the logs expired with the message's result.
        """
        self._check_id(message_id)
        if attempt is not None:
            check.check_int("attempt", attempt, 1, check.MAX_ATTEMPT_NUMBER)
        return self.store.get_logs(message_id, attempt, self.clock())

    # DLQ ---------------------------------------------------------------

    def redrive(
        self, dlq: str, message_ids: list[str] | None = None, limit: int | None = None
    ) -> int:
        """Move dead messages from a DLQ back to their source queues.

        With message_ids, all of them move or none (MessageNotFound). Without,
        every dead message moves, oldest first, up to limit.
        """
        validate_queue_name(dlq)
        if message_ids is not None and limit is not None:
            raise ValidationError(
                "redrive takes message_ids or limit, not both; a redrive by id "
                "moves exactly the named messages"
            )
        if message_ids is not None:
            check.check_batch("message_ids", message_ids, check.MAX_ENTRY_BATCH)
        if limit is not None:
            check.check_int("limit", limit, 1, 10**9)
        moved = self.store.redrive(dlq, message_ids, limit, self.clock())
        logger.info("Redrove %d messages from DLQ %s", moved, dlq)
        return moved

    # Redrive jobs ------------------------------------------------------

    def start_redrive_job(
        self,
        dlq: str,
        rate_per_s: float | None = None,
        limit: int | None = None,
        source_queue: str | None = None,
        dead_after: float | None = None,
    ) -> RedriveJob:
        """Store a redrive job of a DLQ, which a `conveyor server` runs in the background.

        It moves the DLQ's dead messages back to their source queues, oldest
        first, in chunks of one transaction each, at most `rate_per_s`
        messages per second (None: no rate of its own). `limit`,
        `source_queue` and `dead_after` (dead-lettered at or after this
        Unix time) narrow what it moves.
        """
        validate_queue_name(dlq)
        options = {
            "rate_per_s": None if rate_per_s is None else check_rate("rate_per_s", rate_per_s),
            "limit": None if limit is None else check.check_int("limit", limit, 1, 10**9),
            "source_queue": _check_source_queue(source_queue),
            "dead_after": check.check_timestamp("dead_after", dead_after),
        }
        return self.store.create_redrive_job(dlq, self.clock(), **options).result()

    def list_redrive_jobs(
        self, dlq: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[RedriveJob]:
        """Return redrive jobs, newest first, optionally of one DLQ or in one state."""
        if dlq is not None:
            validate_queue_name(dlq)
        if state is not None and state not in JOB_STATES:
            raise ValidationError(
                f"invalid job state {state!r}: use one of {', '.join(JOB_STATES)}"
            )
        check.check_int("limit", limit, 1, MAX_PEEK)
        return self.store.list_redrive_jobs(dlq, state, limit)

    def get_redrive_job(self, job_id: str) -> RedriveJob:
        return self.store.get_redrive_job(self._check_id(job_id, "redrive job id"))

    def cancel_redrive_job(self, job_id: str) -> RedriveJob:
        """Stop an active job after its current chunk; a finished job stays as it is."""
        return self.store.cancel_redrive_job(
            self._check_id(job_id, "redrive job id"), self.clock()
        ).result()

    def claim_redrive_jobs(self, owner: str, limit: int, lease_s: float) -> list[RedriveJob]:
        """Take leases on up to `limit` active jobs that no process holds; for runners."""
        return self.store.claim_redrive_jobs(owner, limit, lease_s, self.clock()).result()

    def run_redrive_chunk(
        self, job_id: str, owner: str, max_messages: int, lease_s: float
    ) -> RedriveJob:
        """Move up to `max_messages` of a claimed job's messages and renew its lease."""
        return self.store.run_redrive_chunk(
            job_id, owner, max_messages, lease_s, self.clock()
        ).result()

    def release_redrive_jobs(self, owner: str) -> int:
        """Give up the leases `owner` holds, so any process may run those jobs."""
        return self.store.release_redrive_jobs(owner).result()

    # Workflows ---------------------------------------------------------

    def start_workflow(
        self, spec: Any, name: str | None = None, idempotency_key: str | None = None
    ) -> Workflow:
        """Compile a workflow spec, store it and post its first steps, all or nothing.

        The spec is the nested step, chain and group form that
        `conveyor/workflows/compiler.py` describes. Every step's queue must
        exist and be a standard queue. A start with the idempotency key of a
        stored workflow returns that workflow and stores nothing.
        """
        return self.start_workflow_once(spec, name, idempotency_key)[0]

    def start_workflow_once(
        self, spec: Any, name: str | None = None, idempotency_key: str | None = None
    ) -> tuple[Workflow, bool]:
        """Start a workflow as start_workflow does; also return whether it was created."""
        compiled = compile_workflow(spec, name, idempotency_key)
        return self.store.start_workflow(compiled, self.clock()).result()

    def get_workflow(self, workflow_id: str) -> Workflow:
        """Return a workflow with its steps; raise WorkflowNotFound for an unknown id."""
        return self.store.get_workflow(self._check_id(workflow_id, "workflow id"))

    def list_workflows(
        self, state: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[Workflow], str | None]:
        """Return workflows newest first (without steps) and the cursor of the next page.

        `state` filters by running, succeeded, failed or cancelled; `cursor`
        is the value a previous page returned (None: the first page).
        """
        if state is not None and state not in WORKFLOW_STATES:
            raise ValidationError(
                f"invalid workflow state {state!r}: use one of {', '.join(WORKFLOW_STATES)}"
            )
        check.check_int("limit", limit, 1, MAX_PEEK)
        before_seq = _parse_cursor(cursor)
        workflows, next_seq = self.store.list_workflows(state, before_seq, limit)
        return workflows, None if next_seq is None else str(next_seq)

    def retry_workflow(self, workflow_id: str) -> Workflow:
        """Post again the steps whose post failed (queue deleted, message too large).

        Fix the cause first (create the queue, raise its max_message_size).
        All the steps are posted in one transaction, or none, and the
        workflow reads as running again. Raises WorkflowNotRetryable when
        the workflow finished or has no such step, and the post's own error
        (QueueNotFound, PayloadTooLarge) when a step still cannot be posted.
        """
        workflow_id = self._check_id(workflow_id, "workflow id")
        return self.store.retry_workflow(workflow_id, self.clock()).result()

    def cancel_workflow(self, workflow_id: str) -> Workflow:
        """Cancel a running workflow and return it.

        Its waiting steps never post and its posted messages are cancelled.
        A finished workflow is returned unchanged.
        """
        workflow_id = self._check_id(workflow_id, "workflow id")
        return self.store.cancel_workflow(workflow_id, self.clock()).result()

    # Circuit breaker ---------------------------------------------------

    def breaker(self, queue: str, limit: int = DEFAULT_BREAKER_EVENTS) -> BreakerReport:
        """Return a queue's breaker status and its latest `limit` changes, newest first.

        The status is None when the queue has no breaker.
        """
        validate_queue_name(queue)
        check.check_int("limit", limit, 1, MAX_BREAKER_EVENTS)
        return self.store.breaker_report(queue, limit, self.clock())

    def force_breaker(self, queue: str, state: str) -> BreakerReport:
        """Force a queue's breaker "open" or "closed", or hand it back with "auto".

        A forced state stays until the next call. Raises ValidationError for
        another state or a queue without a breaker.
        """
        validate_queue_name(queue)
        if state not in BREAKER_MODES:
            raise ValidationError(
                f"invalid breaker state {state!r}: use open, closed or auto"
            )
        self.store.force_breaker(queue, state, self.clock()).result()
        logger.info("Circuit breaker of queue %s set to %s by an operator", queue, state)
        return self.breaker(queue)

    # Reads -------------------------------------------------------------

    def peek(
        self, queue: str, limit: int = 10, offset: int = 0, state: str | None = None
    ) -> list[Message]:
        """List messages in post order without leasing them."""
        validate_queue_name(queue)
        check.check_int("limit", limit, 1, MAX_PEEK)
        check.check_int("offset", offset, 0, 10**12)
        if state is not None and state not in STATES:
            raise ValidationError(f"invalid state {state!r}: use one of {', '.join(STATES)}")
        return self.store.peek(queue, limit, offset, state)

    def get_message(self, message_id: str) -> Message:
        return self.store.get_message(self._check_id(message_id))

    def get_result(self, message_id: str) -> TaskResult | None:
        """Return the stored outcome of a finished message, if still kept."""
        return self.store.get_result(self._check_id(message_id), self.clock())

    def stats(self, queue: str) -> QueueStats:
        return self.store.stats(validate_queue_name(queue), self.clock())

    def sweep(self) -> dict[str, int]:
        """Expire leases and apply retention now; the sweeper does it each second."""
        return self.store.sweep(self.clock()).result()

    @staticmethod
    def _check_id(value: Any, kind: str = "message id") -> str:
        if not isinstance(value, str) or not 1 <= len(value) <= check.MAX_MESSAGE_ID_LENGTH:
            raise ValidationError(
                f"invalid {kind} {value!r}: expected a string of 1 to "
                f"{check.MAX_MESSAGE_ID_LENGTH} characters"
            )
        return value

    def _sweep_forever(self) -> None:
        while not self._stopping.wait(SWEEP_INTERVAL_S):
            try:
                self.sweep()
            except StoreUnavailable as exc:
                logger.warning("Sweep failed, retrying in %.0fs: %s", SWEEP_INTERVAL_S, exc)
            except Exception:
                logger.exception("Sweep failed unexpectedly")


def _parse_cursor(cursor: Any) -> int | None:
    """Return the seq a list cursor names, or raise ValidationError."""
    if cursor is None:
        return None
    if not isinstance(cursor, str) or not cursor.isdigit() or len(cursor) > 19:
        raise ValidationError(
            f"invalid cursor {cursor!r}: pass the next_cursor value of the previous page"
        )
    return int(cursor)


async def _wait_or_stop(
    waiter: AsyncWaiter, pause_s: float, keep_waiting: Callable[[], Awaitable[bool]] | None
) -> bool:
    """Wait up to pause_s for a wake-up; return False when keep_waiting returns False."""
    if keep_waiting is None:
        await waiter.wait(pause_s)
        return True
    end = time.monotonic() + pause_s
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0 or await waiter.wait(min(remaining, STOP_CHECK_S)):
            return True
        if not await keep_waiting():
            return False
