"""Concurrent acks of a group's steps from separate engines post the join once.

Each thread has its own Engine on the same store, as separate servers
would. On PostgreSQL the acks run in parallel transactions; on SQLite the
engines' writers take turns on the file lock.
"""

from __future__ import annotations

import threading

from conveyor.engine import Engine

GROUP_SIZE = 60
THREADS = 12


def task_step(name: str, *args) -> dict:
    return {"step": {"queue": "wf", "body": {"task": name, "args": list(args), "kwargs": {}}}}


def test_parallel_acks_post_join_once(make_engine):
    engine = make_engine()
    engine.create_queue("wf")
    spec = {"chain": [
        {"group": [task_step("part", index) for index in range(GROUP_SIZE)]},
        task_step("join"),
    ]}
    workflow = engine.start_workflow(spec)
    messages = engine.reserve("wf", 100)
    assert len(messages) == GROUP_SIZE

    engines = [make_engine() for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def ack_share(worker: int, own: Engine) -> None:
        try:
            barrier.wait()
            for message in messages[worker::THREADS]:
                entry = {"id": message.id, "receipt": message.receipt,
                         "result": message.body["args"][0]}
                assert own.ack("wf", [entry])[0].ok
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=ack_share, args=(n, engines[n])) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    joins = engine.reserve("wf", 100)
    assert len(joins) == 1
    assert joins[0].body["args"] == [list(range(GROUP_SIZE))]
    read = engine.get_workflow(workflow.id)
    assert read.steps_left == 1
    assert read.steps[-1].state == "running"


def test_parallel_keyed_starts_create_one(make_engine):
    make_engine().create_queue("wf")
    engines = [make_engine() for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    ids: list[str] = []
    errors: list[BaseException] = []

    def start(own: Engine) -> None:
        try:
            barrier.wait()
            ids.append(own.start_workflow(task_step("once"), idempotency_key="same").id)
        except BaseException as exc:  # reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(own,)) for own in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert len(ids) == THREADS
    assert len(set(ids)) == 1
    assert len(engines[0].reserve("wf", 100)) == 1
