"""Vacuum and analyze the PostgreSQL store's hot tables from the store itself.

Every message row is inserted, updated by each reserve and deleted by its
ack, so `messages` collects dead row versions at the rate of the traffic.
Until vacuum removes them, the reserve's index scan steps over their
entries, and a queue that has processed a million messages slows down.
Migration 2 tunes autovacuum for these tables, but autovacuum may be off
(some managed and test servers turn it off) or busy with other databases.

So each store process checks the tables' counters in `pg_stat_user_tables`
every CHECK_INTERVAL_S and runs `VACUUM (ANALYZE)` on a table whose dead
rows pass the threshold, or `ANALYZE` on one whose changes since the last
analyze do. SKIP_LOCKED skips, without waiting, a table that autovacuum or
another server's store is working on. No advisory lock is used, because a
session lock would leak behind a proxy that pools transactions. VACUUM only
marks space for reuse and takes no lock that blocks reads or writes.
`maintenance=off` on the store URL turns this off.
"""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S = 10.0
CONNECT_TIMEOUT_S = 10
# Thresholds in the form autovacuum uses: base rows plus a fraction of the
# live rows. They match the per-table autovacuum settings of migration 2.
VACUUM_BASE_ROWS = 1000
VACUUM_FRACTION = 0.01
ANALYZE_BASE_ROWS = 1000
ANALYZE_FRACTION = 0.02
TABLES = ("messages", "dedup", "results")

SELECT_TABLE_COUNTERS = (
    "SELECT relname, n_live_tup, n_dead_tup, n_mod_since_analyze "
    "FROM pg_stat_user_tables WHERE schemaname = current_schema() "
    "AND relname = ANY(%s)"
)


def needs_vacuum(live_rows: int, dead_rows: int) -> bool:
    return dead_rows >= VACUUM_BASE_ROWS + VACUUM_FRACTION * live_rows


def needs_analyze(live_rows: int, changed_rows: int) -> bool:
    return changed_rows >= ANALYZE_BASE_ROWS + ANALYZE_FRACTION * live_rows


class TableMaintenance:
    """A thread that vacuums and analyzes the store's tables when they need it."""

    def __init__(self, conninfo: str, description: str) -> None:
        self._conninfo = conninfo
        self._description = description
        self._stopping = threading.Event()
        self._failures = 0
        self._thread = threading.Thread(
            target=self._run, name="conveyor-postgres-maintenance", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stopping.wait(CHECK_INTERVAL_S):
            try:
                maintain_tables(self._conninfo, self._stopping)
                self._failures = 0
            except psycopg.Error as exc:
                self._failures += 1
                # The store's own operations report an outage, so one line
                # here and then one every 60 failed checks is enough.
                if self._failures == 1 or self._failures % 60 == 0:
                    logger.warning(
                        "Table maintenance on %s failed (attempt %d), retrying in %.0fs: %s",
                        self._description, self._failures, CHECK_INTERVAL_S, exc,
                    )


def maintain_tables(conninfo: str, stopping: threading.Event | None = None) -> list[str]:
    """Vacuum or analyze the store's tables that need it; return what ran."""
    done: list[str] = []
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        counters = conn.execute(SELECT_TABLE_COUNTERS, (list(TABLES),)).fetchall()
        for table, live, dead, changed in counters:
            command = _command_for(live, dead, changed)
            if command is None or (stopping is not None and stopping.is_set()):
                continue
            started = time.monotonic()
            conn.execute(sql.SQL(command).format(sql.Identifier(table)))
            name = command.split(" (")[0]
            done.append(f"{name} {table}")
            logger.info(
                "%s on table %s took %.2fs (%d live rows, %d dead, %d changed "
                "since the last analyze)",
                name, table, time.monotonic() - started, live, dead, changed,
            )
    return done


def _command_for(live: int, dead: int, changed: int) -> str | None:
    if needs_vacuum(live, dead):
        return "VACUUM (ANALYZE, SKIP_LOCKED) {}"
    if needs_analyze(live, changed):
        return "ANALYZE (SKIP_LOCKED) {}"
    return None
