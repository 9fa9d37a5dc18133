"""Versions of the PostgreSQL store's schema and the migrations between them.

Migration N turns a schema at version N-1 into version N. The
`schema_version` table contains one row per applied migration, and the
schema's version is the largest. Version 1 made that table with only a
`version` column. Migration 2 adds `applied_at`, so the row of version 1
has no time.

An empty schema is created at the latest version in one transaction, so no
process ever sees it half made. An existing schema is upgraded only by
`upgrade` (the `conveyor migrate` command): one transaction per migration,
each under the schema advisory lock, so two upgrades at once take turns and
the second finds the migration applied already.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import psycopg

from ..errors import StoreUnavailable
from . import postgres_flow_sql as flow_sql
from . import postgres_schedule_sql as schedule_sql
from . import postgres_sql as sql
from . import postgres_workflow_sql as workflow_sql

logger = logging.getLogger(__name__)

# Migration 2 sets autovacuum_vacuum_insert_scale_factor, which PostgreSQL
# 13 added. The value is server_version_num's form (13.0).
MIN_SERVER_VERSION = 130000

# Version 1 is recorded with sql.INSERT_SCHEMA_VERSION, because its
# schema_version table has no applied_at column yet.
RECORD_VERSION = "INSERT INTO schema_version (version, applied_at) VALUES (%s, now())"


@dataclass(frozen=True)
class Migration:
    """The statements that turn version `version - 1` into `version`."""

    version: int
    summary: str
    statements: tuple[str, ...]


# Every message row is inserted, updated by each reserve, retry and touch,
# and deleted by its ack, so these tables fill with dead row versions, and
# the reserve's index scan steps over their entries until vacuum removes
# them. PostgreSQL's default waits until 20% of a table is dead: 200,000
# rows in a table of a million. These settings start vacuum after 1% (plus
# 1,000 rows), let it run without cost-based pauses, and keep planner
# statistics fresh as the backlog grows and drains.
VACUUM_PARAMETERS = (
    "autovacuum_vacuum_scale_factor = 0.01, "
    "autovacuum_vacuum_threshold = 1000, "
    "autovacuum_vacuum_insert_scale_factor = 0.01, "
    "autovacuum_analyze_scale_factor = 0.02, "
    "autovacuum_vacuum_cost_delay = 0"
)
# fillfactor 80 keeps a fifth of each new messages page free, so the new
# version of an updated row usually lands on the same page. That page is
# then the only heap page the update dirties, and an update that changes no
# indexed column can be HOT (no new index entries).
# NOTE: reserve, touch and retry change indexed columns (`state` in the
# partial index predicates, `reserved_until`, `due_at`), so they are not
# HOT with today's indexes. dedup and results rows are inserted and
# deleted, rarely updated, so they keep the default fillfactor of 100.
# Both settings apply to pages written from now on, and a TOAST table
# follows its table's autovacuum settings.
CHURN_SETTINGS = (
    f"ALTER TABLE messages SET (fillfactor = 80, {VACUUM_PARAMETERS})",
    f"ALTER TABLE dedup SET ({VACUUM_PARAMETERS})",
    f"ALTER TABLE results SET ({VACUUM_PARAMETERS})",
    "ALTER TABLE schema_version ADD COLUMN applied_at timestamptz",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create the tables and indexes", tuple(sql.CREATE_SCHEMA)),
    Migration(
        2,
        "vacuum messages, dedup and results early; fillfactor 80 on messages; "
        "add schema_version.applied_at",
        CHURN_SETTINGS,
    ),
    Migration(
        3,
        "add the flow-control tables queue_flow, breaker_outcomes and breaker_events",
        tuple(flow_sql.CREATE_TABLES),
    ),
    Migration(
        4,
        "add cancellation, progress and completion columns to messages, progress "
        "to results, and the attempt_logs table",
        tuple(sql.CREATE_RUN_TABLES),
    ),
    Migration(
        5,
        "add the redrive_jobs table and messages.dead_at for background redrives",
        tuple(flow_sql.CREATE_JOB_TABLES),
    ),
    Migration(
        6,
        "add the schedules and schedule_ticks tables",
        tuple(schedule_sql.CREATE_TABLES),
    ),
    Migration(
        7,
        "add the workflows and workflow_steps tables",
        tuple(workflow_sql.CREATE_TABLES),
    ),
    Migration(
        8,
        "add schedules.grace_s, the misfire grace of each schedule",
        tuple(schedule_sql.ADD_GRACE_COLUMN),
    ),
    Migration(
        9,
        "add workflow_steps.attempts, the receive count of a succeeded step",
        tuple(workflow_sql.ADD_STEP_ATTEMPTS),
    ),
    Migration(
        10,
        "add workflows.idempotency_key and its unique index",
        tuple(workflow_sql.ADD_IDEMPOTENCY_KEY),
    ),
    Migration(
        11,
        "add workflow_steps.delay_s, the delay of a step's message",
        tuple(workflow_sql.ADD_STEP_DELAY),
    ),
)
LATEST_VERSION = MIGRATIONS[-1].version


@dataclass(frozen=True)
class SchemaState:
    """A schema and its Conveyor version; version None means it has no tables yet."""

    schema: str
    version: int | None


@dataclass(frozen=True)
class UpgradeReport:
    """The outcome of `upgrade`.

    `from_version` is the schema's version before, None for an empty schema.
    """

    schema: str
    from_version: int | None
    to_version: int
    applied: tuple[Migration, ...]


def read_state(conn: psycopg.Connection, description: str) -> SchemaState:
    """Return the current schema and its version.

    Raises StoreUnavailable when the search_path names no existing schema,
    or when the schema contains tables but no Conveyor version.
    """
    schema = conn.execute(sql.SELECT_CURRENT_SCHEMA).fetchone()[0]
    if schema is None:
        raise StoreUnavailable(
            f"the PostgreSQL store at {description} has no schema to use: the "
            "schemas in its search_path do not exist; create the schema or set "
            "search_path with options=-csearch_path%3DNAME"
        )
    exists = conn.execute(sql.SELECT_TABLE_EXISTS, ("schema_version",)).fetchone()
    if not exists[0]:
        _check_no_tables(conn, schema, description)
        return SchemaState(schema, None)
    version = conn.execute(sql.SELECT_SCHEMA_VERSION).fetchone()[0]
    if version is None:
        raise StoreUnavailable(
            f"schema {schema!r} at {description} has an empty schema_version "
            "table, so its Conveyor version is unknown; Conveyor never leaves "
            "it empty, so pick an empty schema"
        )
    return SchemaState(schema, version)


def _check_no_tables(conn: psycopg.Connection, schema: str, description: str) -> None:
    has_queues = conn.execute(sql.SELECT_TABLE_EXISTS, ("queues",)).fetchone()[0]
    if has_queues:
        raise StoreUnavailable(
            f"schema {schema!r} at {description} has a 'queues' table but "
            "no Conveyor schema_version; it is not a Conveyor store, so pick an "
            "empty schema"
        )


def pending_migrations(version: int | None) -> tuple[Migration, ...]:
    """Return the migrations that bring a schema at `version` to the latest."""
    return MIGRATIONS[version or 0:]


def check_version(state: SchemaState, description: str) -> None:
    """Raise StoreUnavailable unless the schema is at the latest version.

    The message names the fix: `conveyor migrate` for an older schema, a
    newer Conveyor for a newer one.
    """
    if state.version == LATEST_VERSION:
        return
    if state.version is not None and state.version < LATEST_VERSION:
        raise StoreUnavailable(
            f"schema {state.schema!r} at {description} has Conveyor schema "
            f"version {state.version}, older than version {LATEST_VERSION} that "
            "this Conveyor uses; upgrade it with `conveyor migrate --store URL`, "
            "giving this store's URL"
        )
    check_not_newer(state, description)


def check_not_newer(state: SchemaState, description: str) -> None:
    """Raise StoreUnavailable when a newer Conveyor made or upgraded the schema."""
    if state.version is not None and state.version > LATEST_VERSION:
        raise StoreUnavailable(
            f"schema {state.schema!r} at {description} has Conveyor schema "
            f"version {state.version}, newer than version {LATEST_VERSION} that "
            "this Conveyor uses; upgrade Conveyor"
        )


def check_server_version(conn: psycopg.Connection, description: str) -> None:
    """Raise StoreUnavailable when the PostgreSQL server is older than version 13."""
    found = conn.info.server_version
    if found < MIN_SERVER_VERSION:
        raise StoreUnavailable(
            f"the PostgreSQL server at {description} runs version "
            f"{found // 10000}.{found % 10000}, older than "
            f"{MIN_SERVER_VERSION // 10000}, the oldest this Conveyor supports; "
            "upgrade PostgreSQL"
        )


def create_latest(conn: psycopg.Connection, schema: str, description: str) -> None:
    """Create the tables of the latest version in the caller's transaction.

    The caller holds the schema lock and has checked that the schema is empty.
    """
    check_server_version(conn, description)
    for migration in MIGRATIONS:
        _apply(conn, migration)
    logger.info(
        "Created the Conveyor tables (schema version %d) in schema %s at %s",
        LATEST_VERSION, schema, description,
    )


def upgrade(
    conn: psycopg.Connection,
    description: str,
    on_applied: Callable[[Migration], None] | None = None,
) -> UpgradeReport:
    """Bring the schema to the latest version: create it, or apply what is pending.

    `conn` must be in autocommit mode, so that each migration commits on its
    own; `on_applied` is called after each commit. Raises StoreUnavailable
    for a schema this code cannot use. A database error propagates as
    psycopg.Error, and the migration it interrupted is rolled back whole.
    """
    started: SchemaState | None = None
    applied: list[Migration] = []
    while True:
        with conn.transaction():
            conn.execute(sql.LOCK_SCHEMA, (sql.SCHEMA_LOCK_KEY,))
            state = read_state(conn, description)
            started = started or state
            check_not_newer(state, description)
            if state.version == LATEST_VERSION:
                break
            check_server_version(conn, description)
            if state.version is None:
                create_latest(conn, state.schema, description)
                done = MIGRATIONS
            else:
                done = (_apply(conn, MIGRATIONS[state.version]),)

        if state.version is not None:
            logger.info(
                "Applied migration %d to schema %s at %s: %s",
                done[0].version, state.schema, description, done[0].summary,
            )
        applied.extend(done)
        for migration in done:
            if on_applied is not None:
                on_applied(migration)
    return UpgradeReport(
        started.schema, started.version, LATEST_VERSION, tuple(applied)
    )


def _apply(conn: psycopg.Connection, migration: Migration) -> Migration:
    """Run a migration and record its version, in the caller's transaction."""
    for statement in migration.statements:
        conn.execute(statement)
    record = sql.INSERT_SCHEMA_VERSION if migration.version == 1 else RECORD_VERSION
    conn.execute(record, (migration.version,))
    return migration
