"""Schema and named statements of the PostgreSQL store's flow control.

Tables and indexes, version 3:

- `queue_flow`: one row per queue that uses flow control: its token
  bucket, when long polls should look again, and its circuit breaker's
  state. Reserves and recorded outcomes create it on first use and lock it
  FOR UPDATE, so the servers sharing a schema take turns on a queue's row.
- `breaker_outcomes`: successes and failures per queue per time bucket (a
  tenth of the breaker's window), so the window's failure ratio is a sum
  over at most ten rows.
- `breaker_events`: every change of a breaker's state, with the numbers
  that caused it.
  - `breaker_events_queue`: a queue's latest events.

Version 5:

- `redrive_jobs`: background redrives of a DLQ; each chunk moves messages
  and advances `cursor_seq` in one transaction.
  - `redrive_jobs_active`: the jobs a server may claim.
- `messages.dead_at`: when a message was dead-lettered, so a redrive can
  take only the messages that died after a given time.

Placeholders are psycopg's `%s`. Times are Unix seconds (double precision).
"""

CREATE_TABLES = [
    """
    CREATE TABLE queue_flow (
        queue        text PRIMARY KEY,
        tokens       double precision,
        tokens_at    double precision,
        wake_at      double precision,
        state        text NOT NULL DEFAULT 'closed'
                     CHECK (state IN ('closed', 'open', 'half_open')),
        mode         text NOT NULL DEFAULT 'auto'
                     CHECK (mode IN ('auto', 'open', 'closed')),
        opened_at    double precision,
        incident_at  double precision,
        cooldown_s   double precision,
        probes_sent  integer NOT NULL DEFAULT 0,
        probes_ok    integer NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE breaker_outcomes (
        queue       text NOT NULL,
        bucket      double precision NOT NULL,
        successes   bigint NOT NULL DEFAULT 0,
        failures    bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (queue, bucket)
    )
    """,
    """
    CREATE TABLE breaker_events (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        queue       text NOT NULL,
        at          double precision NOT NULL,
        from_state  text NOT NULL,
        to_state    text NOT NULL,
        failures    bigint,
        attempts    bigint,
        ratio       double precision,
        cooldown_s  double precision,
        reason      text NOT NULL
    )
    """,
    "CREATE INDEX breaker_events_queue ON breaker_events (queue, id)",
]

CREATE_JOB_TABLES = [
    "ALTER TABLE messages ADD COLUMN dead_at double precision",
    """
    CREATE TABLE redrive_jobs (
        id            text PRIMARY KEY,
        dlq           text NOT NULL,
        source_queue  text,
        dead_after    double precision,
        max_messages  bigint,
        rate_per_s    double precision,
        state         text NOT NULL
                      CHECK (state IN ('active', 'done', 'cancelled', 'failed')),
        moved         bigint NOT NULL DEFAULT 0,
        cursor_seq    bigint NOT NULL DEFAULT 0,
        error         text,
        owner         text,
        lease_until   double precision,
        created_at    double precision NOT NULL,
        updated_at    double precision NOT NULL
    )
    """,
    "CREATE INDEX redrive_jobs_active ON redrive_jobs (created_at) WHERE state = 'active'",
]

FLOW_COLUMNS = (
    "tokens, tokens_at, wake_at, state, mode, opened_at, incident_at, "
    "cooldown_s, probes_sent, probes_ok"
)
SELECT_FLOW_READ = f"SELECT {FLOW_COLUMNS} FROM queue_flow WHERE queue = %s"
SELECT_FLOW = SELECT_FLOW_READ + " FOR UPDATE"
INSERT_FLOW = "INSERT INTO queue_flow (queue) VALUES (%s) ON CONFLICT (queue) DO NOTHING"
UPDATE_FLOW = (
    "UPDATE queue_flow SET tokens = %s, tokens_at = %s, wake_at = %s, state = %s, "
    "mode = %s, opened_at = %s, incident_at = %s, cooldown_s = %s, probes_sent = %s, "
    "probes_ok = %s WHERE queue = %s"
)
COUNT_IN_FLIGHT = (
    "SELECT count(*) FROM messages WHERE queue = %s AND state = 'reserved' "
    "AND reserved_until > %s"
)

# A nack with retry_after_s: back after the delay, with the attempt given back.
DEFER_MESSAGE = (
    "UPDATE messages SET state = 'delayed', due_at = %s, receipt = NULL, "
    "reserved_until = NULL, receive_count = greatest(receive_count - 1, 0), "
    "last_error = coalesce(%s, last_error) WHERE seq = %s"
)

# Breaker outcomes and events.
ADD_OUTCOMES = (
    "INSERT INTO breaker_outcomes AS o (queue, bucket, successes, failures) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (queue, bucket) DO UPDATE SET "
    "successes = o.successes + EXCLUDED.successes, "
    "failures = o.failures + EXCLUDED.failures"
)
SUM_OUTCOMES = (
    "SELECT coalesce(sum(failures), 0), coalesce(sum(successes + failures), 0) "
    "FROM breaker_outcomes WHERE queue = %s AND bucket > %s"
)
DELETE_QUEUE_OUTCOMES = "DELETE FROM breaker_outcomes WHERE queue = %s"
DELETE_OLD_OUTCOMES = "DELETE FROM breaker_outcomes WHERE bucket < %s"
INSERT_EVENT = (
    "INSERT INTO breaker_events (queue, at, from_state, to_state, failures, "
    "attempts, ratio, cooldown_s, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
SELECT_EVENTS = (
    "SELECT at, from_state, to_state, failures, attempts, ratio, cooldown_s, reason "
    "FROM breaker_events WHERE queue = %s ORDER BY id DESC LIMIT %s"
)
DELETE_QUEUE_EVENTS = "DELETE FROM breaker_events WHERE queue = %s"
DELETE_OLD_EVENTS = "DELETE FROM breaker_events WHERE at < %s"
DELETE_QUEUE_FLOW = "DELETE FROM queue_flow WHERE queue = %s"

# Redrive jobs. A server claims an active job by setting `owner` and
# `lease_until`, and renews the lease with every chunk, so after a crash
# another server takes the job over once the lease ends. A chunk locks the
# job's row, so two servers never run the same chunk.
JOB_COLUMNS = (
    "id, dlq, source_queue, dead_after, max_messages, rate_per_s, state, moved, "
    "cursor_seq, error, created_at, updated_at, lease_until, owner"
)
INSERT_JOB = (
    "INSERT INTO redrive_jobs (id, dlq, source_queue, dead_after, max_messages, "
    "rate_per_s, state, created_at, updated_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, 'active', %s, %s)"
)
SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM redrive_jobs WHERE id = %s"
SELECT_JOB_LOCKED = SELECT_JOB + " FOR UPDATE"
SELECT_JOBS = (
    f"SELECT {JOB_COLUMNS} FROM redrive_jobs WHERE (%(dlq)s::text IS NULL OR dlq = %(dlq)s) "
    "AND (%(state)s::text IS NULL OR state = %(state)s) "
    "ORDER BY created_at DESC, id DESC LIMIT %(limit)s"
)
CANCEL_JOB = (
    "UPDATE redrive_jobs SET state = 'cancelled', owner = NULL, lease_until = NULL, "
    "updated_at = %s WHERE id = %s AND state = 'active'"
)
CLAIM_JOBS = (
    "UPDATE redrive_jobs SET owner = %(owner)s, lease_until = %(lease_until)s, "
    "updated_at = %(now)s WHERE id IN (SELECT id FROM redrive_jobs "
    "WHERE state = 'active' AND (lease_until IS NULL OR lease_until <= %(now)s) "
    "ORDER BY created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
    f"RETURNING {JOB_COLUMNS}"
)
UPDATE_JOB = (
    "UPDATE redrive_jobs SET state = %s, moved = %s, cursor_seq = %s, error = %s, "
    "owner = %s, lease_until = %s, updated_at = %s WHERE id = %s"
)
RELEASE_JOBS = (
    "UPDATE redrive_jobs SET owner = NULL, lease_until = NULL "
    "WHERE owner = %s AND state = 'active'"
)
DELETE_OLD_JOBS = "DELETE FROM redrive_jobs WHERE state <> 'active' AND updated_at < %s"
# The next dead messages of a job, in post order from its cursor.
SELECT_JOB_MESSAGES = (
    "SELECT seq, id, source_queue FROM messages WHERE queue = %(dlq)s "
    "AND state = 'dead' AND seq > %(cursor)s "
    "AND (%(source)s::text IS NULL OR source_queue = %(source)s) "
    "AND (%(after)s::double precision IS NULL OR dead_at >= %(after)s) "
    "ORDER BY seq LIMIT %(limit)s FOR UPDATE"
)
