"""A SQLite file made before the task-run columns existed gets them on open."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import orjson

from conveyor.engine import Engine
from conveyor.settings import QueueSettings
from conveyor.store import sqlite_sql

RUN_COLUMN_NAMES = [name for name, _type in sqlite_sql.RUN_COLUMNS["messages"]]


def make_old_file(path: Path) -> None:
    """Create the tables without the run columns and store one ready message."""
    now = time.time()
    settings = QueueSettings(dead_letter_queue="jobs.dlq").to_dict()
    with sqlite3.connect(path) as conn:
        conn.executescript(sqlite_sql.SCHEMA)
        conn.execute(sqlite_sql.INSERT_QUEUE, ("jobs", orjson.dumps(settings).decode(), now, now))
        conn.execute(
            "INSERT INTO messages (id, queue, state, body, posted_at, due_at, expires_at) "
            "VALUES ('old-1', 'jobs', 'ready', ?, ?, ?, ?)",
            (orjson.dumps({"n": 1}), now, now, now + 3600),
        )


def column_names(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def test_old_file_gains_run_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_old_file(path)
    assert "cancel_requested" not in column_names(path, "messages")

    with Engine(f"sqlite:///{path}", sweep=False) as engine:
        [message] = engine.reserve("jobs")
        engine.ack("jobs", [{"id": message.id, "receipt": message.receipt,
                            "result": 1, "logs": "upgraded\n"}])
        logs = engine.get_logs(message.id)

    assert column_names(path, "messages")[-len(RUN_COLUMN_NAMES):] == RUN_COLUMN_NAMES
    assert "progress_text" in column_names(path, "results")
    assert message.body == {"n": 1}
    assert message.cancel_requested is False
    assert [log.text for log in logs] == ["upgraded\n"]


def test_reopening_adds_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "twice.db"
    make_old_file(path)

    Engine(f"sqlite:///{path}", sweep=False).close()
    columns_after_first = column_names(path, "messages")
    Engine(f"sqlite:///{path}", sweep=False).close()

    assert column_names(path, "messages") == columns_after_first


def test_old_workflow_steps_gain_attempts(tmp_path: Path) -> None:
    path = tmp_path / "steps.db"
    Engine(f"sqlite:///{path}", sweep=False).close()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE workflow_steps DROP COLUMN attempts")
    assert "attempts" not in column_names(path, "workflow_steps")

    with Engine(f"sqlite:///{path}", sweep=False) as engine:
        engine.create_queue("wf")
        spec = {"step": {"queue": "wf", "body": {"task": "a", "args": [], "kwargs": {}}}}
        workflow = engine.start_workflow(spec)
        [message] = engine.reserve("wf")
        engine.ack("wf", [{"id": message.id, "receipt": message.receipt, "result": 1}])
        step = engine.get_workflow(workflow.id).steps[0]

    assert "attempts" in column_names(path, "workflow_steps")
    assert step.attempts == 1
