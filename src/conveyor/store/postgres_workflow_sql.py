"""The PostgreSQL store's workflow tables (migration 6) and statements.

The tables match the SQLite store's (see `sqlite_workflow_sql.py`), with
`seq` an identity column. JSON is stored as text: jsonb rejects the
escaped NUL (\\u0000) that a JSON string may contain.
"""

from __future__ import annotations

from . import workflow_sql as shared


def _placeholders(statement: str) -> str:
    return statement.replace("?", "%s")


CREATE_TABLES = [
    """
    CREATE TABLE workflows (
        seq                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id                  text NOT NULL UNIQUE,
        name                text,
        state               text NOT NULL,
        result_expression   text NOT NULL,
        step_count          integer NOT NULL,
        steps_left          integer NOT NULL,
        created_at          double precision NOT NULL,
        finished_at         double precision
    )
    """,
    "CREATE INDEX workflows_state ON workflows (state, seq)",
    "CREATE INDEX workflows_finished ON workflows (finished_at) "
    "WHERE finished_at IS NOT NULL",
    """
    CREATE TABLE workflow_steps (
        workflow_id         text NOT NULL,
        step_index          integer NOT NULL,
        queue               text NOT NULL,
        task                text,
        body                text NOT NULL,
        headers             text NOT NULL,
        priority            integer NOT NULL,
        max_attempts        integer,
        input_expression    text NOT NULL,
        parents             text NOT NULL,
        children            text NOT NULL,
        parents_left        integer NOT NULL,
        state               text NOT NULL,
        message_id          text,
        input               text,
        result              text,
        error               text,
        posted_at           double precision,
        finished_at         double precision,
        PRIMARY KEY (workflow_id, step_index)
    )
    """,
    "CREATE INDEX workflow_steps_message ON workflow_steps (message_id) "
    "WHERE message_id IS NOT NULL",
]
# Schema version 8: a succeeded step keeps its message's receive count.
ADD_STEP_ATTEMPTS = ["ALTER TABLE workflow_steps ADD COLUMN attempts integer"]
# Schema version 10: the delay of each step's message.
ADD_STEP_DELAY = ["ALTER TABLE workflow_steps ADD COLUMN delay_s double precision"]
# Schema version 9: idempotency keys of workflow starts.
ADD_IDEMPOTENCY_KEY = [
    "ALTER TABLE workflows ADD COLUMN idempotency_key text",
    "CREATE UNIQUE INDEX workflows_idempotency ON workflows (idempotency_key) "
    "WHERE idempotency_key IS NOT NULL",
]

INSERT_WORKFLOW = _placeholders(shared.INSERT_WORKFLOW)
INSERT_STEP = _placeholders(shared.INSERT_STEP)
SET_STEP_POSTED = _placeholders(shared.SET_STEP_POSTED)
SET_STEP_FAILED = _placeholders(shared.SET_STEP_FAILED)
SET_STEP_SUCCEEDED = _placeholders(shared.SET_STEP_SUCCEEDED)
COUNT_DOWN_WORKFLOW = _placeholders(shared.COUNT_DOWN_WORKFLOW)
FINISH_WORKFLOW = _placeholders(shared.FINISH_WORKFLOW)
SELECT_STEP_TEMPLATE = _placeholders(shared.SELECT_STEP_TEMPLATE)
SELECT_WORKFLOW = _placeholders(shared.SELECT_WORKFLOW)
SELECT_WORKFLOW_BY_KEY = _placeholders(shared.SELECT_WORKFLOW_BY_KEY)
SELECT_WORKFLOW_LOCKED = SELECT_WORKFLOW + " FOR UPDATE"
SELECT_POSTED_MESSAGES = _placeholders(shared.SELECT_POSTED_MESSAGES)
SELECT_STEP_VIEWS = _placeholders(shared.SELECT_STEP_VIEWS)
SELECT_STEP_VIEW = _placeholders(shared.SELECT_STEP_VIEW)
SELECT_UNPOSTED_FAILED_STEPS = _placeholders(shared.SELECT_UNPOSTED_FAILED_STEPS)
SELECT_FIRST_STOPPED_STEP = _placeholders(shared.SELECT_FIRST_STOPPED_STEP)
MAX_SEQ = shared.MAX_SEQ
DELETE_OLD_STEPS = _placeholders(shared.DELETE_OLD_STEPS)
DELETE_OLD_WORKFLOWS = _placeholders(shared.DELETE_OLD_WORKFLOWS)

SELECT_STEPS_BY_MESSAGE = (
    "SELECT s.message_id, s.workflow_id, s.step_index, m.receive_count "
    "FROM workflow_steps AS s JOIN messages AS m ON m.id = s.message_id "
    "WHERE s.message_id = ANY(%s::text[])"
)
COUNT_DOWN_PARENTS = (
    "UPDATE workflow_steps SET parents_left = parents_left - 1 "
    "WHERE workflow_id = %s AND step_index = ANY(%s::integer[]) "
    "RETURNING step_index, parents_left"
)
SELECT_STEP_RESULTS = (
    "SELECT step_index, result FROM workflow_steps "
    "WHERE workflow_id = %s AND step_index = ANY(%s::integer[])"
)
# The ack of a batch and the lookup of its workflow steps in one round trip.
ACK_LEASED_STEPS = (
    "WITH acked AS (DELETE FROM messages AS m "
    "USING unnest(%s::text[], %s::text[]) AS a(id, receipt) "
    "WHERE m.id = a.id AND m.queue = %s AND m.state = 'reserved' "
    "AND m.receipt = a.receipt AND m.reserved_until > %s "
    "RETURNING m.id, m.receive_count) "
    "SELECT acked.id, acked.receive_count, s.workflow_id, s.step_index FROM acked "
    "LEFT JOIN workflow_steps AS s ON s.message_id = acked.id"
)
LIST_BY_STATE = {
    state: _placeholders(query) for state, query in shared.LIST_BY_STATE.items()
}


def int_list(values: list[int]) -> list[int]:
    return values


def list_query(state: str | None) -> str:
    return LIST_BY_STATE[state]
