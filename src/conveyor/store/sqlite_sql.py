"""Schema and named statements of the SQLite store.

Tables and indexes:

- `queues`: one row per queue, its settings as JSON.
- `messages`: every stored message. `seq` (the rowid) is the post order and
  is kept when a message moves to a DLQ and back, so FIFO order survives a
  redrive. `state` is delayed, ready, reserved or dead. An acked message is
  deleted; a dead-lettered one moves to its DLQ (`queue` changes and
  `source_queue` remembers where it came from).
  - `messages_ready`: the reserve query, highest priority first, then post
    order. Partial, so rows in other states never enter the hot index.
  - `messages_delayed`: finds delayed messages that became due.
  - `messages_reserved`: finds leases that expired.
  - `messages_group`: the head of each FIFO group.
  - `messages_expiry`: retention.
  - `messages_dead_source`: dead counts per source queue.
  Later columns (RUN_COLUMNS, added to older files on open):
  `cancel_requested`, the last reported `progress`, `progress_text` and
  `progress_at`, and the completion record `completed_at` and
  `completed_result`.
- `dedup`: dedup ids and the message each one names, until the window ends;
  kept after the message is acked. An idempotency key is stored as a BLOB
  (see `idempotency.py`), so it never equals a dedup id, which is TEXT.
- `results`: the outcome of finished messages, until their time to live ends,
  with the last `progress` and `progress_text` (RUN_COLUMNS).
- `attempt_logs`: the captured logs of each attempt, by message id and
  attempt number, until they expire with the message's result.
  - `attempt_logs_expiry`: retention.

The flow-control tables are in `sqlite_flow_sql.py`.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    name        TEXT PRIMARY KEY,
    settings    TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS messages (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    queue           TEXT NOT NULL,
    state           TEXT NOT NULL,
    priority        INTEGER NOT NULL DEFAULT 0,
    grp             TEXT,
    dedup_id        TEXT,
    body            BLOB NOT NULL,
    is_binary       INTEGER NOT NULL DEFAULT 0,
    headers         TEXT,
    posted_at       REAL NOT NULL,
    due_at          REAL NOT NULL,
    reserved_until  REAL,
    receipt         TEXT,
    receive_count   INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER,
    last_error      TEXT,
    source_queue    TEXT,
    expires_at      REAL NOT NULL
);

CREATE INDEX IF NOT EXISTS messages_ready
    ON messages (queue, priority DESC, seq) WHERE state = 'ready';
CREATE INDEX IF NOT EXISTS messages_delayed
    ON messages (queue, due_at) WHERE state = 'delayed';
CREATE INDEX IF NOT EXISTS messages_reserved
    ON messages (queue, reserved_until) WHERE state = 'reserved';
CREATE INDEX IF NOT EXISTS messages_group
    ON messages (queue, grp, seq) WHERE grp IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_expiry ON messages (expires_at);
CREATE INDEX IF NOT EXISTS messages_dead_source
    ON messages (source_queue) WHERE state = 'dead';

CREATE TABLE IF NOT EXISTS dedup (
    queue       TEXT NOT NULL,
    dedup_id    TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    expires_at  REAL NOT NULL,
    PRIMARY KEY (queue, dedup_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup (expires_at);

CREATE TABLE IF NOT EXISTS results (
    id           TEXT PRIMARY KEY,
    queue        TEXT NOT NULL,
    status       TEXT NOT NULL,
    value        BLOB,
    error        TEXT,
    finished_at  REAL NOT NULL,
    expires_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_expiry ON results (expires_at);
"""

MESSAGE_COLUMNS = (
    "id, queue, state, body, is_binary, headers, priority, grp, dedup_id, "
    "posted_at, due_at, receive_count, max_attempts, last_error, "
    "source_queue, expires_at, reserved_until, receipt, cancel_requested, "
    "progress, progress_text, progress_at, completed_at, completed_result"
)

# Queues.
SELECT_QUEUE = "SELECT name, settings, created_at, updated_at FROM queues WHERE name = ?"
SELECT_QUEUES = "SELECT name, settings, created_at, updated_at FROM queues ORDER BY name"
INSERT_QUEUE = "INSERT INTO queues (name, settings, created_at, updated_at) VALUES (?, ?, ?, ?)"
UPDATE_QUEUE = "UPDATE queues SET settings = ?, updated_at = ? WHERE name = ?"
DELETE_QUEUE = "DELETE FROM queues WHERE name = ?"
DELETE_QUEUE_MESSAGES = "DELETE FROM messages WHERE queue = ?"
DELETE_QUEUE_DEDUP = "DELETE FROM dedup WHERE queue = ?"

# Post.
SELECT_DEDUP = "SELECT message_id FROM dedup WHERE queue = ? AND dedup_id = ? AND expires_at > ?"
UPSERT_DEDUP = (
    "INSERT OR REPLACE INTO dedup (queue, dedup_id, message_id, expires_at) "
    "VALUES (?, ?, ?, ?)"
)
INSERT_MESSAGE = (
    "INSERT INTO messages (id, queue, state, priority, grp, dedup_id, body, "
    "is_binary, headers, posted_at, due_at, max_attempts, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# Reserve: make due messages ready, then pick and lease them.
PROMOTE_DUE = (
    "UPDATE messages SET state = 'ready' "
    "WHERE queue = ? AND state = 'delayed' AND due_at <= ?"
)
SELECT_EXPIRED_LEASES = (
    "SELECT seq, id, queue, receive_count, max_attempts, cancel_requested, "
    "completed_at FROM messages "
    "WHERE queue = ? AND state = 'reserved' AND reserved_until <= ?"
)
SELECT_ALL_EXPIRED_LEASES = (
    "SELECT seq, id, queue, receive_count, max_attempts, cancel_requested, "
    "completed_at FROM messages "
    "WHERE state = 'reserved' AND reserved_until <= ? LIMIT 1000"
)
SELECT_READY = (
    "SELECT seq, length(body) FROM messages WHERE queue = ? AND state = 'ready' "
    "ORDER BY priority DESC, seq LIMIT ?"
)
# A FIFO message is deliverable only when no older message of its group is
# still pending (ready, delayed or reserved) and no message of its group is
# reserved: that keeps post order and one message in flight per group. The
# second rule matters after a redrive, which puts a dead head back at its
# old place while a later message of the group may be in flight. Dead rows
# (in a queue that is its own DLQ) block nothing.
SELECT_READY_FIFO = (
    "SELECT m.seq, length(m.body) FROM messages AS m WHERE m.queue = ? AND m.state = 'ready' "
    "AND NOT EXISTS (SELECT 1 FROM messages AS o WHERE o.queue = m.queue "
    "AND o.grp = m.grp AND o.state != 'dead' "
    "AND (o.seq < m.seq OR o.state = 'reserved')) "
    "ORDER BY m.priority DESC, m.seq LIMIT ?"
)

# The same rule for groups that may have up to K messages in flight
# (group_max_in_flight): a message is deliverable while fewer than K of its
# group's messages are older and pending, or newer and reserved. The second
# parameter is K - 1, so the subquery stops after K rows.
SELECT_READY_FIFO_GROUPS = (
    "SELECT m.seq, length(m.body) FROM messages AS m WHERE m.queue = ? AND m.state = 'ready' "
    "AND NOT EXISTS (SELECT 1 FROM messages AS o WHERE o.queue = m.queue "
    "AND o.grp = m.grp AND o.state != 'dead' "
    "AND (o.seq < m.seq OR o.state = 'reserved') LIMIT 1 OFFSET ?) "
    "ORDER BY m.priority DESC, m.seq LIMIT ?"
)


def lease_messages(count: int) -> str:
    """Return the statement that leases `count` messages in one UPDATE.

    Parameters: reserved_until, then (seq, receipt) for each message. The
    rows come back in no particular order, each with its seq first.
    """
    values = ", ".join(["(?, ?)"] * count)
    return (
        "UPDATE messages SET state = 'reserved', receipt = leases.column2, "
        "reserved_until = ?, receive_count = receive_count + 1 "
        f"FROM (VALUES {values}) AS leases WHERE messages.seq = leases.column1 "
        f"RETURNING messages.seq, {MESSAGE_COLUMNS}"
    )

# Ack, nack, touch: every statement checks the receipt and the lease.
SELECT_LEASED = (
    "SELECT seq, receive_count, max_attempts, cancel_requested, expires_at "
    "FROM messages WHERE id = ? "
    "AND queue = ? AND state = 'reserved' AND receipt = ? AND reserved_until > ?"
)
SELECT_MESSAGE_QUEUE = "SELECT queue, source_queue FROM messages WHERE id = ?"
DELETE_MESSAGE = "DELETE FROM messages WHERE seq = ?"
# A batch of acks in one statement. The CROSS JOIN keeps the batch as the
# outer loop, so each entry is one lookup by id rather than a scan of every
# reserved row.
ACK_LEASED = (
    "DELETE FROM messages WHERE seq IN (SELECT m.seq FROM json_each(?) AS a "
    "CROSS JOIN messages AS m ON m.id = json_extract(a.value, '$[0]') "
    "WHERE m.receipt = json_extract(a.value, '$[1]') AND m.queue = ? "
    "AND m.state = 'reserved' AND m.reserved_until > ?) RETURNING id, receive_count"
)
INSERT_RESULT = (
    "INSERT OR REPLACE INTO results (id, queue, status, value, error, "
    "finished_at, expires_at, progress, progress_text) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
RETRY_MESSAGE = (
    "UPDATE messages SET state = ?, due_at = ?, receipt = NULL, "
    "reserved_until = NULL, last_error = COALESCE(?, last_error) WHERE seq = ?"
)
RELEASE_MESSAGE = (
    "UPDATE messages SET state = 'ready', due_at = ?, receipt = NULL, "
    "reserved_until = NULL, receive_count = MAX(receive_count - 1, 0) "
    "WHERE seq = ?"
)
EXTEND_LEASE = (
    "UPDATE messages SET reserved_until = ? WHERE seq = ? RETURNING cancel_requested"
)
DEAD_LETTER_MESSAGE = (
    "UPDATE messages SET queue = ?, state = 'dead', source_queue = ?, "
    "last_error = COALESCE(?, last_error), receipt = NULL, "
    "reserved_until = NULL, expires_at = ?, dead_at = ? WHERE seq = ?"
)

# Redrive.
# Pages through a DLQ by seq, so messages that stay (their source queue is
# gone) are passed over instead of fetched again.
SELECT_DEAD = (
    "SELECT seq, id, source_queue FROM messages WHERE queue = ? AND state = 'dead' "
    "AND seq > ? ORDER BY seq LIMIT ?"
)
SELECT_DEAD_BY_ID = (
    "SELECT seq, id, source_queue FROM messages "
    "WHERE queue = ? AND state = 'dead' AND id = ?"
)
REDRIVE_MESSAGE = (
    "UPDATE messages SET queue = ?, state = 'ready', source_queue = NULL, "
    "receive_count = 0, due_at = ?, expires_at = ?, dead_at = NULL WHERE seq = ?"
)

# Retention.
DELETE_EXPIRED_MESSAGES = (
    "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages "
    "WHERE expires_at <= ? LIMIT 1000)"
)
DELETE_EXPIRED_DEDUP = "DELETE FROM dedup WHERE expires_at <= ?"
DELETE_EXPIRED_RESULTS = "DELETE FROM results WHERE expires_at <= ?"

# Reads.
SELECT_MESSAGE = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?"
SELECT_PEEK = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE queue = ? "
    "ORDER BY seq LIMIT ? OFFSET ?"
)
SELECT_PEEK_STATE = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE queue = ? AND state = ? "
    "ORDER BY seq LIMIT ? OFFSET ?"
)
SELECT_RESULT = (
    "SELECT id, queue, status, value, error, finished_at, expires_at, progress, "
    "progress_text FROM results WHERE id = ? AND expires_at > ?"
)
# Delayed messages already due count as ready: promotion happens lazily at
# the next reserve.
SELECT_STATE_COUNTS = (
    "SELECT CASE WHEN state = 'delayed' AND due_at <= ?1 THEN 'ready' "
    "ELSE state END AS s, COUNT(*), MIN(posted_at) "
    "FROM messages WHERE queue = ?2 GROUP BY s"
)
SELECT_DEAD_FROM_SOURCE = (
    "SELECT COUNT(*) FROM messages WHERE source_queue = ? AND state = 'dead' "
    "AND queue != source_queue"
)
SELECT_NEXT_DUE = (
    "SELECT MIN(due_at) FROM messages WHERE queue = ? AND state = 'delayed'"
)
SELECT_NEXT_LEASE_END = (
    "SELECT MIN(reserved_until) FROM messages WHERE queue = ? AND state = 'reserved'"
)

# Task runs: completion records, progress, cancellation and attempt logs.

# Columns added after the first release, per table, with their types. A
# file made by an older Conveyor gets them on open (see
# sqlite_runs.add_missing_columns), so every file has the same columns.
RUN_COLUMNS = {
    "messages": (
        ("cancel_requested", "INTEGER NOT NULL DEFAULT 0"),
        ("progress", "REAL"),
        ("progress_text", "TEXT"),
        ("progress_at", "REAL"),
        ("completed_at", "REAL"),
        ("completed_result", "BLOB"),
    ),
    "results": (
        ("progress", "REAL"),
        ("progress_text", "TEXT"),
    ),
}
RUN_SCHEMA = """
CREATE TABLE IF NOT EXISTS attempt_logs (
    message_id  TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    queue       TEXT NOT NULL,
    text        TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL,
    PRIMARY KEY (message_id, attempt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attempt_logs_expiry ON attempt_logs (expires_at);
"""
SELECT_TABLE_COLUMNS = "SELECT name FROM pragma_table_info(?)"

SET_COMPLETED = "UPDATE messages SET completed_at = ?, completed_result = ? WHERE seq = ?"
SET_PROGRESS = (
    "UPDATE messages SET progress = ?, progress_text = ?, progress_at = ? "
    "WHERE seq = ? RETURNING cancel_requested"
)
# A cancel finds the message by id in any queue.
SELECT_CANCEL_TARGET = (
    "SELECT seq, queue, state, reserved_until FROM messages WHERE id = ?"
)
REQUEST_CANCEL = "UPDATE messages SET cancel_requested = 1 WHERE seq = ?"
SELECT_RESULT_STATUS = "SELECT status FROM results WHERE id = ? AND expires_at > ?"

INSERT_ATTEMPT_LOG = (
    "INSERT OR REPLACE INTO attempt_logs (message_id, attempt, queue, text, "
    "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)"
)
SET_LOGS_EXPIRY = "UPDATE attempt_logs SET expires_at = ? WHERE message_id = ?"
DELETE_MESSAGE_LOGS = "DELETE FROM attempt_logs WHERE message_id = ?"
SELECT_LOGS = (
    "SELECT message_id, attempt, queue, text, created_at, expires_at FROM attempt_logs "
    "WHERE message_id = ? AND expires_at > ? ORDER BY attempt"
)
SELECT_ATTEMPT_LOG = (
    "SELECT message_id, attempt, queue, text, created_at, expires_at FROM attempt_logs "
    "WHERE message_id = ? AND attempt = ? AND expires_at > ?"
)
DELETE_EXPIRED_LOGS = "DELETE FROM attempt_logs WHERE expires_at <= ?"
# A dead message's logs stay at least as long as the DLQ keeps it; the
# message is named by its seq.
EXTEND_LOGS_EXPIRY = (
    "UPDATE attempt_logs SET expires_at = MAX(expires_at, ?) "
    "WHERE message_id = (SELECT id FROM messages WHERE seq = ?)"
)
