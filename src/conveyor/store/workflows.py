"""Workflows, stored and advanced the same way by both stores.

A workflow is stored as one `workflows` row and one `workflow_steps` row
per compiled step (see `conveyor/workflows/compiler.py`). Each step row
contains its message template, its input expression, its children and a
count of parents that have not succeeded yet.

- Starting a workflow inserts every row and posts the first steps'
  messages in one transaction.
- The ack of a step's message runs `finish_steps` in the ack's own
  transaction: it stores the step's result, counts the workflow's steps
  down, counts each child's parents down, and posts each child whose count
  reached 0 with its input filled in. Only one valid ack can delete a
  message row, and a step only succeeds from state `posted`, so each step
  finishes once and each child is posted once.
  On PostgreSQL the workflow row's lock (the UPDATE of `steps_left`)
  serializes the acks of one workflow's steps.
- Failure needs no hook: a step whose message is dead, cancelled or gone
  is read as failed, cancelled or expired (`step_state`). A redrive brings
  the message back under the same id, so its ack then finishes the step.
- Cancelling a workflow marks it cancelled and cancels its posted
  messages, dead ones included. A running step's nack then finishes it as cancelled; a step
  acked before its worker learned of the cancel keeps its result. Neither
  posts children.

Each function takes the transaction's `execute(query, params)`, the
store's module of workflow statements, and for posting a `post` callable,
as `redrive_jobs.py` does.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterable

import orjson

from ..errors import (
    ConveyorError,
    MessageFinished,
    MessageNotFound,
    PayloadTooLarge,
    ValidationError,
    WorkflowNotFound,
    WorkflowNotRetryable,
)
from ..models import DEAD, RESERVED, NewMessage, Workflow, WorkflowStep
from ..policy import PreparedMessage, check_for_queue
from ..settings import QueueSettings
from ..validation import new_message_id, prepare
from ..workflows import compiler
from ..workflows.compiler import CompiledStep, CompiledWorkflow

logger = logging.getLogger(__name__)

Execute = Callable[[str, Any], Any]
# Posts one message to a queue in the caller's transaction. It raises a
# ConveyorError (an unknown queue, a message too large for it) before it
# writes anything.
Post = Callable[[str, PreparedMessage], None]


@dataclass(frozen=True)
class StepPoster:
    """A store's way to post step messages inside one of its transactions.

    `settings` returns a queue's settings or raises QueueNotFound.
    """

    settings: Callable[[str], QueueSettings]
    post: Post


# Cancels one stored message by id in the caller's transaction, as
# POST /v1/messages/{id}/cancel does, and removes a dead one from its DLQ.
CancelMessage = Callable[[str], Any]

# Stored workflow states. FAILED is only ever derived on read.
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
WORKFLOW_STATES = (RUNNING, SUCCEEDED, FAILED, CANCELLED)

# Stored step states. A posted step is read as queued, running, failed,
# cancelled or expired from its message.
WAITING = "waiting"
POSTED = "posted"
QUEUED = "queued"
RUNNING_STEP = "running"
EXPIRED = "expired"
STEP_STATES = (WAITING, QUEUED, RUNNING_STEP, SUCCEEDED, FAILED, CANCELLED, EXPIRED)
STOPPED_STEP_STATES = (FAILED, CANCELLED, EXPIRED)

# A succeeded or cancelled workflow is deleted, with its steps, this long
# after it finished.
# NOTE: a running or failed workflow is kept until it finishes, so a
# workflow whose failed step is never redriven stays stored.
WORKFLOW_RETENTION_S = 7 * 86_400.0

# The position prefix that message checks put before their errors:
# `message 0: ` or `message 0 `.
BATCH_PREFIX = re.compile(r"message \d+:? ")

EXPIRED_ERROR = (
    "its message is no longer stored and never succeeded: a dead message "
    "expired from its DLQ, or its queue was purged or deleted"
)


# Start ---------------------------------------------------------------------


def prepare_step(
    workflow_id: str, step: CompiledStep, body: Any, index: int = 0
) -> PreparedMessage:
    """Validate and encode a step's message with the workflow headers.

    Raises ValidationError or PayloadTooLarge for a body or header the
    message checks reject.
    """
    headers = {
        **step.headers,
        compiler.WORKFLOW_HEADER: workflow_id,
        compiler.STEP_HEADER: str(step.index),
    }
    message = NewMessage(
        body=body, headers=headers, priority=step.priority, max_attempts=step.max_attempts,
        delay_s=step.delay_s,
    )
    try:
        return prepare(message, index)
    except ConveyorError as exc:
        raise _step_error(step, exc) from exc


def _step_error(step: CompiledStep, exc: ConveyorError) -> ConveyorError:
    """Return the error of a message check, naming the step instead of a batch index."""
    detail = exc.detail
    while (match := BATCH_PREFIX.match(detail)) is not None:
        detail = detail[match.end():]
    return type(exc)(f"{step.label}: the step's message {detail}")


def start(
    execute: Execute, sql: ModuleType, poster: StepPoster, workflow: CompiledWorkflow,
    now: float,
) -> tuple[str, bool]:
    """Store a compiled workflow and post its first steps; return its id and True.

    With an idempotency key that a stored workflow has, nothing is written
    and that workflow's id is returned with False. Every step's queue must
    exist and accept the step's template (see check_step_queue). The checks
    run before any write, and a failed post raises, which rolls the whole
    start back.
    """
    existing = _find_by_key(execute, sql, workflow.idempotency_key)
    if existing is not None:
        return existing, False
    for queue in sorted({step.queue for step in workflow.steps}):
        check_step_queue(queue, poster.settings(queue), workflow)
    workflow_id = new_message_id()
    inserted = execute(
        sql.INSERT_WORKFLOW,
        (workflow_id, workflow.name, RUNNING, _dump(workflow.result_expression),
         len(workflow.steps), len(workflow.steps), now, workflow.idempotency_key),
    ).fetchone()
    if inserted is None:
        # A concurrent start with the same key committed first (PostgreSQL).
        return _find_by_key(execute, sql, workflow.idempotency_key), False
    for step in workflow.steps:
        execute(sql.INSERT_STEP, _step_row(workflow_id, step))
    for step in workflow.first_steps:
        message = prepare_step(workflow_id, step, step.body, step.index)
        poster.post(step.queue, message)
        execute(sql.SET_STEP_POSTED, (message.id, None, now, workflow_id, step.index))
    logger.info(
        "Workflow %s started with %d steps (%d posted)",
        workflow_id, len(workflow.steps), len(workflow.first_steps),
    )
    return workflow_id, True


def _find_by_key(execute: Execute, sql: ModuleType, key: str | None) -> str | None:
    if key is None:
        return None
    row = execute(sql.SELECT_WORKFLOW_BY_KEY, (key,)).fetchone()
    return None if row is None else row[0]


def _step_row(workflow_id: str, step: CompiledStep) -> tuple:
    return (
        workflow_id, step.index, step.queue, step.task, _dump(step.body),
        _dump(step.headers), step.priority, step.max_attempts,
        _dump(step.input_expression), _dump(step.parents), _dump(step.children),
        len(step.parents), WAITING, step.delay_s,
    )


# Acks ------------------------------------------------------------------------


def finish_steps(
    execute: Execute,
    sql: ModuleType,
    post: Post,
    steps: Iterable[tuple[str, str, int, int]],
    results: dict[str, Any],
    now: float,
) -> None:
    """Finish the steps whose messages an ack just deleted, and post their children.

    `steps` are (message id, workflow id, step index, receive count) rows
    of the acked messages that are workflow steps. The receive count is
    kept as the step's attempts. `results` maps message ids to the
    result their ack reported. Workflows are taken in id order so that
    concurrent acks lock their rows in one order.
    """
    for message_id, workflow_id, index, attempts in sorted(
        steps, key=lambda row: (row[1], row[2])
    ):
        _finish_step(
            execute, sql, post, workflow_id, index, results.get(message_id), attempts, now
        )


def _finish_step(
    execute: Execute, sql: ModuleType, post: Post, workflow_id: str, index: int,
    result: Any, attempts: int, now: float,
) -> None:
    encoded = _dump(result)
    if len(encoded) > compiler.MAX_STEP_RESULT_BYTES:
        error = (
            f"the step's result is {len(encoded)} bytes as JSON, above the limit of "
            f"{compiler.MAX_STEP_RESULT_BYTES}; return a smaller value or a reference"
        )
        execute(sql.SET_STEP_FAILED, (error, now, workflow_id, index))
        logger.warning("Workflow %s step %d failed: %s", workflow_id, index, error)
        return
    updated = execute(
        sql.SET_STEP_SUCCEEDED, (encoded, now, attempts, workflow_id, index)
    ).fetchone()
    if updated is None:
        return
    state, steps_left = execute(sql.COUNT_DOWN_WORKFLOW, (workflow_id,)).fetchone()
    if steps_left == 0 and state == RUNNING:
        execute(sql.FINISH_WORKFLOW, (SUCCEEDED, now, workflow_id))
        logger.info("Workflow %s succeeded", workflow_id)
    if state != RUNNING:
        return
    children = orjson.loads(updated[0])
    if not children:
        return
    ready = execute(
        sql.COUNT_DOWN_PARENTS, (workflow_id, sql.int_list(children))
    ).fetchall()
    for child_index, parents_left in sorted(ready):
        if parents_left == 0:
            post_child(execute, sql, post, workflow_id, child_index, now)


def post_child(
    execute: Execute, sql: ModuleType, post: Post, workflow_id: str, index: int, now: float
) -> None:
    """Post a step whose parents all succeeded, with its input filled in.

    A step that cannot be posted (its input too large, its queue deleted
    or its message too large for the queue) is stored as failed instead,
    so the ack that triggered it still succeeds. `retry` posts it again.
    """
    try:
        _post_step_with_input(execute, sql, post, workflow_id, index, now)
    except ConveyorError as exc:
        error = (
            f"could not post the step; fix this cause, then run 'conveyor workflows "
            f"retry {workflow_id}': {exc.detail}"
        )
        execute(sql.SET_STEP_FAILED, (error, now, workflow_id, index))
        logger.warning("Workflow %s step %d could not be posted: %s",
                       workflow_id, index, exc.detail)


def _post_step_with_input(
    execute: Execute, sql: ModuleType, post: Post, workflow_id: str, index: int, now: float
) -> None:
    """Build a step's message from its parents' results, post it and mark the step posted.

    Raises the ConveyorError of a failed post before it writes anything.
    """
    row = execute(sql.SELECT_STEP_TEMPLATE, (workflow_id, index)).fetchone()
    queue, body, headers, priority, max_attempts, expression, parents, delay_s = row
    parent_indexes = orjson.loads(parents)
    results = {
        parent: orjson.loads(value)
        for parent, value in execute(
            sql.SELECT_STEP_RESULTS, (workflow_id, sql.int_list(parent_indexes))
        ).fetchall()
    }
    input_expression = orjson.loads(expression)
    value = compiler.evaluate(input_expression, results)
    encoded_input = _dump(value)
    step = CompiledStep(
        index, queue, orjson.loads(body), orjson.loads(headers), priority, max_attempts,
        input_expression, parent_indexes, delay_s=delay_s,
    )
    _check_input_size(encoded_input)
    message = prepare_step(
        workflow_id, step, compiler.step_body(step.body, input_expression, value)
    )
    post(queue, message)
    execute(sql.SET_STEP_POSTED, (message.id, encoded_input, now, workflow_id, index))


# Retry -----------------------------------------------------------------------


def retry(
    execute: Execute, sql: ModuleType, post: Post, workflow_id: str, now: float
) -> list[int]:
    """Post again every step whose post failed; return their indexes.

    All of them are posted, or none: the first failed post raises its
    ConveyorError, naming the step, and the caller rolls the transaction
    back. The workflow row's lock (on PostgreSQL) and the `failed` state
    with no message make each step post once, as at an ack. Dead steps are
    not touched: a redrive resumes them. Raises WorkflowNotRetryable for a
    finished workflow or one with no such step.
    """
    row = execute(sql.SELECT_WORKFLOW_LOCKED, (workflow_id,)).fetchone()
    if row is None:
        raise _not_found(workflow_id)
    if row[2] != RUNNING:
        raise WorkflowNotRetryable(
            f"workflow {workflow_id!r} is {row[2]}, so it has no step to post again"
        )
    indexes = [index for (index,) in execute(
        sql.SELECT_UNPOSTED_FAILED_STEPS, (workflow_id,)).fetchall()]
    if not indexes:
        raise WorkflowNotRetryable(
            f"workflow {workflow_id!r} has no step whose post failed; a dead step "
            "resumes when its message is redriven ('conveyor dlq redrive QUEUE --id ID'), "
            "and a cancelled or expired step cannot resume, so cancel the workflow "
            f"('conveyor workflows cancel {workflow_id}') and start it again"
        )
    for index in indexes:
        try:
            _post_step_with_input(execute, sql, post, workflow_id, index, now)
        except ConveyorError as exc:
            raise type(exc)(
                f"step {index} of workflow {workflow_id!r} could not be posted again: "
                f"{exc.detail}"
            ) from exc
    logger.info("Workflow %s: posted steps %s again", workflow_id, indexes)
    return indexes


def _check_input_size(encoded_input: str) -> None:
    if len(encoded_input) > compiler.MAX_STEP_INPUT_BYTES:
        raise PayloadTooLarge(
            f"its input is {len(encoded_input)} bytes as JSON, above the limit of "
            f"{compiler.MAX_STEP_INPUT_BYTES}; have the parent steps return smaller values"
        )


# Retention -------------------------------------------------------------------


def delete_old_workflows(execute: Execute, sql: ModuleType, now: float) -> int:
    """Delete the workflows that finished WORKFLOW_RETENTION_S ago, with their steps."""
    cutoff = now - WORKFLOW_RETENTION_S
    execute(sql.DELETE_OLD_STEPS, (cutoff,))
    return execute(sql.DELETE_OLD_WORKFLOWS, (cutoff,)).rowcount


# Cancel ----------------------------------------------------------------------


def cancel(
    execute: Execute, sql: ModuleType, cancel_message: CancelMessage, workflow_id: str,
    now: float,
) -> None:
    """Cancel a running workflow: no further step is posted, posted messages are cancelled.

    A message that already runs gets a cancel request, as a message cancel
    does. A dead message is removed from its DLQ with a `cancelled` result,
    so a later redrive of that DLQ cannot run it. A finished workflow is
    left as it is.
    """
    row = execute(sql.SELECT_WORKFLOW_LOCKED, (workflow_id,)).fetchone()
    if row is None:
        raise _not_found(workflow_id)
    if row[2] != RUNNING:
        return
    execute(sql.FINISH_WORKFLOW, (CANCELLED, now, workflow_id))
    for (message_id,) in execute(sql.SELECT_POSTED_MESSAGES, (workflow_id,)).fetchall():
        try:
            cancel_message(message_id)
        except (MessageFinished, MessageNotFound):
            continue
    logger.info("Workflow %s cancelled", workflow_id)


# Reads -----------------------------------------------------------------------


def get(execute: Execute, sql: ModuleType, workflow_id: str) -> Workflow:
    """Return a workflow with its steps, or raise WorkflowNotFound."""
    row = execute(sql.SELECT_WORKFLOW, (workflow_id,)).fetchone()
    if row is None:
        raise _not_found(workflow_id)
    steps = [_step_from_row(step_row) for step_row in execute(sql.SELECT_STEP_VIEWS,
                                                               (workflow_id,)).fetchall()]
    return _workflow_from_row(row, steps)


def list_workflows(
    execute: Execute, sql: ModuleType, state: str | None, before_seq: int | None, limit: int
) -> tuple[list[Workflow], int | None]:
    """Return up to `limit` workflows, newest first, and the cursor of the next page.

    A workflow read as failed is stored as running with a stopped step, so
    the running and failed filters test the steps in SQL. Every listed
    running workflow then gets its derived state, failed_step and error,
    whatever the filter, so a filtered list shows what `get` shows.
    """
    query = sql.list_query(state)
    params: list[Any] = [] if state in (None, RUNNING, FAILED) else [state]
    params += [before_seq if before_seq is not None else sql.MAX_SEQ, limit + 1]
    rows = execute(query, tuple(params)).fetchall()
    page = rows[:limit]
    workflows = [_workflow_from_row(row[1:], None) for row in page]
    _derive_list_states(execute, sql, workflows)
    next_cursor = page[-1][0] if len(rows) > limit else None
    return workflows, next_cursor


def _derive_list_states(execute: Execute, sql: ModuleType, workflows: list[Workflow]) -> None:
    """Read the running workflows of a page as failed when one of their steps stopped."""
    for workflow in workflows:
        if workflow.state != RUNNING:
            continue
        stopped = execute(sql.SELECT_FIRST_STOPPED_STEP, (workflow.id,)).fetchone()
        if stopped is not None:
            steps = [_step_from_row(row) for row in execute(
                sql.SELECT_STEP_VIEW, (workflow.id, stopped[0])).fetchall()]
            _apply_failure(workflow, steps)


def _workflow_from_row(row: tuple, steps: list[WorkflowStep] | None) -> Workflow:
    workflow_id, name, state, result_expression, step_count, steps_left, created_at, \
        finished_at = row
    workflow = Workflow(
        id=workflow_id, name=name, state=state, step_count=step_count,
        steps_left=steps_left, created_at=created_at, finished_at=finished_at, steps=steps,
    )
    if steps is None:
        return workflow
    if state == SUCCEEDED:
        results = {step.index: step.result for step in steps}
        workflow.result = compiler.evaluate(orjson.loads(result_expression), results)
    elif state == RUNNING:
        _apply_failure(workflow, steps)
    return workflow


def _apply_failure(workflow: Workflow, steps: list[WorkflowStep]) -> None:
    for step in steps:
        if step.state in STOPPED_STEP_STATES:
            workflow.state = FAILED
            workflow.failed_step = step.index
            workflow.error = f"step {step.index} {step.state}: {step.error}"
            return


def _step_from_row(row: tuple) -> WorkflowStep:
    (index, queue, task, stored_state, parents, message_id, input_value, result, error,
     posted_at, finished_at, message_state, attempts, last_error, result_status) = row
    state, error = step_state(stored_state, message_state, _text(last_error),
                              result_status, _text(error))
    return WorkflowStep(
        index=index, queue=queue, task=task, state=state, parents=orjson.loads(parents),
        message_id=message_id, attempts=attempts, error=error,
        input=None if input_value is None else orjson.loads(input_value),
        result=None if result is None else orjson.loads(result),
        posted_at=posted_at, finished_at=finished_at,
    )


def step_state(
    stored_state: str, message_state: str | None, last_error: str | None,
    result_status: str | None, error: str | None,
) -> tuple[str, str | None]:
    """Return a step's state and error, reading a posted step from its message.

    A posted step whose message is gone is cancelled when the message's
    stored result has status cancelled, and expired otherwise.
    """
    if stored_state != POSTED:
        return stored_state, error
    if message_state == DEAD:
        return FAILED, last_error or "its message is dead"
    if message_state == RESERVED:
        return RUNNING_STEP, last_error
    if message_state is not None:
        return QUEUED, last_error
    if result_status == CANCELLED:
        return CANCELLED, "its message was cancelled"
    return EXPIRED, EXPIRED_ERROR


def _text(value: Any) -> str | None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode(errors="replace")
    return value


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


def _not_found(workflow_id: str) -> WorkflowNotFound:
    return WorkflowNotFound(
        f"no workflow with id {workflow_id!r} is stored; list workflows with "
        "'conveyor workflows list' or GET /v1/workflows"
    )


def check_step_queue(
    queue: str, settings: QueueSettings, workflow: CompiledWorkflow
) -> None:
    """Raise ValidationError unless every step of `queue` can be posted there.

    A FIFO queue needs a group on every message, which step messages do
    not have. A dead-letter queue (one that is its own dead_letter_queue,
    as every automatically created DLQ is) is no place to run steps. Each step's template (its body before any input) must fit
    the queue's max_message_size.
    """
    if settings.is_fifo:
        raise ValidationError(
            f"queue {queue!r} is a fifo queue, which workflow steps cannot use "
            "because their messages have no group; use a standard queue"
        )
    if settings.dead_letter_queue == queue:
        raise ValidationError(
            f"queue {queue!r} is a dead-letter queue (its own dead_letter_queue), "
            "which workflow steps cannot use; use the queue that sends failures there"
        )
    for step in workflow.steps:
        if step.queue == queue:
            # A new id has the length of the workflow id the message will carry.
            message = prepare_step(new_message_id(), step, step.body, step.index)
            try:
                check_for_queue(queue, settings, [message])
            except ConveyorError as exc:
                raise _step_error(step, exc) from exc
