"""Schema set-up of the SQLite store's flow control.

A SQLite store has no schema version. Each time a store opens a file it
creates the missing flow-control tables and adds the columns that newer
Conveyor versions need (sqlite_flow_sql.ADDED_COLUMNS), so a file made by
an older Conveyor upgrades itself in place.
"""

from __future__ import annotations

import sqlite3

from . import sqlite_flow_sql as flow_sql


def prepare_schema(conn: sqlite3.Connection) -> None:
    """Create the flow-control tables and add missing columns, in one transaction.

    BEGIN IMMEDIATE takes the file's write lock before the columns are
    checked, so two processes that open an old file at once add each
    column once.
    """
    conn.executescript(flow_sql.SCHEMA)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, column_type in flow_sql.ADDED_COLUMNS:
            present = {row[0] for row in conn.execute(flow_sql.TABLE_COLUMNS, (table,))}
            if column not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {column_type}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
