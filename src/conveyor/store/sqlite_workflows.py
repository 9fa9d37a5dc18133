"""The SQLite store's workflow operations, mixed into SQLiteStore.

`workflows.py` contains the rules; this module runs them on the store's
writer thread and reader connections.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future
from typing import Any, Callable

import orjson

from ..models import EntryResult, Workflow
from . import sqlite_runs, workflows
from . import sqlite_workflow_sql as workflow_sql
from .workflows import CompiledWorkflow, StepPoster
from .writer import GroupCommitWriter, Transaction


class SQLiteWorkflows:
    """Workflow operations; SQLiteStore supplies the writer, readers and step poster."""

    _writer: GroupCommitWriter

    def _reader(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _step_poster(self, tx: Transaction, now: float) -> StepPoster:
        raise NotImplementedError

    def start_workflow(self, workflow: CompiledWorkflow, now: float) -> Future:
        """Store a compiled workflow and post its first steps in one transaction.

        The future's result is (workflow, created): created is False when the
        workflow's idempotency key returned a stored workflow.
        """

        def operation(tx: Transaction) -> tuple[Workflow, bool]:
            poster = self._step_poster(tx, now)
            workflow_id, created = workflows.start(tx.conn.execute, workflow_sql, poster, workflow, now)
            return workflows.get(tx.conn.execute, workflow_sql, workflow_id), created

        return self._writer.submit(operation)

    def cancel_workflow(self, workflow_id: str, now: float) -> Future:
        def operation(tx: Transaction) -> Workflow:
            def cancel_message(message_id: str) -> None:
                sqlite_runs.cancel(tx, message_id, None, now, include_dead=True)

            execute = tx.conn.execute
            workflows.cancel(execute, workflow_sql, cancel_message, workflow_id, now)
            return workflows.get(execute, workflow_sql, workflow_id)

        return self._writer.submit(operation)

    def retry_workflow(self, workflow_id: str, now: float) -> Future:
        """Post again the steps whose post failed, in one transaction."""

        def operation(tx: Transaction) -> Workflow:
            execute = tx.conn.execute
            post = self._step_poster(tx, now).post
            workflows.retry(execute, workflow_sql, post, workflow_id, now)
            return workflows.get(execute, workflow_sql, workflow_id)

        return self._writer.submit(operation)

    def get_workflow(self, workflow_id: str) -> Workflow:
        return self._read_snapshot(
            lambda execute: workflows.get(execute, workflow_sql, workflow_id)
        )

    def list_workflows(
        self, state: str | None, before_seq: int | None, limit: int
    ) -> tuple[list[Workflow], int | None]:
        return self._read_snapshot(
            lambda execute: workflows.list_workflows(
                execute, workflow_sql, state, before_seq, limit
            )
        )

    def _read_snapshot(self, read: Callable[[Callable[..., Any]], Any]) -> Any:
        """Run several reads in one transaction, so that they see one snapshot."""
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            return read(conn.execute)
        finally:
            conn.execute("COMMIT")


def prepare_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(workflow_sql.SCHEMA)
    sqlite_runs.add_missing_columns(conn, "workflow_steps", workflow_sql.ADDED_STEP_COLUMNS)
    sqlite_runs.add_missing_columns(conn, "workflows", workflow_sql.ADDED_WORKFLOW_COLUMNS)
    conn.execute(workflow_sql.CREATE_IDEMPOTENCY_INDEX)


def delete_old_workflows(tx: Transaction, now: float) -> int:
    return workflows.delete_old_workflows(tx.conn.execute, workflow_sql, now)


def find_steps(tx: Transaction, entries: list[dict[str, Any]]) -> list[tuple]:
    """Return (message id, workflow id, step index, receive count) of the entries' steps.

    One indexed lookup per ack batch, before the acks delete the messages,
    so acks of other messages pay only that. An id with a NUL is left out,
    because json_each would cut it at the NUL and could match another id.
    """
    ids = orjson.dumps([entry["id"] for entry in entries if "\0" not in entry["id"]]).decode()
    return tx.conn.execute(workflow_sql.SELECT_STEPS_BY_MESSAGE, (ids,)).fetchall()


def finish_acked_steps(
    tx: Transaction,
    entries: list[dict[str, Any]],
    results: list[EntryResult],
    steps: list[tuple],
    poster: Callable[[], StepPoster],
    now: float,
) -> None:
    """Finish the workflow steps among an ack batch's acked entries.

    `steps` are the rows find_steps returned before the acks.
    """
    acked = {
        entry["id"]: entry.get("result")
        for entry, result in zip(entries, results)
        if result.ok
    }
    steps = [row for row in steps if row[0] in acked]
    if steps:
        post = poster().post
        workflows.finish_steps(tx.conn.execute, workflow_sql, post, steps, acked, now)
