"""Schedules declared in code with @app.periodic, synced to a store and run by a worker."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

import pytest

from conveyor import Conveyor
from conveyor.errors import ScheduleAlreadyExists, ValidationError
from http_fixtures import start_server
from task_workers import launch_worker, read_records, start_worker, stop_worker, wait_until


@pytest.fixture
def app(tmp_path):
    application = Conveyor(f"sqlite:///{tmp_path}/app.db")
    yield application
    application.close()


def test_periodic_on_task_declares(app):
    @app.periodic(cron="0 9 * * 1-5", timezone="Europe/Berlin", args=(3,))
    @app.task(queue="reports", name="reports.daily")
    def daily(count: int) -> int:
        return count

    declared = app.periodic_schedules["reports.daily"]
    assert declared.task is daily
    assert declared.fields["cron"] == "0 9 * * 1-5"
    assert declared.fields["body"] == {"task": "reports.daily", "args": [3], "kwargs": {}}


def test_periodic_alone_registers_task(app):
    @app.periodic(every=timedelta(minutes=5), queue="misc", task_name="misc.tidy")
    def tidy() -> None:
        return None

    assert app.tasks["misc.tidy"].queue == "misc"
    assert app.periodic_schedules["misc.tidy"].fields["interval_s"] == 300.0


def test_periodic_needs_one_timing(app):
    with pytest.raises(ValidationError):
        @app.periodic(args=())
        @app.task(name="a")
        def a() -> None:
            return None
    with pytest.raises(ValidationError):
        @app.periodic(cron="* * * * *", every=60)
        @app.task(name="b")
        def b() -> None:
            return None


def test_periodic_checks_arguments(app):
    with pytest.raises(ValidationError):
        @app.periodic(every=60, args=(1, 2))
        @app.task(name="one_arg")
        def one_arg(x: int) -> None:
            return None


def test_periodic_duplicate_name_rejected(app):
    @app.task(name="dup")
    def dup() -> None:
        return None

    app.periodic(every=60)(dup)
    with pytest.raises(ValidationError):
        app.periodic(every=120)(dup)


def test_sync_stores_and_is_idempotent(app):
    @app.periodic(every=60, start=datetime(2030, 1, 1, tzinfo=timezone.utc), max_runs=5)
    @app.task(queue="jobs", name="jobs.tick")
    def tick() -> None:
        return None

    first = app.sync_schedules()
    again = app.sync_schedules()
    assert [s.name for s in first] == ["jobs.tick"]
    assert first[0].source == "code"
    assert first[0].start_at == datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()
    assert again[0].updated_at == first[0].updated_at
    assert again[0].next_fire_at == first[0].next_fire_at


def test_sync_updates_changed_definition(tmp_path):
    url = f"sqlite:///{tmp_path}/app.db"
    old, new = Conveyor(url), Conveyor(url)
    for application, seconds in ((old, 60), (new, 120)):
        @application.periodic(every=seconds)
        @application.task(queue="jobs", name="jobs.tick")
        def tick() -> None:
            return None

    old.sync_schedules()
    stored = new.sync_schedules()[0]
    assert stored.interval_s == 120
    old.close()
    new.close()


def test_sync_warns_about_removed(tmp_path, caplog):
    url = f"sqlite:///{tmp_path}/app.db"
    old, new = Conveyor(url), Conveyor(url)

    @old.periodic(every=60)
    @old.task(queue="jobs", name="jobs.gone")
    def gone() -> None:
        return None

    @new.task(queue="jobs", name="jobs.other")
    def other() -> None:
        return None

    old.sync_schedules()
    with caplog.at_level(logging.WARNING, logger="conveyor.tasks.periodic"):
        new.sync_schedules()
    assert "jobs.gone" in caplog.text
    assert new.client.get_schedule("jobs.gone").source == "code"
    old.close()
    new.close()


@pytest.mark.acceptance
def test_worker_runs_periodic_task(tmp_path):
    server = start_server(tmp_path / "server")
    worker = start_worker(tmp_path, "periodic_tasks:app", server.url)
    try:
        wait_until(lambda: len(read_records(tmp_path)) >= 2, 20)
    finally:
        stop_worker(worker)
        server.stop()
    records = read_records(tmp_path)
    assert records[0]["word"] == "hello"
    assert len({r["tick"] for r in records}) == len(records)
    assert "Schedule greet-every-second of task" in worker.log()


def test_periodic_grace_stored(app):
    @app.periodic(every=60, grace=timedelta(seconds=5))
    @app.task(queue="misc", name="graceful")
    def graceful() -> None:
        return None

    assert app.periodic_schedules["graceful"].fields["grace_s"] == 5.0
    stored = app.sync_schedules()
    assert stored[0].grace_s == 5.0


BAD_DECLARATIONS = [
    ({"cron": "@daily"}, "cron"),
    ({"every": 0.1}, "interval_s"),
    ({"cron": "0 9 * * *", "timezone": "Mars/X"}, "timezone"),
    ({"every": 60, "catch_up": "sometimes"}, "catch_up"),
    ({"every": 60, "max_runs": 0}, "max_runs"),
    ({"every": 60, "grace": -1}, "grace_s"),
    ({"every": float("nan")}, "interval_s"),
]


@pytest.mark.parametrize("options,mentioned", BAD_DECLARATIONS)
def test_periodic_checks_definition_at_import(app, options, mentioned):
    with pytest.raises(ValidationError) as caught:
        @app.periodic(**options)
        @app.task(queue="misc", name="misc.bad")
        def bad() -> None:
            return None
    assert mentioned in caught.value.detail
    assert "'misc.bad'" in caught.value.detail
    assert "schedule 'misc.bad'" in caught.value.detail
    assert app.periodic_schedules == {}


def test_sync_keeps_api_schedule(app):
    app.client.create_queue("misc")
    app.client.create_schedule("misc.shared", "misc", interval_s=300, body=None)

    @app.periodic(every=60)
    @app.task(queue="misc", name="misc.shared")
    def shared() -> None:
        return None

    with pytest.raises(ScheduleAlreadyExists) as caught:
        app.sync_schedules()
    assert "misc.shared" in caught.value.detail
    assert "delete" in caught.value.detail
    stored = app.client.get_schedule("misc.shared")
    assert stored.source == "api"
    assert stored.interval_s == 300.0


def test_sync_logs_changed_definition(tmp_path, caplog):
    url = f"sqlite:///{tmp_path}/shared.db"
    first, second = Conveyor(url), Conveyor(url)
    try:
        for application, seconds in ((first, 60), (second, 90)):
            @application.periodic(every=seconds, name="beat")
            @application.task(queue="misc", name="misc.beat")
            def beat() -> None:
                return None
        first.sync_schedules()
        with caplog.at_level(logging.WARNING, logger="conveyor.tasks.periodic"):
            second.sync_schedules()
    finally:
        first.close()
        second.close()
    assert "Schedule beat of task misc.beat changed on sync" in caplog.text
    assert "interval_s 60.0 -> 90.0" in caplog.text


def test_task_above_periodic_says_order(app):
    with pytest.raises(ValidationError) as caught:
        @app.task(queue="misc", name="misc.upside")
        @app.periodic(every=60, queue="misc", task_name="misc.upside")
        def upside() -> None:
            return None
    assert "put @app.periodic on top of @app.task" in caught.value.detail


def test_periodic_unknown_keyword_lists_options(app):
    with pytest.raises(ValidationError) as caught:
        @app.periodic(every=60, catchup="once")
        @app.task(queue="misc", name="misc.typo")
        def typo() -> None:
            return None
    assert "'catchup'" in caught.value.detail
    assert "catch_up" in caught.value.detail
    assert "grace" in caught.value.detail


def test_finished_schedule_not_warned(app, caplog):
    app.client.create_queue("misc")
    app.client.put_schedule(
        "done", "misc", source="code", interval_s=60,
        start_at=time.time() - 90, end_at=time.time() - 10,
    )
    assert app.client.get_schedule("done").state == "finished"

    @app.periodic(every=60)
    @app.task(queue="misc", name="misc.other")
    def other() -> None:
        return None

    with caplog.at_level(logging.WARNING, logger="conveyor.tasks.periodic"):
        app.sync_schedules()
    assert "done" not in caplog.text


def test_default_name_of_script_task(app):
    def f() -> None:
        return None

    f.__module__ = "__main__"
    f.__qualname__ = "f"
    app.periodic(every=60, queue="misc")(f)
    assert list(app.periodic_schedules) == ["main.f"]


def test_worker_bad_declaration_one_line(tmp_path):
    (tmp_path / "bad_periodic.py").write_text(
        "from conveyor import Conveyor\n"
        "app = Conveyor()\n"
        "@app.periodic(every=5, name='bad name!')\n"
        "def job():\n"
        "    pass\n"
    )
    worker = launch_worker(tmp_path, "bad_periodic:app", "http://127.0.0.1:9")

    assert worker.wait() == 1
    log = worker.log()
    assert "Error: module 'bad_periodic' declares an invalid task or schedule" in log
    assert "'bad name!'" in log
    assert "Traceback" not in log
