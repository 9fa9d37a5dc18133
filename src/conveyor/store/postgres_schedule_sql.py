"""PostgreSQL statements of schedules and their ticks.

`schedule_ticks` records each tick a schedule fired, keyed by (schedule,
tick_ms): tick_ms is the tick's Unix time in whole milliseconds, so the
key compares exactly. Servers that share a store fire each tick once. A
server locks a due schedule's row with FOR UPDATE SKIP LOCKED, so the
others pass it by, and re-reads it before firing. The key rejects a second
row for the same tick should two transactions ever get that far.
"""

CREATE_TABLES = [
    """
    CREATE TABLE schedules (
        name            text PRIMARY KEY,
        queue           text NOT NULL,
        cron            text,
        timezone        text NOT NULL,
        interval_s      double precision,
        start_at        double precision NOT NULL,
        end_at          double precision,
        max_runs        bigint,
        catch_up        text NOT NULL CHECK (catch_up IN ('skip', 'once', 'all')),
        catch_up_limit  integer NOT NULL,
        message         text NOT NULL,
        source          text NOT NULL CHECK (source IN ('api', 'code')),
        paused          boolean NOT NULL DEFAULT false,
        run_count       bigint NOT NULL DEFAULT 0,
        last_fire_at    double precision,
        next_fire_at    double precision,
        last_error      text,
        created_at      double precision NOT NULL,
        updated_at      double precision NOT NULL
    )
    """,
    "CREATE INDEX schedules_due ON schedules (next_fire_at) "
    "WHERE NOT paused AND next_fire_at IS NOT NULL",
    """
    CREATE TABLE schedule_ticks (
        schedule    text NOT NULL,
        tick_ms     bigint NOT NULL,
        fired_at    double precision NOT NULL,
        message_id  text,
        missed      integer NOT NULL DEFAULT 0,
        PRIMARY KEY (schedule, tick_ms)
    )
    """,
]

# Migration 8 adds the misfire grace of each schedule, in seconds.
ADD_GRACE_COLUMN = [
    "ALTER TABLE schedules ADD COLUMN grace_s double precision NOT NULL DEFAULT 60",
]

SCHEDULE_COLUMNS = (
    "name, queue, cron, timezone, interval_s, start_at, end_at, max_runs, catch_up, "
    "catch_up_limit, message, source, paused, run_count, last_fire_at, next_fire_at, "
    "last_error, created_at, updated_at, grace_s"
)
# Inserts nothing when the name is taken, also by a transaction that
# commits meanwhile; the caller checks the row count.
INSERT_SCHEDULE = (
    f"INSERT INTO schedules ({SCHEDULE_COLUMNS}) "
    f"VALUES ({', '.join(['%s'] * 20)}) "
    "ON CONFLICT (name) DO NOTHING"
)
SELECT_SCHEDULE = f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = %s"
SELECT_SCHEDULE_LOCKED = SELECT_SCHEDULE + " FOR UPDATE"
# The schedule if it is still due and no other transaction has locked it.
# Another server may be firing it, or may have fired it since the caller
# listed it.
SELECT_DUE_SCHEDULE = (
    f"SELECT {SCHEDULE_COLUMNS} FROM schedules "
    "WHERE name = %s AND NOT paused AND next_fire_at <= %s FOR UPDATE SKIP LOCKED"
)
SELECT_SCHEDULES = (
    f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE (%s::text IS NULL OR queue = %s) "
    "AND (%s::text IS NULL OR source = %s) AND (%s::text IS NULL OR name > %s) "
    "ORDER BY name LIMIT %s"
)
SELECT_DUE_NAMES = (
    "SELECT name FROM schedules WHERE NOT paused AND next_fire_at <= %s "
    "ORDER BY next_fire_at LIMIT %s"
)
SELECT_NEXT_DUE = (
    "SELECT min(next_fire_at) FROM schedules WHERE NOT paused AND next_fire_at IS NOT NULL"
)
UPDATE_DEFINITION = (
    "UPDATE schedules SET queue = %s, cron = %s, timezone = %s, interval_s = %s, "
    "start_at = %s, end_at = %s, max_runs = %s, catch_up = %s, catch_up_limit = %s, "
    "grace_s = %s, message = %s, source = %s, next_fire_at = %s, updated_at = %s "
    "WHERE name = %s"
)
UPDATE_PAUSED = "UPDATE schedules SET paused = %s, updated_at = %s WHERE name = %s"
UPDATE_FIRED = (
    "UPDATE schedules SET run_count = %s, last_fire_at = %s, next_fire_at = %s, "
    "last_error = %s WHERE name = %s"
)
DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = %s"
DELETE_SCHEDULE_TICKS = "DELETE FROM schedule_ticks WHERE schedule = %s"
INSERT_TICK = (
    "INSERT INTO schedule_ticks (schedule, tick_ms, fired_at, message_id, missed) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
SET_TICK_MESSAGE = (
    "UPDATE schedule_ticks SET message_id = %s WHERE schedule = %s AND tick_ms = %s"
)
SELECT_TICKS = (
    "SELECT tick_ms, fired_at, message_id, missed FROM schedule_ticks "
    "WHERE schedule = %s ORDER BY tick_ms DESC LIMIT %s"
)
# Deletes the ticks fired before a time, except each schedule's latest.
PRUNE_TICKS = (
    "DELETE FROM schedule_ticks WHERE fired_at < %s AND tick_ms < (SELECT max(tick_ms) "
    "FROM schedule_ticks AS latest WHERE latest.schedule = schedule_ticks.schedule)"
)
