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
