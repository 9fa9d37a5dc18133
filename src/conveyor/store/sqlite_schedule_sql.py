"""SQLite statements of schedules and their ticks.

`schedule_ticks` records each tick a schedule fired, keyed by (schedule,
tick_ms): tick_ms is the tick's Unix time in whole milliseconds, so the
key compares exactly. The single writer serializes every write, so a tick
is fired once even by two processes that share the file. Each re-reads
the schedule in its own transaction before firing, and the key rejects a
second row for the same tick.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    name            TEXT PRIMARY KEY,
    queue           TEXT NOT NULL,
    cron            TEXT,
    timezone        TEXT NOT NULL,
    interval_s      REAL,
    start_at        REAL NOT NULL,
    end_at          REAL,
    max_runs        INTEGER,
    catch_up        TEXT NOT NULL,
    catch_up_limit  INTEGER NOT NULL,
    message         TEXT NOT NULL,
    source          TEXT NOT NULL,
    paused          INTEGER NOT NULL DEFAULT 0,
    run_count       INTEGER NOT NULL DEFAULT 0,
    last_fire_at    REAL,
    next_fire_at    REAL,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    grace_s         REAL NOT NULL DEFAULT 60
);
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (next_fire_at)
    WHERE paused = 0 AND next_fire_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS schedule_ticks (
    schedule    TEXT NOT NULL,
    tick_ms     INTEGER NOT NULL,
    fired_at    REAL NOT NULL,
    message_id  TEXT,
    missed      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule, tick_ms)
);
"""

# Columns added after the table was first released, as (table, column,
# type). Opening an older store file adds them.
ADDED_COLUMNS = (("schedules", "grace_s", "REAL NOT NULL DEFAULT 60"),)

SCHEDULE_COLUMNS = (
    "name, queue, cron, timezone, interval_s, start_at, end_at, max_runs, catch_up, "
    "catch_up_limit, message, source, paused, run_count, last_fire_at, next_fire_at, "
    "last_error, created_at, updated_at, grace_s"
)
# Inserts nothing when the name is taken; the caller checks the row count.
INSERT_SCHEDULE = (
    f"INSERT OR IGNORE INTO schedules ({SCHEDULE_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_SCHEDULE = f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?"
SELECT_SCHEDULE_LOCKED = SELECT_SCHEDULE
# The schedule if it is still due; another process may have fired it since
# the caller listed it.
SELECT_DUE_SCHEDULE = (
    f"SELECT {SCHEDULE_COLUMNS} FROM schedules "
    "WHERE name = ? AND paused = 0 AND next_fire_at <= ?"
)
SELECT_SCHEDULES = (
    f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE (? IS NULL OR queue = ?) "
    "AND (? IS NULL OR source = ?) AND (? IS NULL OR name > ?) ORDER BY name LIMIT ?"
)
SELECT_DUE_NAMES = (
    "SELECT name FROM schedules WHERE paused = 0 AND next_fire_at <= ? "
    "ORDER BY next_fire_at LIMIT ?"
)
SELECT_NEXT_DUE = (
    "SELECT min(next_fire_at) FROM schedules WHERE paused = 0 AND next_fire_at IS NOT NULL"
)
UPDATE_DEFINITION = (
    "UPDATE schedules SET queue = ?, cron = ?, timezone = ?, interval_s = ?, "
    "start_at = ?, end_at = ?, max_runs = ?, catch_up = ?, catch_up_limit = ?, "
    "grace_s = ?, message = ?, source = ?, next_fire_at = ?, updated_at = ? "
    "WHERE name = ?"
)
UPDATE_PAUSED = "UPDATE schedules SET paused = ?, updated_at = ? WHERE name = ?"
UPDATE_FIRED = (
    "UPDATE schedules SET run_count = ?, last_fire_at = ?, next_fire_at = ?, "
    "last_error = ? WHERE name = ?"
)
DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = ?"
DELETE_SCHEDULE_TICKS = "DELETE FROM schedule_ticks WHERE schedule = ?"
INSERT_TICK = (
    "INSERT OR IGNORE INTO schedule_ticks (schedule, tick_ms, fired_at, message_id, "
    "missed) VALUES (?, ?, ?, ?, ?)"
)
SET_TICK_MESSAGE = (
    "UPDATE schedule_ticks SET message_id = ? WHERE schedule = ? AND tick_ms = ?"
)
SELECT_TICKS = (
    "SELECT tick_ms, fired_at, message_id, missed FROM schedule_ticks "
    "WHERE schedule = ? ORDER BY tick_ms DESC LIMIT ?"
)
# Deletes the ticks fired before a time, except each schedule's latest.
PRUNE_TICKS = (
    "DELETE FROM schedule_ticks WHERE fired_at < ? AND tick_ms < (SELECT max(tick_ms) "
    "FROM schedule_ticks AS latest WHERE latest.schedule = schedule_ticks.schedule)"
)
