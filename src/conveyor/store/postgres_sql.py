"""Schema and named statements of the PostgreSQL store.

Every table lives in the first schema of the connection's `search_path`
(`current_schema()`), so one database can hold several Conveyor stores.

Tables and indexes:

- `schema_version`: one row per applied migration (see `postgres_schema.py`),
  with `applied_at` (timestamptz) from version 2 on. The largest `version`
  is the schema's. The store creates the tables when the schema is empty
  and rejects a schema whose version differs from SCHEMA_VERSION.
- `queues`: one row per queue, its settings as JSON text.
- `messages`: every stored message. `seq` (an identity column) is the post
  order and is kept when a message moves to a DLQ and back, so FIFO order
  survives a redrive. `state` is delayed, ready, reserved or dead. An acked
  message is deleted; a dead-lettered one moves to its DLQ (`queue`
  changes and `source_queue` remembers where it came from). `grp`,
  `dedup_id` and `last_error` are UTF-8 bytes (bytea) because PostgreSQL
  text cannot contain NUL, which those strings may.
  - `messages_ready`: the reserve query, highest priority first, then post
    order. Partial, so rows in other states never enter the hot index.
  - `messages_delayed`: finds delayed messages that became due.
  - `messages_reserved`: finds leases that expired.
  - `messages_group`: the head of each FIFO group.
  - `messages_expiry`: retention.
  - `messages_dead_source`: dead counts per source queue.
  Version 4 adds `cancel_requested`, the last reported `progress`,
  `progress_text` (bytea) and `progress_at`, and the completion record
  `completed_at` and `completed_result`.
- `dedup`: dedup ids and the message each one names, until the window ends;
  kept after the message is acked. An idempotency key is stored with a
  0xFF first byte (see `idempotency.py`), which no UTF-8 dedup id has.
- `results`: the outcome of finished messages, until their time to live ends,
  with the last `progress` and `progress_text` from version 4.
- The flow-control tables (versions 3 and 5) are in `postgres_flow_sql.py`,
  and so is `messages.dead_at` (version 5), when a message was dead-lettered.
- The workflow tables (version 6) are in `postgres_workflow_sql.py`.
- `attempt_logs` (version 4): the captured logs of each attempt (bytea), by
  message id and attempt number, until they expire with the message's
  result.
  - `attempt_logs_expiry`: retention.

Placeholders are psycopg's `%s`. Times are Unix seconds (double precision).
"""

SCHEMA_VERSION = 11

# Taken (as a transaction-level advisory lock) while the schema is checked
# or created, so two servers that start together do not both create it.
SCHEMA_LOCK_KEY = 0x636F6E7665796F  # "conveyo" in ASCII

SELECT_CURRENT_SCHEMA = "SELECT current_schema()"
SELECT_TABLE_EXISTS = (
    "SELECT to_regclass(quote_ident(current_schema()) || '.' || quote_ident(%s)) IS NOT NULL"
)
SELECT_SCHEMA_VERSION = "SELECT max(version) FROM schema_version"
LOCK_SCHEMA = "SELECT pg_advisory_xact_lock(%s)"

CREATE_SCHEMA = [
    "CREATE TABLE schema_version (version integer NOT NULL)",
    """
    CREATE TABLE queues (
        name        text PRIMARY KEY,
        settings    text NOT NULL,
        created_at  double precision NOT NULL,
        updated_at  double precision NOT NULL
    )
    """,
    """
    CREATE TABLE messages (
        seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id              text NOT NULL UNIQUE,
        queue           text NOT NULL,
        state           text NOT NULL
                        CHECK (state IN ('delayed', 'ready', 'reserved', 'dead')),
        priority        integer NOT NULL DEFAULT 0,
        grp             bytea,
        dedup_id        bytea,
        body            bytea NOT NULL,
        is_binary       boolean NOT NULL DEFAULT false,
        headers         text,
        posted_at       double precision NOT NULL,
        due_at          double precision NOT NULL,
        reserved_until  double precision,
        receipt         text,
        receive_count   integer NOT NULL DEFAULT 0,
        max_attempts    integer,
        last_error      bytea,
        source_queue    text,
        expires_at      double precision NOT NULL
    )
    """,
    "CREATE INDEX messages_ready ON messages (queue, priority DESC, seq) "
    "WHERE state = 'ready'",
    "CREATE INDEX messages_delayed ON messages (queue, due_at) WHERE state = 'delayed'",
    "CREATE INDEX messages_reserved ON messages (queue, reserved_until) "
    "WHERE state = 'reserved'",
    "CREATE INDEX messages_group ON messages (queue, grp, seq) WHERE grp IS NOT NULL",
    "CREATE INDEX messages_expiry ON messages (expires_at)",
    "CREATE INDEX messages_dead_source ON messages (source_queue) WHERE state = 'dead'",
    """
    CREATE TABLE dedup (
        queue       text NOT NULL,
        dedup_id    bytea NOT NULL,
        message_id  text NOT NULL,
        expires_at  double precision NOT NULL,
        PRIMARY KEY (queue, dedup_id)
    )
    """,
    "CREATE INDEX dedup_expiry ON dedup (expires_at)",
    """
    CREATE TABLE results (
        id           text PRIMARY KEY,
        queue        text NOT NULL,
        status       text NOT NULL,
        value        bytea,
        error        bytea,
        finished_at  double precision NOT NULL,
        expires_at   double precision NOT NULL
    )
    """,
    "CREATE INDEX results_expiry ON results (expires_at)",
]
INSERT_SCHEMA_VERSION = "INSERT INTO schema_version (version) VALUES (%s)"

MESSAGE_COLUMNS = (
    "id, queue, state, body, is_binary, headers, priority, grp, dedup_id, "
    "posted_at, due_at, receive_count, max_attempts, last_error, "
    "source_queue, expires_at, reserved_until, receipt, cancel_requested, "
    "progress, progress_text, progress_at, completed_at, completed_result"
)

# Wake-ups: sent inside the transaction, delivered by PostgreSQL on commit.
NOTIFY = "SELECT pg_notify(%s, %s)"

# Queues. Operations on a queue's messages read its row FOR KEY SHARE, so a
# concurrent delete waits for them (and they for it) while settings updates
# do not block them.
SELECT_QUEUE = "SELECT name, settings, created_at, updated_at FROM queues WHERE name = %s"
SELECT_QUEUE_SHARED = SELECT_QUEUE + " FOR KEY SHARE"
SELECT_QUEUES = "SELECT name, settings, created_at, updated_at FROM queues ORDER BY name"
INSERT_QUEUE = (
    "INSERT INTO queues (name, settings, created_at, updated_at) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (name) DO NOTHING RETURNING name"
)
UPDATE_QUEUE = "UPDATE queues SET settings = %s, updated_at = %s WHERE name = %s"
DELETE_QUEUE = "DELETE FROM queues WHERE name = %s"
DELETE_QUEUE_MESSAGES = "DELETE FROM messages WHERE queue = %s"
DELETE_QUEUE_DEDUP = "DELETE FROM dedup WHERE queue = %s"

# Post. A FIFO post holds its groups' advisory locks until commit, so the
# seqs of one group are handed out in commit order (see LOCK_GROUPS).
# The dedup upsert claims an id unless an unexpired entry has it. A
# concurrent post of the same id waits for the first one's commit.
CLAIM_DEDUP = (
    "INSERT INTO dedup AS d (queue, dedup_id, message_id, expires_at) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (queue, dedup_id) DO UPDATE "
    "SET message_id = EXCLUDED.message_id, expires_at = EXCLUDED.expires_at "
    "WHERE d.expires_at <= %s RETURNING message_id"
)
SELECT_DEDUP = "SELECT message_id FROM dedup WHERE queue = %s AND dedup_id = %s"
# A whole post batch in one statement: one array per column. The rows take
# their seqs in array order, which is the order of the batch.
INSERT_MESSAGES = (
    "INSERT INTO messages (id, queue, state, priority, grp, dedup_id, body, "
    "is_binary, headers, posted_at, due_at, max_attempts, expires_at) "
    "SELECT id, %s, state, priority, grp, dedup_id, body, is_binary, headers, "
    "%s, due_at, max_attempts, expires_at FROM unnest("
    "%s::text[], %s::text[], %s::integer[], %s::bytea[], %s::bytea[], %s::bytea[], "
    "%s::boolean[], %s::text[], %s::double precision[], %s::integer[], "
    "%s::double precision[]) WITH ORDINALITY AS r(id, state, priority, grp, dedup_id, "
    "body, is_binary, headers, due_at, max_attempts, expires_at, n) ORDER BY n"
)
# Locks in ascending key order, so two posts that share groups cannot
# deadlock (PostgreSQL evaluates the aggregate over the sorted subquery).
LOCK_GROUPS = (
    "SELECT count(pg_advisory_xact_lock(k)) FROM "
    "(SELECT k FROM unnest(%s::bigint[]) AS k ORDER BY k) AS keys"
)

# Reserve: make due messages ready, then pick and lease them. Rows another
# transaction has locked are skipped, never waited for.
PROMOTE_DUE = (
    "UPDATE messages SET state = 'ready' WHERE seq IN (SELECT seq FROM messages "
    "WHERE queue = %s AND state = 'delayed' AND due_at <= %s FOR UPDATE SKIP LOCKED)"
)
SELECT_EXPIRED_LEASES = (
    "SELECT seq, id, queue, receive_count, max_attempts, cancel_requested, "
    "completed_at FROM messages "
    "WHERE queue = %s AND state = 'reserved' AND reserved_until <= %s "
    "ORDER BY seq FOR UPDATE SKIP LOCKED"
)
SELECT_ALL_EXPIRED_LEASES = (
    "SELECT seq, id, queue, receive_count, max_attempts, cancel_requested, "
    "completed_at FROM messages "
    "WHERE state = 'reserved' AND reserved_until <= %s "
    "ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED"
)
SELECT_READY = (
    "SELECT seq, octet_length(body) FROM messages WHERE queue = %s AND state = 'ready' "
    "ORDER BY priority DESC, seq LIMIT %s FOR UPDATE SKIP LOCKED"
)
# A FIFO message is deliverable only when no older message of its group is
# still pending (ready, delayed or reserved) and no message of its group is
# reserved: that keeps post order and one message in flight per group. The
# second rule matters after a redrive, which puts a dead head back at its
# old place while a later message of the group may be in flight. Dead rows
# (in a queue that is its own DLQ) block nothing.
FIFO_DELIVERABLE = (
    "NOT EXISTS (SELECT 1 FROM messages AS o WHERE o.queue = m.queue "
    "AND o.grp = m.grp AND o.state <> 'dead' "
    "AND (o.seq < m.seq OR o.state = 'reserved'))"
)
# Candidates only: the reserve locks each candidate's group, then checks it
# again with CHECK_FIFO_HEAD in a new statement (a new snapshot).
SELECT_FIFO_CANDIDATES = (
    "SELECT m.seq, m.grp FROM messages AS m WHERE m.queue = %s AND m.state = 'ready' "
    f"AND {FIFO_DELIVERABLE} ORDER BY m.seq LIMIT %s"
)
TRY_LOCK_GROUP = "SELECT pg_try_advisory_xact_lock(%s)"
CHECK_FIFO_HEAD = (
    "SELECT m.seq, octet_length(m.body) FROM messages AS m "
    f"WHERE m.seq = %s AND m.queue = %s AND m.state = 'ready' AND {FIFO_DELIVERABLE} "
    "FOR UPDATE OF m SKIP LOCKED"
)
# The same rule for groups that may have up to K messages in flight
# (group_max_in_flight): a message is deliverable while fewer than K of its
# group's messages are older and pending, or newer and reserved. The
# OFFSET parameter is K - 1, so the subquery stops after K rows.
FIFO_GROUP_DELIVERABLE = (
    "NOT EXISTS (SELECT 1 FROM messages AS o WHERE o.queue = m.queue "
    "AND o.grp = m.grp AND o.state <> 'dead' "
    "AND (o.seq < m.seq OR o.state = 'reserved') LIMIT 1 OFFSET %s)"
)
SELECT_FIFO_GROUP_CANDIDATES = (
    "SELECT m.seq, m.grp FROM messages AS m WHERE m.queue = %s AND m.state = 'ready' "
    f"AND {FIFO_GROUP_DELIVERABLE} ORDER BY m.seq LIMIT %s"
)
CHECK_FIFO_GROUP_MESSAGE = (
    "SELECT m.seq, octet_length(m.body) FROM messages AS m "
    f"WHERE m.seq = %s AND m.queue = %s AND m.state = 'ready' AND {FIFO_GROUP_DELIVERABLE} "
    "FOR UPDATE OF m SKIP LOCKED"
)
LEASE_MESSAGES = (
    "UPDATE messages AS m SET state = 'reserved', receipt = l.receipt, "
    "reserved_until = %s, receive_count = m.receive_count + 1 "
    "FROM unnest(%s::bigint[], %s::text[]) AS l(seq, receipt) WHERE m.seq = l.seq "
    "RETURNING m.seq, " + ", ".join(f"m.{c.strip()}" for c in MESSAGE_COLUMNS.split(","))
)

# Ack, nack, touch: every statement checks the receipt and the lease, and
# locks the row so a concurrent expiry or second ack waits and re-checks.
SELECT_LEASED = (
    "SELECT seq, receive_count, max_attempts, cancel_requested, expires_at "
    "FROM messages WHERE id = %s "
    "AND queue = %s AND state = 'reserved' AND receipt = %s AND reserved_until > %s "
    "FOR UPDATE"
)
SELECT_MESSAGE_QUEUE = "SELECT queue, source_queue FROM messages WHERE id = %s"
# A batch of acks in one statement: deletes each leased row whose receipt
# matches and returns the ids it deleted.
ACK_LEASED = (
    "DELETE FROM messages AS m USING unnest(%s::text[], %s::text[]) AS a(id, receipt) "
    "WHERE m.id = a.id AND m.queue = %s AND m.state = 'reserved' "
    "AND m.receipt = a.receipt AND m.reserved_until > %s RETURNING m.id, m.receive_count"
)
DELETE_MESSAGE = "DELETE FROM messages WHERE seq = %s"
UPSERT_RESULT = (
    "INSERT INTO results (id, queue, status, value, error, finished_at, expires_at, "
    "progress, progress_text) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
    "queue = EXCLUDED.queue, status = EXCLUDED.status, value = EXCLUDED.value, "
    "error = EXCLUDED.error, finished_at = EXCLUDED.finished_at, "
    "expires_at = EXCLUDED.expires_at, progress = EXCLUDED.progress, "
    "progress_text = EXCLUDED.progress_text"
)
RETRY_MESSAGE = (
    "UPDATE messages SET state = %s, due_at = %s, receipt = NULL, "
    "reserved_until = NULL, last_error = COALESCE(%s, last_error) WHERE seq = %s"
)
RELEASE_MESSAGE = (
    "UPDATE messages SET state = 'ready', due_at = %s, receipt = NULL, "
    "reserved_until = NULL, receive_count = GREATEST(receive_count - 1, 0) "
    "WHERE seq = %s"
)
EXTEND_LEASE = (
    "UPDATE messages SET reserved_until = %s WHERE seq = %s RETURNING cancel_requested"
)
DEAD_LETTER_MESSAGE = (
    "UPDATE messages SET queue = %s, state = 'dead', source_queue = %s, "
    "last_error = COALESCE(%s, last_error), receipt = NULL, "
    "reserved_until = NULL, expires_at = %s, dead_at = %s WHERE seq = %s"
)

# Redrive.
# Pages through a DLQ by seq, so messages that stay (their source queue is
# gone) are passed over instead of fetched again.
SELECT_DEAD = (
    "SELECT seq, id, source_queue FROM messages WHERE queue = %s AND state = 'dead' "
    "AND seq > %s ORDER BY seq LIMIT %s FOR UPDATE"
)
SELECT_DEAD_BY_ID = (
    "SELECT seq, id, source_queue FROM messages "
    "WHERE queue = %s AND state = 'dead' AND id = %s FOR UPDATE"
)
REDRIVE_MESSAGE = (
    "UPDATE messages SET queue = %s, state = 'ready', source_queue = NULL, "
    "receive_count = 0, due_at = %s, expires_at = %s, dead_at = NULL WHERE seq = %s"
)

# Retention.
DELETE_EXPIRED_MESSAGES = (
    "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages "
    "WHERE expires_at <= %s LIMIT 1000 FOR UPDATE SKIP LOCKED)"
)
DELETE_EXPIRED_DEDUP = "DELETE FROM dedup WHERE expires_at <= %s"
DELETE_EXPIRED_RESULTS = "DELETE FROM results WHERE expires_at <= %s"

# Reads.
SELECT_MESSAGE = f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = %s"
SELECT_PEEK = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE queue = %s "
    "ORDER BY seq LIMIT %s OFFSET %s"
)
SELECT_PEEK_STATE = (
    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE queue = %s AND state = %s "
    "ORDER BY seq LIMIT %s OFFSET %s"
)
SELECT_RESULT = (
    "SELECT id, queue, status, value, error, finished_at, expires_at, progress, "
    "progress_text FROM results WHERE id = %s AND expires_at > %s"
)
# Delayed messages already due count as ready: promotion happens lazily at
# the next reserve.
SELECT_STATE_COUNTS = (
    "SELECT CASE WHEN state = 'delayed' AND due_at <= %s THEN 'ready' "
    "ELSE state END AS s, count(*), min(posted_at) "
    "FROM messages WHERE queue = %s GROUP BY 1"
)
SELECT_DEAD_FROM_SOURCE = (
    "SELECT count(*) FROM messages WHERE source_queue = %s AND state = 'dead' "
    "AND queue <> source_queue"
)
SELECT_NEXT_CHANGE = (
    "SELECT (SELECT min(due_at) FROM messages WHERE queue = %s AND state = 'delayed'), "
    "(SELECT min(reserved_until) FROM messages WHERE queue = %s AND state = 'reserved'), "
    "(SELECT wake_at FROM queue_flow WHERE queue = %s)"
)

# Task runs: completion records, progress, cancellation and attempt logs.

# Version 4: the columns and the table of task runs.
CREATE_RUN_TABLES = [
    "ALTER TABLE messages ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false, "
    "ADD COLUMN progress double precision, ADD COLUMN progress_text bytea, "
    "ADD COLUMN progress_at double precision, ADD COLUMN completed_at double precision, "
    "ADD COLUMN completed_result bytea",
    "ALTER TABLE results ADD COLUMN progress double precision, "
    "ADD COLUMN progress_text bytea",
    """
    CREATE TABLE attempt_logs (
        message_id  text NOT NULL,
        attempt     integer NOT NULL,
        queue       text NOT NULL,
        text        bytea NOT NULL,
        created_at  double precision NOT NULL,
        expires_at  double precision NOT NULL,
        PRIMARY KEY (message_id, attempt)
    )
    """,
    "CREATE INDEX attempt_logs_expiry ON attempt_logs (expires_at)",
]

SET_COMPLETED = "UPDATE messages SET completed_at = %s, completed_result = %s WHERE seq = %s"
SET_PROGRESS = (
    "UPDATE messages SET progress = %s, progress_text = %s, progress_at = %s "
    "WHERE seq = %s RETURNING cancel_requested"
)
# A cancel finds the message by id in any queue and locks it, so a
# concurrent ack, nack or expiry waits and then sees the change.
SELECT_CANCEL_TARGET = (
    "SELECT seq, queue, state, reserved_until FROM messages WHERE id = %s FOR UPDATE"
)
REQUEST_CANCEL = "UPDATE messages SET cancel_requested = true WHERE seq = %s"
SELECT_RESULT_STATUS = "SELECT status FROM results WHERE id = %s AND expires_at > %s"

UPSERT_ATTEMPT_LOG = (
    "INSERT INTO attempt_logs (message_id, attempt, queue, text, created_at, expires_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (message_id, attempt) DO UPDATE SET "
    "queue = EXCLUDED.queue, text = EXCLUDED.text, created_at = EXCLUDED.created_at, "
    "expires_at = EXCLUDED.expires_at"
)
SET_LOGS_EXPIRY = "UPDATE attempt_logs SET expires_at = %s WHERE message_id = %s"
DELETE_MESSAGE_LOGS = "DELETE FROM attempt_logs WHERE message_id = %s"
# A dead message's logs stay at least as long as the DLQ keeps it; the
# message is named by its seq.
EXTEND_LOGS_EXPIRY = (
    "UPDATE attempt_logs SET expires_at = GREATEST(expires_at, %s) "
    "WHERE message_id = (SELECT id FROM messages WHERE seq = %s)"
)
SELECT_LOGS = (
    "SELECT message_id, attempt, queue, text, created_at, expires_at FROM attempt_logs "
    "WHERE message_id = %s AND expires_at > %s ORDER BY attempt"
)
SELECT_ATTEMPT_LOG = (
    "SELECT message_id, attempt, queue, text, created_at, expires_at FROM attempt_logs "
    "WHERE message_id = %s AND attempt = %s AND expires_at > %s"
)
DELETE_EXPIRED_LOGS = "DELETE FROM attempt_logs WHERE expires_at <= %s"
