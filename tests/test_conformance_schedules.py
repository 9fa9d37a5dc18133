"""Schedules, run against every store with a fake clock.

Scheduler steps are driven by hand through `Engine.run_schedules`; the
background loop has its own test at the end.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from conveyor.engine import Engine
from conveyor.errors import (
    QueueNotFound,
    ScheduleAlreadyExists,
    ScheduleNotFound,
    ValidationError,
)
from conveyor.models import NewMessage
from conveyor.schedule_times import GRACE_S, to_iso
from conveyor.scheduler import RECHECK_S, Scheduler

DAY_S = 86_400.0


@pytest.fixture
def queue(engine: Engine) -> str:
    engine.create_queue("jobs")
    return "jobs"


def messages(engine: Engine, queue: str = "jobs") -> list:
    return engine.peek(queue, limit=1000)


def every(engine: Engine, name: str = "tick", interval_s: float = 60.0, **fields) -> object:
    return engine.create_schedule(name, "jobs", interval_s=interval_s, body={"n": name}, **fields)


def test_create_lists_next_fire_times(engine, queue, clock):
    schedule = every(engine, start_at=clock.now + 10)
    start = clock.now + 10
    assert schedule.state == "active"
    assert schedule.next_fire_at == start
    assert schedule.next_fire_times == [start + k * 60 for k in range(5)]
    assert schedule.run_count == 0
    assert schedule.last_fire_at is None
    assert schedule.source == "api"


def test_create_cron_next_in_timezone(engine, queue, clock):
    schedule = engine.create_schedule(
        "daily", "jobs", cron="0 9 * * *", timezone="Europe/Berlin", body=1
    )
    assert schedule.timezone == "Europe/Berlin"
    assert schedule.next_fire_at > clock.now
    assert schedule.next_fire_at <= clock.now + DAY_S


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata", "Etc/GMT+5"])
def test_create_accepts_iana_zone(engine, queue, zone):
    schedule = engine.create_schedule("z", "jobs", cron="0 9 * * *", timezone=zone)
    assert schedule.timezone == zone


def test_create_twice_rejected(engine, queue):
    every(engine)
    with pytest.raises(ScheduleAlreadyExists):
        every(engine)


def test_tick_fires_once(engine, queue, clock):
    schedule = every(engine)
    assert engine.run_schedules() == 1
    assert engine.run_schedules() == 0
    posted = messages(engine)
    assert len(posted) == 1
    assert posted[0].body == {"n": "tick"}
    assert posted[0].headers["conveyor-schedule"] == "tick"
    assert posted[0].headers["conveyor-schedule-tick"] == to_iso(schedule.next_fire_at)
    after = engine.get_schedule("tick")
    assert after.run_count == 1
    assert after.last_fire_at == schedule.next_fire_at
    assert after.next_fire_at == schedule.next_fire_at + 60


def test_not_due_fires_nothing(engine, queue, clock):
    every(engine, start_at=clock.now + 30)
    clock.advance(29)
    assert engine.run_schedules() == 0
    clock.advance(1)
    assert engine.run_schedules() == 1


def test_ticks_recorded(engine, queue, clock):
    every(engine)
    engine.run_schedules()
    clock.advance(60)
    engine.run_schedules()
    ticks = engine.list_schedule_ticks("tick")
    posted_ids = {m.id for m in messages(engine)}
    assert len(ticks) == 2
    assert {t["message_id"] for t in ticks} == posted_ids
    assert ticks[0]["tick_at"] > ticks[1]["tick_at"]


def test_two_engines_fire_each_tick_once(make_engine, clock):
    first = make_engine(clock=clock)
    second = make_engine(clock=clock)
    first.create_queue("jobs")
    first.create_schedule("fast", "jobs", interval_s=1, body=None)
    rounds = 40
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            for _ in range(rounds):
                barrier.wait()
                engine.run_schedules()
                barrier.wait()
                if engine is first:
                    clock.advance(1)
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(e,)) for e in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    ticks = [m.headers["conveyor-schedule-tick"] for m in messages(first)]
    assert len(ticks) == rounds
    assert len(set(ticks)) == rounds
    assert first.get_schedule("fast").run_count == rounds


def test_paused_does_not_fire(engine, queue, clock):
    every(engine)
    engine.pause_schedule("tick")
    assert engine.get_schedule("tick").state == "paused"
    clock.advance(600)
    assert engine.run_schedules() == 0
    assert messages(engine) == []


def test_resume_skip_fires_no_tick_of_pause(engine, queue, clock):
    schedule = every(engine)
    engine.pause_schedule("tick")
    clock.advance(600 + 30)
    resumed = engine.resume_schedule("tick")
    assert resumed.next_fire_at == schedule.next_fire_at + 660
    assert engine.run_schedules() == 0
    assert messages(engine) == []


def test_resume_once_fires_one_for_missed(engine, queue, clock):
    every(engine, interval_s=300, catch_up="once")
    engine.pause_schedule("tick")
    clock.advance(3000 + GRACE_S + 40)
    engine.resume_schedule("tick")
    posted = messages(engine)
    assert len(posted) == 1
    assert posted[0].headers["conveyor-schedule-missed"] == "11"


def test_resume_once_short_pause_fires_one(engine, queue, clock):
    every(engine, catch_up="once")
    engine.pause_schedule("tick")
    clock.advance(150)
    engine.resume_schedule("tick")
    posted = messages(engine)
    assert len(posted) == 1
    assert posted[0].headers["conveyor-schedule-missed"] == "3"


def test_resume_all_marks_pause_ticks_missed(engine, queue, clock):
    every(engine, catch_up="all")
    engine.pause_schedule("tick")
    clock.advance(150)
    engine.resume_schedule("tick")
    missed = [m.headers.get("conveyor-schedule-missed") for m in messages(engine)]
    assert missed == ["1", "1", "1"]


def test_resume_returns_future_next_tick(engine, queue, clock):
    every(engine, catch_up="once")
    engine.pause_schedule("tick")
    clock.advance(150)
    resumed = engine.resume_schedule("tick")
    assert resumed.next_fire_at > clock.now
    assert resumed.next_fire_times[0] == resumed.next_fire_at


def test_paused_shows_no_next_tick(engine, queue, clock):
    every(engine, paused=True)
    clock.advance(600)
    paused = engine.get_schedule("tick")
    assert paused.state == "paused"
    assert paused.next_fire_at is None
    assert paused.next_fire_times == []


def test_resume_warning_says_paused(engine, queue, clock, caplog):
    every(engine)
    engine.pause_schedule("tick")
    clock.advance(30)
    with caplog.at_level("WARNING", logger="conveyor.store.schedules"):
        engine.resume_schedule("tick")
    assert "missed 1 tick while paused" in caplog.text


def test_outage_days_skip_fires_none(engine, queue, clock):
    schedule = every(engine, interval_s=3600)
    clock.advance(3 * DAY_S + 1800)
    assert engine.run_schedules() == 0
    after = engine.get_schedule("tick")
    assert after.next_fire_at == schedule.next_fire_at + 3 * DAY_S + 3600
    assert after.run_count == 0


def test_outage_days_all_fires_newest_up_to_limit(engine, queue, clock):
    schedule = every(engine, interval_s=3600, catch_up="all", catch_up_limit=5)
    clock.advance(3 * DAY_S + 1800)
    assert engine.run_schedules() == 5
    ticks = sorted(m.headers["conveyor-schedule-tick"] for m in messages(engine))
    newest = schedule.next_fire_at + 3 * DAY_S
    assert ticks == [to_iso(newest - k * 3600) for k in range(4, -1, -1)]


def test_outage_days_once_fires_one(engine, queue, clock):
    engine.create_schedule(
        "daily", "jobs", cron="0 9 * * *", timezone="America/New_York",
        catch_up="once", body=None,
    )
    clock.advance(4 * DAY_S)
    assert engine.run_schedules() == 1
    assert messages(engine)[0].headers["conveyor-schedule-missed"] in {"3", "4"}


def test_max_runs_finishes(engine, queue, clock):
    every(engine, max_runs=2)
    for _ in range(4):
        engine.run_schedules()
        clock.advance(60)
    schedule = engine.get_schedule("tick")
    assert len(messages(engine)) == 2
    assert schedule.state == "finished"
    assert schedule.next_fire_at is None
    assert schedule.next_fire_times == []


def test_end_at_finishes(engine, queue, clock):
    every(engine, end_at=clock.now + 90)
    for _ in range(4):
        engine.run_schedules()
        clock.advance(60)
    assert len(messages(engine)) == 2
    assert engine.get_schedule("tick").state == "finished"


def test_grace_defaults_to_60_s(engine, queue):
    assert every(engine).grace_s == 60.0


def test_grace_decides_late_tick(engine, queue, clock):
    every(engine, name="strict", grace_s=0, interval_s=3600)
    every(engine, name="lenient", grace_s=600, interval_s=3600)
    clock.advance(300)
    engine.run_schedules()
    posted = [m.headers["conveyor-schedule"] for m in messages(engine)]
    assert posted == ["lenient"]


def test_zero_grace_fires_slightly_late_tick(engine, queue, clock):
    every(engine, grace_s=0, interval_s=60)
    engine.run_schedules()
    clock.advance(60.2)

    assert engine.run_schedules() == 1
    [_, message] = messages(engine)
    assert "conveyor-schedule-missed" not in message.headers


def test_zero_grace_skips_late_tick(engine, queue, clock):
    every(engine, grace_s=0, interval_s=60)
    engine.run_schedules()
    clock.advance(62)

    assert engine.run_schedules() == 0
    assert len(messages(engine)) == 1


def test_outage_skip_posts_one_for_second_schedule(engine, queue, clock):
    every(engine, interval_s=1)
    clock.advance(59.5)
    assert engine.run_schedules() == 1
    assert engine.get_schedule("tick").next_fire_at == clock.now + 0.5


def test_update_grace_keeps_other_fields(engine, queue):
    every(engine, catch_up="once")
    updated = engine.update_schedule("tick", grace_s=5)
    assert updated.grace_s == 5.0
    assert updated.catch_up == "once"


def test_messages_follow_queue_rules(engine, clock):
    engine.create_queue("later", {"default_delay_s": 30})
    engine.create_schedule("s", "later", interval_s=60, body=1, priority=5)
    engine.run_schedules()
    posted = engine.peek("later")
    assert posted[0].state == "delayed"
    assert posted[0].due_at == clock.now + 30
    assert posted[0].priority == 5


def test_fifo_queue_needs_group(engine, clock):
    engine.create_queue("ordered", {"type": "fifo"})
    with pytest.raises(ValidationError):
        engine.create_schedule("s", "ordered", interval_s=60, body=1)
    assert engine.list_schedules() == []
    engine.create_schedule("s", "ordered", interval_s=60, body=1, group="g")
    engine.run_schedules()
    assert engine.peek("ordered")[0].group == "g"


@pytest.mark.parametrize("cron,expected", [
    ("0 0 30 2 *", "the date never occurs"),
    ("61 * * * *", "the minute field (field 1) '61'"),
    ("* * * * 9", "the day-of-week field (field 5) '9'"),
    ("* 24 * * *", "use 0-23"),
])
def test_cron_error_names_field(engine, queue, cron, expected):
    with pytest.raises(ValidationError) as caught:
        engine.create_schedule("bad", "jobs", cron=cron)
    assert expected in caught.value.detail
    assert "use five fields" not in caught.value.detail


def test_fifo_error_names_group(engine, clock):
    engine.create_queue("ordered", {"type": "fifo"})
    with pytest.raises(ValidationError) as caught:
        engine.create_schedule("s", "ordered", interval_s=60, body=1)
    assert "the schedule needs a group" in caught.value.detail
    assert "--group" in caught.value.detail


def test_missing_queue_rejected(engine):
    with pytest.raises(QueueNotFound):
        engine.create_schedule("s", "nowhere", interval_s=60, body=1)
    assert engine.list_schedules() == []


def test_deleted_queue_records_error(engine, queue, clock):
    every(engine)
    engine.delete_queue("jobs")
    assert engine.run_schedules() == 0
    schedule = engine.get_schedule("tick")
    assert "does not exist" in schedule.last_error
    assert schedule.next_fire_at == schedule.start_at + 60


def test_missing_queue_warning_rate_limited(engine, queue, clock, caplog):
    name = "orphan-" + uuid.uuid4().hex[:8]
    every(engine, name=name, interval_s=30)
    engine.delete_queue("jobs")
    with caplog.at_level("WARNING", logger="conveyor.store.schedules"):
        for _ in range(4):
            engine.run_schedules()
            clock.advance(30)
    reports = [r for r in caplog.records if "could not post" in r.getMessage()]
    assert len(reports) == 1
    clock.advance(300)
    caplog.clear()
    with caplog.at_level("WARNING", logger="conveyor.store.schedules"):
        engine.run_schedules()
    reports = [r.getMessage() for r in caplog.records if "could not post" in r.getMessage()]
    assert len(reports) == 1
    assert "more failed ticks since the last report" in reports[0]


def test_delete_queue_warns_about_schedules(engine, queue, caplog):
    every(engine, name="feeder")
    with caplog.at_level("WARNING", logger="conveyor.engine"):
        engine.delete_queue("jobs")
    assert "schedules feeder still post to it" in caplog.text


INVALID = [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "@daily"}, "cron"),
    ({"cron": "* * * * * *"}, "five"),
    ({"cron": "0 0 30 2 *"}, "cron"),
    ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ({"cron": "0 9 * * *", "timezone": "../etc/passwd"}, "timezone"),
    ({"cron": "0 9 * * *", "timezone": "localtime"}, "timezone"),
    ({"cron": "0 9 * * *", "timezone": "posixrules"}, "timezone"),
    ({"cron": "0 9 * * *", "timezone": "Factory"}, "timezone"),
    ({"cron": "0 9 * * *", "timezone": "right/UTC"}, "timezone"),
    ({"cron": "0 9 * * *", "timezone": "posix/Europe/Berlin"}, "timezone"),
    ({"interval_s": 0}, "interval_s"),
    ({"interval_s": -5}, "interval_s"),
    ({"interval_s": 0.5}, "interval_s"),
    ({"interval_s": 60, "cron": "* * * * *"}, "exactly one"),
    ({}, "exactly one"),
    ({"interval_s": 60, "timezone": "UTC"}, "timezone"),
    ({"interval_s": 60, "start_at": 2000.0, "end_at": 1000.0}, "end_at"),
    ({"interval_s": 60, "max_runs": 0}, "max_runs"),
    ({"interval_s": 60, "catch_up": "sometimes"}, "catch_up"),
    ({"interval_s": 60, "catch_up": "all", "catch_up_limit": 5000}, "catch_up_limit"),
    ({"interval_s": 60, "body": "x" * 70_000}, "bytes"),
    ({"interval_s": 60, "body": b"binary"}, "JSON"),
    ({"interval_s": 60, "headers": {"conveyor-schedule": "x"}}, "conveyor-schedule"),
    ({"interval_s": 60, "headers": {"Conveyor-Schedule-Tick": "x"}}, "Conveyor-Schedule-Tick"),
    ({"interval_s": 60, "priority": 5000}, "priority"),
    ({"interval_s": 60, "colour": "red"}, "colour"),
    ({"interval_s": 60, "grace_s": -1}, "grace_s"),
    ({"interval_s": 60, "grace_s": 86_401}, "grace_s"),
    ({"interval_s": 60, "grace_s": "soon"}, "grace_s"),
    ({"interval_s": float("nan")}, "finite"),
    ({"interval_s": float("inf")}, "interval_s"),
    ({"cron": "* * * * *", "interval_s": float("nan")}, "interval_s"),
    ({"interval_s": 60, "start_at": float("nan")}, "start_at"),
    ({"interval_s": 60, "body": {"x": [1.0, float("inf")]}}, "body['x'][1]"),
]


@pytest.mark.parametrize("fields,mentioned", INVALID)
def test_invalid_definition_stores_nothing(engine, queue, fields, mentioned):
    with pytest.raises(ValidationError) as caught:
        engine.create_schedule("bad", "jobs", **fields)
    assert mentioned in str(caught.value)
    assert engine.list_schedules() == []


@pytest.mark.parametrize("name", ["", "-lead", "a" * 81, "sp ace", "slash/name", 7])
def test_invalid_name_rejected(engine, queue, name):
    with pytest.raises(ValidationError):
        engine.create_schedule(name, "jobs", interval_s=60)
    assert engine.list_schedules() == []


def test_put_unchanged_keeps_state(engine, queue, clock):
    engine.put_schedule("code", "jobs", source="code", interval_s=60, body=1)
    engine.run_schedules()
    before = engine.get_schedule("code")
    clock.advance(10)
    again = engine.put_schedule("code", "jobs", source="code", interval_s=60, body=1)
    assert again.next_fire_at == before.next_fire_at
    assert again.run_count == 1
    assert again.updated_at == before.updated_at


def test_put_changed_updates_definition(engine, queue, clock):
    engine.put_schedule("code", "jobs", source="code", interval_s=60, body=1)
    engine.run_schedules()
    clock.advance(10)
    changed = engine.put_schedule("code", "jobs", source="code", interval_s=120, body=2)
    assert changed.interval_s == 120
    assert changed.message == {"body": 2}
    assert changed.run_count == 1
    assert changed.next_fire_at == changed.start_at + 120


def test_put_code_rejects_api_schedule(engine, queue):
    every(engine)
    with pytest.raises(ScheduleAlreadyExists) as caught:
        engine.put_schedule("tick", "jobs", source="code", interval_s=30, body=None)
    assert "'tick'" in caught.value.detail
    stored = engine.get_schedule("tick")
    assert stored.source == "api"
    assert stored.interval_s == 60.0


def test_put_invalid_keeps_old(engine, queue):
    engine.put_schedule("code", "jobs", interval_s=60, body=1)
    with pytest.raises(ValidationError):
        engine.put_schedule("code", "jobs", interval_s=-1, body=1)
    assert engine.get_schedule("code").interval_s == 60


def test_update_switches_to_cron(engine, queue, clock):
    every(engine)
    changed = engine.update_schedule("tick", cron="*/5 * * * *", timezone="Asia/Tokyo")
    assert changed.interval_s is None
    assert changed.cron == "*/5 * * * *"
    assert changed.timezone == "Asia/Tokyo"
    assert changed.next_fire_at - clock.now <= 300


def test_update_invalid_leaves_schedule(engine, queue):
    every(engine)
    with pytest.raises(ValidationError):
        engine.update_schedule("tick", max_runs=0)
    assert engine.get_schedule("tick").max_runs is None


def test_update_missing_raises(engine, queue):
    with pytest.raises(ScheduleNotFound):
        engine.update_schedule("nope", max_runs=3)


def test_delete_removes_schedule(engine, queue):
    every(engine)
    engine.run_schedules()
    engine.delete_schedule("tick")
    with pytest.raises(ScheduleNotFound):
        engine.get_schedule("tick")
    assert len(messages(engine)) == 1


def test_list_filters(engine, queue):
    engine.create_queue("other")
    every(engine, "a")
    engine.create_schedule("b", "other", interval_s=60)
    engine.put_schedule("c", "other", source="code", interval_s=60)
    assert [s.name for s in engine.list_schedules()] == ["a", "b", "c"]
    assert [s.name for s in engine.list_schedules(queue="other")] == ["b", "c"]
    assert [s.name for s in engine.list_schedules(source="code")] == ["c"]


def test_prune_keeps_latest_tick(engine, queue, clock):
    every(engine, interval_s=DAY_S)
    for _ in range(10):
        engine.run_schedules()
        clock.advance(DAY_S)
    assert len(engine.list_schedule_ticks("tick")) == 10
    engine.prune_schedule_ticks()
    kept = engine.list_schedule_ticks("tick")
    assert len(kept) == 7
    assert kept[0]["fired_at"] == clock.now - DAY_S


def test_delay_resolved_on_server_clock(engine, queue, clock):
    clock.advance(40 * DAY_S)
    engine.post("jobs", [NewMessage("x", delay_s=60)])
    posted = messages(engine)[0]
    assert posted.due_at == clock.now + 60
    assert posted.posted_at == clock.now


def test_background_loop_fires(make_engine):
    engine = make_engine(schedules=True)
    engine.create_queue("jobs")
    engine.create_schedule("loop", "jobs", interval_s=1, body=None)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(engine.peek("jobs", limit=10)) < 2:
        time.sleep(0.1)
    assert len(engine.peek("jobs", limit=10)) >= 2


def test_concurrent_puts_store_one(make_engine, clock):
    engines = [make_engine(clock=clock) for _ in range(2)]
    engines[0].create_queue("jobs")
    results: list[object] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def put(engine: Engine) -> None:
        try:
            for round_number in range(10):
                barrier.wait()
                results.append(engine.put_schedule(
                    f"code-{round_number}", "jobs", source="code", interval_s=60
                ))
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=put, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == 20
    assert len(engines[0].list_schedules()) == 10


def test_loop_sleeps_until_next_tick(engine, queue, clock):
    loop = Scheduler(engine)
    assert loop.run_once() == RECHECK_S
    every(engine, start_at=clock.now + 2)
    assert loop.run_once() == pytest.approx(2.0)
    clock.advance(2)
    assert loop.run_once() == RECHECK_S
    assert len(messages(engine)) == 1


def test_loop_wakes_on_create(make_engine):
    engine = make_engine(schedules=True)
    engine.create_queue("jobs")
    # Let the loop find nothing and go to sleep for RECHECK_S.
    time.sleep(0.5)
    started = time.monotonic()
    engine.create_schedule("soon", "jobs", interval_s=3600, body=None)
    while time.monotonic() - started < RECHECK_S and not engine.peek("jobs"):
        time.sleep(0.02)
    assert engine.peek("jobs")
    assert time.monotonic() - started < RECHECK_S / 2


def test_raising_max_runs_reactivates(engine, queue, clock):
    every(engine, max_runs=1)
    engine.run_schedules()
    assert engine.get_schedule("tick").state == "finished"
    clock.advance(30)
    changed = engine.update_schedule("tick", max_runs=3)
    assert changed.state == "active"
    assert changed.run_count == 1
    assert changed.next_fire_at == changed.start_at + 60


def test_sqlite_file_without_grace_gets_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    old_table = (
        "CREATE TABLE schedules (name TEXT PRIMARY KEY, queue TEXT NOT NULL, cron TEXT, "
        "timezone TEXT NOT NULL, interval_s REAL, start_at REAL NOT NULL, end_at REAL, "
        "max_runs INTEGER, catch_up TEXT NOT NULL, catch_up_limit INTEGER NOT NULL, "
        "message TEXT NOT NULL, source TEXT NOT NULL, paused INTEGER NOT NULL DEFAULT 0, "
        "run_count INTEGER NOT NULL DEFAULT 0, last_fire_at REAL, next_fire_at REAL, "
        "last_error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL)"
    )
    with sqlite3.connect(path) as conn:
        conn.execute(old_table)
        conn.execute(
            "INSERT INTO schedules VALUES ('old', 'jobs', NULL, 'UTC', 60, 0, NULL, NULL, "
            "'skip', 100, '{}', 'api', 0, 0, NULL, 60, NULL, 0, 0)"
        )
    engine = Engine(f"sqlite:///{path}")
    try:
        assert engine.get_schedule("old").grace_s == 60.0
    finally:
        engine.close()
