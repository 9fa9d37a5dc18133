"""Group commit: one writer thread per SQLite file.

Requests put operations on a queue. The writer takes every operation that has
accumulated, runs each inside its own savepoint of one transaction, commits
once (one fsync for the whole group with `synchronous=FULL`) and only then
resolves each request's future. An operation that raises rolls back only its
own savepoint; the others in the group still commit.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from concurrent.futures import Future
from typing import Any, Callable

from ..errors import ConveyorError, StoreUnavailable

logger = logging.getLogger(__name__)

MAX_GROUP_SIZE = 512


class Transaction:
    """The context an operation runs in: the connection, and queues to wake after commit.

    `failures` counts the current operation's failed attempts per queue,
    which the store records for the queues' circuit breakers before the
    operation ends.
    """

    __slots__ = ("conn", "failures", "woken_queues")

    def __init__(self, conn: sqlite3.Connection) -> None:
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


Operation = Callable[[Transaction], Any]


class GroupCommitWriter:
    """Runs write operations on one connection, sharing commits."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        on_commit: Callable[[set[str]], None],
    ) -> None:
        self._connect = connect
        self._on_commit = on_commit
        self._requests: queue.SimpleQueue[tuple[Operation, Future] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(
            target=self._run, name="conveyor-sqlite-writer", daemon=True
        )
        self._closed = False
        self._thread.start()

    def submit(self, operation: Operation) -> Future:
        """Queue an operation; the future resolves after its commit."""
        future: Future = Future()
        if self._closed:
            future.set_exception(StoreUnavailable("the store is closed"))
            return future
        self._requests.put((operation, future))
        return future

    def close(self) -> None:
        """Finish queued operations, then stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._requests.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        conn = self._connect()
        try:
            while True:
                group, stopping = self._take_group()
                if group:
                    self._commit_group_safely(conn, group)
                if stopping:
                    return
        finally:
            conn.close()

    def _commit_group_safely(
        self, conn: sqlite3.Connection, group: list[tuple[Operation, Future]]
    ) -> None:
        """Commit a group; an unexpected error fails its requests, not the thread."""
        try:
            self._commit_group(conn, group)
        except Exception as exc:  # noqa: BLE001 - the writer must keep running
            logger.exception("Writer failed on a group of %d operations", len(group))
            self._rollback(conn)
            for _operation, future in group:
                if not future.done():
                    future.set_exception(StoreUnavailable(f"the store writer failed: {exc}"))

    def _take_group(self) -> tuple[list[tuple[Operation, Future]], bool]:
        first = self._requests.get()
        if first is None:
            return [], True
        group = [first]
        while len(group) < MAX_GROUP_SIZE:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                break
            if request is None:
                return group, True
            group.append(request)
        return group, False

    def _commit_group(
        self, conn: sqlite3.Connection, group: list[tuple[Operation, Future]]
    ) -> None:
        # A caller that gave up (an asyncio task cancelled while awaiting) has
        # cancelled its future; its operation must not run. Every other future
        # is marked running, so it can no longer be cancelled and will get
        # the outcome of a commit that really happened.
        group = [(op, future) for op, future in group if future.set_running_or_notify_cancel()]
        if not group:
            return
        tx = Transaction(conn)
        outcomes: list[tuple[Future, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for operation, future in group:
                outcomes.append((future, *self._run_one(tx, operation)))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            logger.error("Commit of %d operations failed: %s", len(group), exc)
            self._rollback(conn)
            error = StoreUnavailable(f"the SQLite commit failed: {exc}")
            for _operation, future in group:
                future.set_exception(error)
            return

        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        if tx.woken_queues:
            self._on_commit(tx.woken_queues)

    @staticmethod
    def _run_one(
        tx: Transaction, operation: Operation
    ) -> tuple[Any, BaseException | None]:
        conn = tx.conn
        conn.execute("SAVEPOINT op")
        woken_before = set(tx.woken_queues)
        # Counts left by an operation that failed belong to its rolled-back work.
        tx.failures = {}
        try:
            result = operation(tx)
        except ConveyorError as exc:
            error: BaseException = exc
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            logger.error("Store operation failed", exc_info=True)
            error = exc
        else:
            conn.execute("RELEASE op")
            return result, None

        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        tx.woken_queues = woken_before
        return None, error

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
