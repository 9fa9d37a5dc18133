"""The PostgreSQL store vacuums and analyzes its own hot tables.

This machine's PostgreSQL, like some managed ones, runs with autovacuum
off, so without the store's own maintenance the dead rows of acked
messages would stay until someone runs VACUUM.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from conveyor.engine import Engine
from conveyor.errors import ValidationError
from conveyor.models import NewMessage
from conveyor.store import postgres_maintenance
from conveyor.store.postgres_maintenance import maintain_tables
from conveyor.store.postgres_options import parse_store_url

CHURN = 3000


def churn(engine: Engine, queue: str, count: int) -> None:
    """Post, reserve and ack `count` messages, leaving `count` dead rows behind."""
    engine.create_queue(queue)
    for start in range(0, count, 1000):
        engine.post(queue, [NewMessage(i) for i in range(start, min(count, start + 1000))])
    while messages := engine.reserve(queue, 100):
        engine.ack(queue, [{"id": m.id, "receipt": m.receipt} for m in messages])


def table_counters(url: str) -> tuple[int, object]:
    """Return (dead rows, time of the last manual vacuum) of the messages table."""
    conninfo, _ = parse_store_url(url)
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "SELECT n_dead_tup, last_vacuum FROM pg_stat_user_tables "
            "WHERE schemaname = current_schema() AND relname = 'messages'"
        ).fetchone()


def wait_for(check, timeout_s: float, description: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:g}s waiting for {description}")


def test_thresholds_follow_table_size():
    assert not postgres_maintenance.needs_vacuum(live_rows=0, dead_rows=999)
    assert postgres_maintenance.needs_vacuum(live_rows=0, dead_rows=1000)
    # A million live rows raise the vacuum threshold by 10,000 dead rows.
    assert not postgres_maintenance.needs_vacuum(live_rows=1_000_000, dead_rows=10_999)
    assert postgres_maintenance.needs_vacuum(live_rows=1_000_000, dead_rows=11_000)
    assert postgres_maintenance.needs_analyze(live_rows=0, changed_rows=1000)
    assert not postgres_maintenance.needs_analyze(live_rows=1_000_000, changed_rows=20_999)


def test_maintain_tables_vacuums_churn(postgres_url):
    engine = Engine(postgres_url + "&maintenance=off", sweep=False)
    try:
        churn(engine, "jobs", CHURN)
    finally:
        engine.close()
    # Backends report their counters shortly after their transactions end.
    wait_for(lambda: table_counters(postgres_url)[0] >= CHURN, 30, "the dead rows to show")
    assert table_counters(postgres_url)[1] is None
    conninfo, _ = parse_store_url(postgres_url)
    assert "VACUUM messages" in maintain_tables(conninfo)
    dead, _ = wait_for(
        lambda: table_counters(postgres_url)[1] is not None and table_counters(postgres_url),
        30, "the vacuum to be recorded",
    )
    assert dead < CHURN
    # Nothing is left to do until the table churns again.
    assert "VACUUM messages" not in maintain_tables(conninfo)


def test_store_thread_vacuums_by_itself(postgres_url):
    engine = Engine(postgres_url, sweep=False)
    try:
        churn(engine, "jobs", CHURN)
        # The thread checks every CHECK_INTERVAL_S; allow a few rounds.
        timeout_s = postgres_maintenance.CHECK_INTERVAL_S * 4
        wait_for(lambda: table_counters(postgres_url)[1], timeout_s, "a vacuum by the store")
    finally:
        engine.close()


def test_maintenance_switch_is_checked():
    with pytest.raises(ValidationError) as caught:
        parse_store_url("postgresql://127.0.0.1/test?maintenance=sometimes")
    assert "maintenance='sometimes'" in str(caught.value)
    _, options = parse_store_url("postgresql://127.0.0.1/test?maintenance=off")
    assert options.maintenance is False
