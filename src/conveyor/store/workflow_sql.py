"""Workflow statements both stores share, written with `?` placeholders.

`sqlite_workflow_sql.py` uses them as they are; `postgres_workflow_sql.py`
turns each `?` into psycopg's `%s`. Statements that differ between the two
(lists of indexes, row locks, the schema) live in those modules.
"""

WORKFLOW_COLUMNS = (
    "id, name, state, result_expression, step_count, steps_left, created_at, finished_at"
)
# A key that a stored workflow has already inserts nothing and returns no row.
INSERT_WORKFLOW = (
    "INSERT INTO workflows (id, name, state, result_expression, step_count, steps_left, "
    "created_at, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id"
)
SELECT_WORKFLOW_BY_KEY = "SELECT id FROM workflows WHERE idempotency_key = ?"
INSERT_STEP = (
    "INSERT INTO workflow_steps (workflow_id, step_index, queue, task, body, headers, "
    "priority, max_attempts, input_expression, parents, children, parents_left, state, "
    "delay_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A retried step had failed, so its error and finished_at are cleared.
SET_STEP_POSTED = (
    "UPDATE workflow_steps SET state = 'posted', message_id = ?, input = ?, posted_at = ?, "
    "error = NULL, finished_at = NULL WHERE workflow_id = ? AND step_index = ?"
)
SET_STEP_FAILED = (
    "UPDATE workflow_steps SET state = 'failed', error = ?, finished_at = ? "
    "WHERE workflow_id = ? AND step_index = ?"
)
# Only a posted step finishes, once; RETURNING gives its children.
SET_STEP_SUCCEEDED = (
    "UPDATE workflow_steps SET state = 'succeeded', result = ?, finished_at = ?, attempts = ? "
    "WHERE workflow_id = ? AND step_index = ? AND state = 'posted' RETURNING children"
)
# On PostgreSQL this UPDATE locks the workflow row until the ack commits,
# which serializes the acks of one workflow's steps.
COUNT_DOWN_WORKFLOW = (
    "UPDATE workflows SET steps_left = steps_left - 1 WHERE id = ? "
    "RETURNING state, steps_left"
)
FINISH_WORKFLOW = "UPDATE workflows SET state = ?, finished_at = ? WHERE id = ?"
SELECT_STEP_TEMPLATE = (
    "SELECT queue, body, headers, priority, max_attempts, input_expression, parents, delay_s "
    "FROM workflow_steps WHERE workflow_id = ? AND step_index = ?"
)
SELECT_WORKFLOW = f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?"
# Steps whose post failed: stored failed and never given a message.
SELECT_UNPOSTED_FAILED_STEPS = (
    "SELECT step_index FROM workflow_steps WHERE workflow_id = ? AND state = 'failed' "
    "AND message_id IS NULL ORDER BY step_index"
)
SELECT_POSTED_MESSAGES = (
    "SELECT message_id FROM workflow_steps WHERE workflow_id = ? AND state = 'posted' "
    "ORDER BY step_index"
)
STEP_VIEW = (
    "SELECT s.step_index, s.queue, s.task, s.state, s.parents, s.message_id, s.input, "
    "s.result, s.error, s.posted_at, s.finished_at, m.state, "
    "COALESCE(m.receive_count, s.attempts), "
    "m.last_error, r.status FROM workflow_steps AS s "
    "LEFT JOIN messages AS m ON m.id = s.message_id "
    "LEFT JOIN results AS r ON r.id = s.message_id "
)
SELECT_STEP_VIEWS = STEP_VIEW + "WHERE s.workflow_id = ? ORDER BY s.step_index"
SELECT_STEP_VIEW = STEP_VIEW + "WHERE s.workflow_id = ? AND s.step_index = ?"
# A step stopped its workflow: it failed unposted, or its posted message is
# dead or gone without an ack.
STOPPED_STEP = (
    "(s.state = 'failed' OR (s.state = 'posted' AND (m.id IS NULL OR m.state = 'dead')))"
)
SELECT_FIRST_STOPPED_STEP = (
    "SELECT s.step_index FROM workflow_steps AS s "
    "LEFT JOIN messages AS m ON m.id = s.message_id "
    f"WHERE s.workflow_id = ? AND {STOPPED_STEP} ORDER BY s.step_index LIMIT 1"
)
HAS_STOPPED_STEP = (
    "EXISTS (SELECT 1 FROM workflow_steps AS s "
    "LEFT JOIN messages AS m ON m.id = s.message_id "
    f"WHERE s.workflow_id = w.id AND {STOPPED_STEP})"
)
LIST_WORKFLOWS = f"SELECT w.seq, {WORKFLOW_COLUMNS} FROM workflows AS w WHERE "
LIST_END = " AND w.seq < ? ORDER BY w.seq DESC LIMIT ?"
# The list statements by state filter: None lists every workflow.
LIST_BY_STATE = {
    None: LIST_WORKFLOWS + "TRUE" + LIST_END,
    "running": LIST_WORKFLOWS + f"w.state = 'running' AND NOT {HAS_STOPPED_STEP}" + LIST_END,
    "failed": LIST_WORKFLOWS + f"w.state = 'running' AND {HAS_STOPPED_STEP}" + LIST_END,
    "succeeded": LIST_WORKFLOWS + "w.state = ?" + LIST_END,
    "cancelled": LIST_WORKFLOWS + "w.state = ?" + LIST_END,
}
# Retention: the steps, then the rows, of workflows finished before a time.
DELETE_OLD_STEPS = (
    "DELETE FROM workflow_steps WHERE workflow_id IN "
    "(SELECT id FROM workflows WHERE finished_at <= ?)"
)
DELETE_OLD_WORKFLOWS = "DELETE FROM workflows WHERE finished_at <= ?"
# The cursor of a first page: larger than any seq.
MAX_SEQ = 2**62
