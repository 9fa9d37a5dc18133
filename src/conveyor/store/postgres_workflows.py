"""The PostgreSQL store's workflow operations, mixed into PostgresStore.

`workflows.py` contains the rules; this module runs them in the store's
write and read transactions.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import psycopg

from ..models import EntryResult, Workflow
from . import postgres_runs, workflows
from . import postgres_workflow_sql as workflow_sql
from .workflows import CompiledWorkflow, StepPoster

if TYPE_CHECKING:
    from .postgres import Transaction

T = TypeVar("T")


class PostgresWorkflows:
    """Workflow operations; PostgresStore supplies transactions and the step poster."""

    def _submit(self, operation: Callable[[Transaction], Any]) -> Future:
        raise NotImplementedError

    def _read(self, operation: Callable[[psycopg.Connection], T]) -> T:
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
            workflow_id, created = workflows.start(tx.execute, workflow_sql, poster, workflow, now)
            return workflows.get(tx.execute, workflow_sql, workflow_id), created

        return self._submit(operation)

    def cancel_workflow(self, workflow_id: str, now: float) -> Future:
        def operation(tx: Transaction) -> Workflow:
            def cancel_message(message_id: str) -> None:
                postgres_runs.cancel(tx, message_id, None, now, include_dead=True)

            workflows.cancel(tx.execute, workflow_sql, cancel_message, workflow_id, now)
            return workflows.get(tx.execute, workflow_sql, workflow_id)

        return self._submit(operation)

    def retry_workflow(self, workflow_id: str, now: float) -> Future:
        """Post again the steps whose post failed, in one transaction."""

        def operation(tx: Transaction) -> Workflow:
            execute = tx.execute
            post = self._step_poster(tx, now).post
            workflows.retry(execute, workflow_sql, post, workflow_id, now)
            return workflows.get(execute, workflow_sql, workflow_id)

        return self._submit(operation)

    def get_workflow(self, workflow_id: str) -> Workflow:
        return self._read(
            lambda conn: workflows.get(conn.execute, workflow_sql, workflow_id)
        )

    def list_workflows(
        self, state: str | None, before_seq: int | None, limit: int
    ) -> tuple[list[Workflow], int | None]:
        return self._read(
            lambda conn: workflows.list_workflows(
                conn.execute, workflow_sql, state, before_seq, limit
            )
        )


def find_steps(tx: Transaction, entries: list[dict[str, Any]]) -> list[tuple]:
    """Return (message id, workflow id, step index, receive count) of the entries' steps.

    It runs before the acks delete the messages. An id with a NUL is left
    out, because PostgreSQL text cannot hold it and no stored message has it.
    """
    ids = [entry["id"] for entry in entries if "\0" not in entry["id"]]
    return tx.execute(workflow_sql.SELECT_STEPS_BY_MESSAGE, (ids,)).fetchall()


def finish_acked_steps(
    tx: Transaction,
    entries: list[dict[str, Any]],
    results: list[EntryResult],
    steps: list[tuple],
    poster: Callable[[], StepPoster],
    now: float,
) -> None:
    """Finish the workflow steps among an ack batch's acked entries.

    `steps` are the (message id, workflow id, step index, receive count)
    rows of the batch's messages that are workflow steps, from the DELETE's
    CTE or from find_steps.
    """
    acked = {
        entry["id"]: entry.get("result")
        for entry, result in zip(entries, results)
        if result.ok
    }
    steps = [row for row in steps if row[0] in acked]
    if steps:
        post = poster().post
        workflows.finish_steps(tx.execute, workflow_sql, post, steps, acked, now)
