"""Two real `conveyor server` processes on one PostgreSQL schema fire each tick once."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from conveyor.client import connect
from http_fixtures import start_server

RUN_S = 6.0


@pytest.mark.acceptance
def test_two_servers_fire_each_tick_once(tmp_path, postgres_url):
    first = start_server(tmp_path / "a", store_url=postgres_url)
    second = start_server(tmp_path / "b", store_url=postgres_url)
    try:
        with connect(first.url) as client:
            client.create_queue("ticks")
            client.create_schedule("every-second", "ticks", interval_s=1, body=None)
            time.sleep(RUN_S)
            client.pause_schedule("every-second")
            # A tick that a server was firing at the pause commits just after it.
            time.sleep(0.5)
            messages = client.peek("ticks", limit=1000)
            schedule = client.get_schedule("every-second")
    finally:
        first.stop()
        second.stop()

    counts = Counter(m.headers["conveyor-schedule-tick"] for m in messages)
    assert len(messages) >= RUN_S - 1
    assert max(counts.values()) == 1
    assert schedule.run_count == len(messages)


@pytest.mark.acceptance
def test_ticks_contiguous_across_servers(tmp_path, postgres_url):
    first = start_server(tmp_path / "a", store_url=postgres_url)
    second = start_server(tmp_path / "b", store_url=postgres_url)
    try:
        with connect(second.url) as client:
            client.create_queue("ticks")
            created = client.create_schedule("every-second", "ticks", interval_s=1, body=None)
            time.sleep(RUN_S)
            client.pause_schedule("every-second")
            time.sleep(0.5)
            ticks = client.list_schedule_ticks("every-second", limit=1000)
    finally:
        first.stop()
        second.stop()

    tick_times = sorted(t["tick_at"] for t in ticks)
    expected = [round(created.start_at + k, 3) for k in range(len(tick_times))]
    assert [round(t, 3) for t in tick_times] == expected
    assert all(t["message_id"] is not None for t in ticks)
