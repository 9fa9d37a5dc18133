"""`conveyor migrate`: bring a PostgreSQL store's schema to this Conveyor's version."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..errors import ConveyorError
from ..store import postgres_schema as versions
from ..store.postgres import CONNECT_TIMEOUT_S, connection_arguments, describe_target
from ..store.postgres_options import StoreOptions, parse_store_url
from . import main
from .common import CommandError, option, print_json, print_line, print_table
from .server import default_store_url

SQLITE_DETAIL = (
    "SQLite stores need no migration: the SQLite store has no schema version, "
    "and it creates any missing table or index each time it opens the file."
)


@main.command()
@option(
    "--store",
    envvar="CONVEYOR_STORE",
    default=None,
    show_default="sqlite:///$CONVEYOR_DATA_DIR/conveyor.db, as for conveyor server",
    help="Store URL whose schema to upgrade, such as "
    "postgresql://user@host:5432/dbname; give the URL the servers use.",
)
@option(
    "--dry-run",
    envvar="CONVEYOR_MIGRATE_DRY_RUN",
    is_flag=True,
    default=False,
    help="List the migrations that would run, and change nothing.",
)
@option(
    "--json",
    "json_output",
    envvar="CONVEYOR_JSON",
    is_flag=True,
    default=False,
    help="Print one JSON document for scripts instead of text.",
)
def migrate(store: str | None, dry_run: bool, json_output: bool) -> None:
    """Upgrade a PostgreSQL store's schema to the version this Conveyor uses.

    Each migration runs in its own transaction under the schema's lock, so a
    second `conveyor migrate` at the same time waits and then finds the work
    done. An empty schema gets every table at the latest version. A schema
    made by a newer Conveyor is left alone, with exit code 1.
    """
    store_url = store or default_store_url()
    scheme = urlparse(store_url).scheme
    if scheme == "sqlite":
        _report_sqlite(store_url, dry_run, json_output)
        return
    if scheme not in ("postgres", "postgresql"):
        raise CommandError(
            f"invalid store URL {store_url!r}: use postgresql://user@host:5432/dbname "
            "(or sqlite:///path/to/file.db, which needs no migration)"
        )
    try:
        conninfo, options = parse_store_url(store_url)
    except ConveyorError as exc:
        raise CommandError(exc.detail) from exc
    description = describe_target(conninfo)
    try:
        with _connect(conninfo, options) as conn:
            _migrate(conn, description, dry_run, json_output)
    except ConveyorError as exc:
        raise CommandError(exc.detail) from exc
    except psycopg.Error as exc:
        raise CommandError(
            f"could not migrate the PostgreSQL store at {description}: {exc}; "
            "nothing of the failed migration was kept, so fix the cause and run "
            "conveyor migrate again"
        ) from exc


def _connect(conninfo: str, options: StoreOptions) -> psycopg.Connection:
    """Connect in autocommit mode, so that each migration commits on its own."""
    extra = connection_arguments(options)
    if "connect_timeout" not in conninfo_to_dict(conninfo):
        extra["connect_timeout"] = int(CONNECT_TIMEOUT_S)
    return psycopg.connect(conninfo, autocommit=True, **extra)


def _migrate(
    conn: psycopg.Connection, description: str, dry_run: bool, json_output: bool
) -> None:
    # A dry run cannot change anything even by mistake: PostgreSQL rejects
    # every write in a read-only session.
    conn.read_only = dry_run
    with conn.transaction():
        state = versions.read_state(conn, description)
    versions.check_not_newer(state, description)
    pending = versions.pending_migrations(state.version)
    if dry_run or not pending:
        _report_plan(state, description, pending, dry_run, json_output)
        return

    if not json_output:
        print_line(f"{_describe_state(state, description)}; applying {len(pending)}.")
    report = versions.upgrade(
        conn,
        description,
        on_applied=None if json_output else _print_applied,
    )
    if json_output:
        print_json(_document(description, report.schema, report.from_version, dry_run,
                             applied=report.applied, pending=()))
        return
    if not report.applied:
        print_line(
            "Another process applied the migrations meanwhile; nothing was changed."
        )
    print_line(f"Schema {report.schema} is at version {report.to_version}.")


def _report_plan(
    state: versions.SchemaState,
    description: str,
    pending: tuple[versions.Migration, ...],
    dry_run: bool,
    json_output: bool,
) -> None:
    """Report a current schema, or the migrations a dry run would apply."""
    if json_output:
        print_json(_document(description, state.schema, state.version, dry_run,
                             applied=(), pending=pending))
        return
    if not pending:
        print_line(
            f"Schema {state.schema} at {description} is at version "
            f"{versions.LATEST_VERSION}, the version this Conveyor uses; nothing to do."
        )
        return
    print_line(f"{_describe_state(state, description)}. Dry run: nothing was changed.")
    print_table(
        "Migrations that would run",
        ["Version", "Change"],
        [(m.version, m.summary) for m in pending],
        wrapped=("Change",),
    )


def _describe_state(state: versions.SchemaState, description: str) -> str:
    if state.version is None:
        found = "has no Conveyor tables yet"
    else:
        found = f"is at version {state.version}"
    pending = len(versions.pending_migrations(state.version))
    return (
        f"Schema {state.schema} at {description} {found}; this Conveyor uses "
        f"version {versions.LATEST_VERSION}, {pending} migration"
        f"{'' if pending == 1 else 's'} to go"
    )


def _print_applied(migration: versions.Migration) -> None:
    print_line(f"Applied migration {migration.version}: {migration.summary}.")


def _document(
    description: str,
    schema: str,
    from_version: int | None,
    dry_run: bool,
    applied: tuple[versions.Migration, ...],
    pending: tuple[versions.Migration, ...],
) -> dict[str, Any]:
    return {
        "store": description,
        "backend": "postgresql",
        "schema": schema,
        "from_version": from_version,
        "latest_version": versions.LATEST_VERSION,
        "dry_run": dry_run,
        "applied": [_migration_document(m) for m in applied],
        "pending": [_migration_document(m) for m in pending],
    }


def _migration_document(migration: versions.Migration) -> dict[str, Any]:
    return {"version": migration.version, "summary": migration.summary}


def _report_sqlite(store_url: str, dry_run: bool, json_output: bool) -> None:
    if json_output:
        print_json({
            "store": store_url,
            "backend": "sqlite",
            "dry_run": dry_run,
            "applied": [],
            "pending": [],
            "detail": SQLITE_DETAIL,
        })
        return
    print_line(f"{store_url}: {SQLITE_DETAIL}")
