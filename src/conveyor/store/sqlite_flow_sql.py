"""Schema and named statements of the SQLite store's flow control.

Tables and indexes:

- `queue_flow`: one row per queue that uses flow control: its token
  bucket, when long polls should look again, and its circuit breaker's
  state. Reserves and recorded outcomes create it on first use.
- `breaker_outcomes`: successes and failures per queue per time bucket (a
  tenth of the breaker's window), so the window's failure ratio is a sum
  over at most ten rows.
- `breaker_events`: every change of a breaker's state, with the numbers
  that caused it.
  - `breaker_events_queue`: a queue's latest events.
- `redrive_jobs`: background redrives of a DLQ; each chunk moves messages
  and advances `cursor_seq` in one transaction.
  - `redrive_jobs_active`: the jobs a runner may claim.

`messages.dead_at` is the time a message was dead-lettered (ADDED_COLUMNS).
The single writer serializes every write, so reading a row is enough to
own it until commit.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue_flow (
    queue        TEXT PRIMARY KEY,
    tokens       REAL,
    tokens_at    REAL,
    wake_at      REAL,
    state        TEXT NOT NULL DEFAULT 'closed',
    mode         TEXT NOT NULL DEFAULT 'auto',
    opened_at    REAL,
    incident_at  REAL,
    cooldown_s   REAL,
    probes_sent  INTEGER NOT NULL DEFAULT 0,
    probes_ok    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS breaker_outcomes (
    queue       TEXT NOT NULL,
    bucket      REAL NOT NULL,
    successes   INTEGER NOT NULL DEFAULT 0,
    failures    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, bucket)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS breaker_events (
    id          INTEGER PRIMARY KEY,
    queue       TEXT NOT NULL,
    at          REAL NOT NULL,
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,
    failures    INTEGER,
    attempts    INTEGER,
    ratio       REAL,
    cooldown_s  REAL,
    reason      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS breaker_events_queue ON breaker_events (queue, id);

CREATE TABLE IF NOT EXISTS redrive_jobs (
    id            TEXT PRIMARY KEY,
    dlq           TEXT NOT NULL,
    source_queue  TEXT,
    dead_after    REAL,
    max_messages  INTEGER,
    rate_per_s    REAL,
    state         TEXT NOT NULL,
    moved         INTEGER NOT NULL DEFAULT 0,
    cursor_seq    INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    owner         TEXT,
    lease_until   REAL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS redrive_jobs_active
    ON redrive_jobs (created_at) WHERE state = 'active';
"""

# Columns added to tables that older Conveyor versions created:
# (table, column, type). Opening a store file adds the missing ones.
ADDED_COLUMNS = (("messages", "dead_at", "REAL"),)
TABLE_COLUMNS = "SELECT name FROM pragma_table_info(?)"

FLOW_COLUMNS = (
    "tokens, tokens_at, wake_at, state, mode, opened_at, incident_at, "
    "cooldown_s, probes_sent, probes_ok"
)
SELECT_FLOW = f"SELECT {FLOW_COLUMNS} FROM queue_flow WHERE queue = ?"
SELECT_FLOW_READ = SELECT_FLOW
INSERT_FLOW = "INSERT INTO queue_flow (queue) VALUES (?) ON CONFLICT (queue) DO NOTHING"
UPDATE_FLOW = (
    "UPDATE queue_flow SET tokens = ?, tokens_at = ?, wake_at = ?, state = ?, "
    "mode = ?, opened_at = ?, incident_at = ?, cooldown_s = ?, probes_sent = ?, "
    "probes_ok = ? WHERE queue = ?"
)
COUNT_IN_FLIGHT = (
    "SELECT count(*) FROM messages WHERE queue = ? AND state = 'reserved' "
    "AND reserved_until > ?"
)
SELECT_FLOW_WAKE = "SELECT wake_at FROM queue_flow WHERE queue = ?"

# A nack with retry_after_s: back after the delay, with the attempt given back.
DEFER_MESSAGE = (
    "UPDATE messages SET state = 'delayed', due_at = ?, receipt = NULL, "
    "reserved_until = NULL, receive_count = max(receive_count - 1, 0), "
    "last_error = coalesce(?, last_error) WHERE seq = ?"
)

# Breaker outcomes and events.
ADD_OUTCOMES = (
    "INSERT INTO breaker_outcomes (queue, bucket, successes, failures) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (queue, bucket) DO UPDATE SET "
    "successes = breaker_outcomes.successes + excluded.successes, "
    "failures = breaker_outcomes.failures + excluded.failures"
)
SUM_OUTCOMES = (
    "SELECT coalesce(sum(failures), 0), coalesce(sum(successes + failures), 0) "
    "FROM breaker_outcomes WHERE queue = ? AND bucket > ?"
)
DELETE_QUEUE_OUTCOMES = "DELETE FROM breaker_outcomes WHERE queue = ?"
DELETE_OLD_OUTCOMES = "DELETE FROM breaker_outcomes WHERE bucket < ?"
INSERT_EVENT = (
    "INSERT INTO breaker_events (queue, at, from_state, to_state, failures, "
    "attempts, ratio, cooldown_s, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_EVENTS = (
    "SELECT at, from_state, to_state, failures, attempts, ratio, cooldown_s, reason "
    "FROM breaker_events WHERE queue = ? ORDER BY id DESC LIMIT ?"
)
DELETE_QUEUE_EVENTS = "DELETE FROM breaker_events WHERE queue = ?"
DELETE_OLD_EVENTS = "DELETE FROM breaker_events WHERE at < ?"
DELETE_QUEUE_FLOW = "DELETE FROM queue_flow WHERE queue = ?"

# Redrive jobs. A server claims an active job by setting `owner` and
# `lease_until`, and renews the lease with every chunk, so after a crash
# another server takes the job over once the lease ends.
JOB_COLUMNS = (
    "id, dlq, source_queue, dead_after, max_messages, rate_per_s, state, moved, "
    "cursor_seq, error, created_at, updated_at, lease_until, owner"
)
INSERT_JOB = (
    "INSERT INTO redrive_jobs (id, dlq, source_queue, dead_after, max_messages, "
    "rate_per_s, state, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?)"
)
SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM redrive_jobs WHERE id = ?"
SELECT_JOB_LOCKED = SELECT_JOB
SELECT_JOBS = (
    f"SELECT {JOB_COLUMNS} FROM redrive_jobs WHERE (:dlq IS NULL OR dlq = :dlq) "
    "AND (:state IS NULL OR state = :state) "
    "ORDER BY created_at DESC, id DESC LIMIT :limit"
)
CANCEL_JOB = (
    "UPDATE redrive_jobs SET state = 'cancelled', owner = NULL, lease_until = NULL, "
    "updated_at = ? WHERE id = ? AND state = 'active'"
)
CLAIM_JOBS = (
    "UPDATE redrive_jobs SET owner = :owner, lease_until = :lease_until, "
    "updated_at = :now WHERE id IN (SELECT id FROM redrive_jobs "
    "WHERE state = 'active' AND (lease_until IS NULL OR lease_until <= :now) "
    f"ORDER BY created_at LIMIT :limit) RETURNING {JOB_COLUMNS}"
)
UPDATE_JOB = (
    "UPDATE redrive_jobs SET state = ?, moved = ?, cursor_seq = ?, error = ?, "
    "owner = ?, lease_until = ?, updated_at = ? WHERE id = ?"
)
RELEASE_JOBS = (
    "UPDATE redrive_jobs SET owner = NULL, lease_until = NULL "
    "WHERE owner = ? AND state = 'active'"
)
DELETE_OLD_JOBS = (
    "DELETE FROM redrive_jobs WHERE state != 'active' AND updated_at < ?"
)
# The next dead messages of a job, in post order from its cursor.
SELECT_JOB_MESSAGES = (
    "SELECT seq, id, source_queue FROM messages WHERE queue = :dlq "
    "AND state = 'dead' AND seq > :cursor "
    "AND (:source IS NULL OR source_queue = :source) "
    "AND (:after IS NULL OR dead_at >= :after) ORDER BY seq LIMIT :limit"
)
