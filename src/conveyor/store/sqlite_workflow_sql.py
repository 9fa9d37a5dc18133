"""The SQLite store's workflow tables and statements.

Tables and indexes:

- `workflows`: one row per workflow. `seq` is the start order and the
  list cursor. `state` is stored as running, succeeded or cancelled, and
  failed is derived on read. `result_expression` is JSON naming the steps
  whose results form the workflow's result. `steps_left` counts the steps
  that have not succeeded yet. `idempotency_key` is unique when set
  (`workflows_idempotency`).
  - `workflows_finished`: retention of finished workflows.
- `workflow_steps`: one row per step, by (workflow_id, step_index): the
  message template (`queue`, JSON `body` and `headers`, `priority`,
  `max_attempts`), `task` (the task name of a task-call body), the JSON
  `input_expression`, `parents` and `children` lists, `parents_left`,
  `state` (waiting, posted, succeeded or failed), the `message_id` once
  posted, the JSON `input` and `result`, `error`, and `attempts` (the
  message's receive count, stored at the ack that succeeds it), and the
  message's `delay_s`.
  - `workflow_steps_message`: finds the step of an acked message.
"""

from __future__ import annotations

import orjson

from .workflow_sql import (  # noqa: F401 - the shared statements, used unchanged
    COUNT_DOWN_WORKFLOW,
    DELETE_OLD_STEPS,
    DELETE_OLD_WORKFLOWS,
    FINISH_WORKFLOW,
    INSERT_STEP,
    INSERT_WORKFLOW,
    LIST_BY_STATE,
    MAX_SEQ,
    SELECT_FIRST_STOPPED_STEP,
    SELECT_POSTED_MESSAGES,
    SELECT_STEP_TEMPLATE,
    SELECT_STEP_VIEW,
    SELECT_STEP_VIEWS,
    SELECT_UNPOSTED_FAILED_STEPS,
    SELECT_WORKFLOW,
    SELECT_WORKFLOW_BY_KEY,
    SET_STEP_FAILED,
    SET_STEP_POSTED,
    SET_STEP_SUCCEEDED,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS workflows (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  TEXT NOT NULL UNIQUE,
    name                TEXT,
    state               TEXT NOT NULL,
    result_expression   TEXT NOT NULL,
    step_count          INTEGER NOT NULL,
    steps_left          INTEGER NOT NULL,
    created_at          REAL NOT NULL,
    finished_at         REAL,
    idempotency_key     TEXT
);
CREATE INDEX IF NOT EXISTS workflows_state ON workflows (state, seq);
CREATE INDEX IF NOT EXISTS workflows_finished
    ON workflows (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS workflow_steps (
    workflow_id         TEXT NOT NULL,
    step_index          INTEGER NOT NULL,
    queue               TEXT NOT NULL,
    task                TEXT,
    body                TEXT NOT NULL,
    headers             TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    max_attempts        INTEGER,
    input_expression    TEXT NOT NULL,
    parents             TEXT NOT NULL,
    children            TEXT NOT NULL,
    parents_left        INTEGER NOT NULL,
    state               TEXT NOT NULL,
    message_id          TEXT,
    input               TEXT,
    result              TEXT,
    error               TEXT,
    posted_at           REAL,
    finished_at         REAL,
    attempts            INTEGER,
    delay_s             REAL,
    PRIMARY KEY (workflow_id, step_index)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS workflow_steps_message
    ON workflow_steps (message_id) WHERE message_id IS NOT NULL;
"""

# Columns added after the first release of the workflow tables, which
# sqlite_runs.add_missing_columns adds to an older file.
ADDED_STEP_COLUMNS = (("attempts", "INTEGER"), ("delay_s", "REAL"))
ADDED_WORKFLOW_COLUMNS = (("idempotency_key", "TEXT"),)
# Created after the column is added, so that an older file gets it too.
CREATE_IDEMPOTENCY_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS workflows_idempotency ON workflows (idempotency_key) "
    "WHERE idempotency_key IS NOT NULL"
)

# One lookup per ack batch: the steps among the acked message ids (a JSON array).
SELECT_STEPS_BY_MESSAGE = (
    "SELECT s.message_id, s.workflow_id, s.step_index, m.receive_count "
    "FROM workflow_steps AS s JOIN messages AS m ON m.id = s.message_id "
    "WHERE s.message_id IN (SELECT value FROM json_each(?))"
)
COUNT_DOWN_PARENTS = (
    "UPDATE workflow_steps SET parents_left = parents_left - 1 "
    "WHERE workflow_id = ? AND step_index IN (SELECT value FROM json_each(?)) "
    "RETURNING step_index, parents_left"
)
SELECT_STEP_RESULTS = (
    "SELECT step_index, result FROM workflow_steps "
    "WHERE workflow_id = ? AND step_index IN (SELECT value FROM json_each(?))"
)
# The single writer thread already serializes every write.
SELECT_WORKFLOW_LOCKED = SELECT_WORKFLOW


def int_list(values: list[int]) -> str:
    """Return a list of indexes as the JSON array json_each reads."""
    return orjson.dumps(values).decode()


def list_query(state: str | None) -> str:
    """Return the list statement for a state filter (None: every workflow)."""
    return LIST_BY_STATE[state]
