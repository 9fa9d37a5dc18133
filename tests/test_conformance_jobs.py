"""Background redrive jobs, run against every store.

Chunks are driven by hand through the engine's runner methods with a fake
clock; one test runs the real background runner.
"""

from __future__ import annotations

import time

import pytest

from conveyor.engine import Engine
from conveyor.errors import QueueNotFound, RedriveJobNotFound, ValidationError
from conveyor.models import Message, NewMessage

OWNER = "server-a"
LEASE_S = 30.0


def post(engine: Engine, queue: str, *bodies, **options) -> list[str]:
    results = engine.post(queue, [NewMessage(body, **options) for body in bodies])
    return [r.id for r in results]


def lease(message: Message, **extra) -> dict:
    return {"id": message.id, "receipt": message.receipt, **extra}


def kill(engine: Engine, queue: str, count: int) -> list[str]:
    """Reserve `count` messages and dead-letter them; return their ids in post order."""
    messages = engine.reserve(queue, count)
    assert len(messages) == count
    engine.nack(queue, [lease(m, dead=True) for m in messages])
    return [m.id for m in messages]


@pytest.fixture
def dead(engine: Engine) -> list[str]:
    engine.create_queue("jobs")
    post(engine, "jobs", *range(7))
    return kill(engine, "jobs", 7)


def claim(engine: Engine, owner: str = OWNER) -> list:
    return engine.claim_redrive_jobs(owner, 10, LEASE_S)


def chunk(engine: Engine, job_id: str, count: int, owner: str = OWNER):
    return engine.run_redrive_chunk(job_id, owner, count, LEASE_S)


def test_job_created_active(engine, dead, clock):
    job = engine.start_redrive_job("jobs.dlq", rate_per_s=5, limit=10, source_queue="jobs")
    assert job.state == "active"
    assert job.dlq == "jobs.dlq"
    assert (job.rate_per_s, job.limit, job.source_queue) == (5.0, 10, "jobs")
    assert (job.moved, job.cursor_seq) == (0, 0)
    assert job.created_at == clock.now
    assert engine.get_redrive_job(job.id) == job
    assert engine.list_redrive_jobs() == [job]
    assert engine.list_redrive_jobs(dlq="other") == []
    assert engine.list_redrive_jobs(state="done") == []


def test_job_moves_chunks_and_advances_cursor(engine, dead):
    job = engine.start_redrive_job("jobs.dlq")
    [claimed] = claim(engine)
    assert claimed.id == job.id

    first = chunk(engine, job.id, 3)
    assert (first.state, first.moved) == ("active", 3)
    assert engine.stats("jobs").ready == 3
    assert engine.stats("jobs.dlq").dead == 4
    second = chunk(engine, job.id, 3)
    assert second.cursor_seq > first.cursor_seq
    last = chunk(engine, job.id, 3)
    assert (last.state, last.moved) == ("done", 7)
    assert last.claimed_until is None
    assert [m.id for m in engine.peek("jobs", limit=10)] == dead
    assert engine.get_redrive_job(job.id).state == "done"


def test_job_keeps_fifo_order(engine):
    engine.create_queue("orders", {"type": "fifo", "max_attempts": 1})
    post(engine, "orders", "a1", "a2", "a3", group="a")
    for _ in range(3):
        [head] = engine.reserve("orders")
        engine.nack("orders", [lease(head)])
    job = engine.start_redrive_job("orders.dlq")
    claim(engine)
    chunk(engine, job.id, 2)
    chunk(engine, job.id, 2)

    order = []
    for _ in range(3):
        [head] = engine.reserve("orders", 10)
        order.append(head.body)
        engine.ack("orders", [lease(head)])
    assert order == ["a1", "a2", "a3"]


def test_job_limit(engine, dead):
    job = engine.start_redrive_job("jobs.dlq", limit=2)
    claim(engine)
    done = chunk(engine, job.id, 500)
    assert (done.state, done.moved) == ("done", 2)
    assert engine.stats("jobs").ready == 2


def test_job_filters_source_queue(engine):
    engine.create_queue("shared.dlq")
    for name in ("a", "b"):
        engine.create_queue(name, {"dead_letter_queue": "shared.dlq"})
        post(engine, name, f"{name}1", f"{name}2")
        kill(engine, name, 2)
    job = engine.start_redrive_job("shared.dlq", source_queue="b")
    claim(engine)
    assert chunk(engine, job.id, 500).moved == 2
    assert engine.stats("a").ready == 0
    assert [m.body for m in engine.peek("b")] == ["b1", "b2"]


def test_job_filters_dead_after(engine, clock):
    engine.create_queue("jobs")
    post(engine, "jobs", "old", "new")
    kill(engine, "jobs", 1)
    clock.advance(60)
    since = clock.now
    kill(engine, "jobs", 1)
    job = engine.start_redrive_job("jobs.dlq", dead_after=since)
    claim(engine)
    assert chunk(engine, job.id, 500).moved == 1
    assert [m.body for m in engine.peek("jobs")] == ["new"]
    assert [m.body for m in engine.peek("jobs.dlq", state="dead")] == ["old"]


def test_job_skips_messages_dead_again(engine, dead):
    job = engine.start_redrive_job("jobs.dlq")
    claim(engine)
    chunk(engine, job.id, 1)
    kill(engine, "jobs", 1)
    done = chunk(engine, job.id, 500)
    assert (done.state, done.moved) == ("done", 7)
    assert engine.stats("jobs.dlq").dead == 1


def test_cancel_stops_job(engine, dead):
    job = engine.start_redrive_job("jobs.dlq")
    claim(engine)
    chunk(engine, job.id, 2)
    cancelled = engine.cancel_redrive_job(job.id)
    assert (cancelled.state, cancelled.moved) == ("cancelled", 2)

    after = chunk(engine, job.id, 500)
    assert after.state == "cancelled"
    assert engine.stats("jobs.dlq").dead == 5
    assert engine.cancel_redrive_job(job.id).state == "cancelled"


def test_cancel_finished_job_unchanged(engine, dead):
    job = engine.start_redrive_job("jobs.dlq")
    claim(engine)
    chunk(engine, job.id, 500)
    assert engine.cancel_redrive_job(job.id).state == "done"


def test_lease_keeps_other_servers_out(engine, dead, clock):
    job = engine.start_redrive_job("jobs.dlq")
    claim(engine)
    assert claim(engine, "server-b") == []
    stolen = chunk(engine, job.id, 500, owner="server-b")
    assert stolen.moved == 0
    assert engine.stats("jobs.dlq").dead == 7

    chunk(engine, job.id, 2)
    clock.advance(LEASE_S + 1)
    [taken] = claim(engine, "server-b")
    assert taken.cursor_seq > 0
    assert chunk(engine, job.id, 500, owner="server-b").moved == 7
    assert chunk(engine, job.id, 500).moved == 7
    assert engine.stats("jobs").ready == 7


def test_release_lets_others_claim(engine, dead):
    job = engine.start_redrive_job("jobs.dlq")
    claim(engine)
    assert engine.release_redrive_jobs(OWNER) == 1
    [taken] = claim(engine, "server-b")
    assert taken.id == job.id


def test_job_resumes_after_reopen(make_engine, clock):
    first = make_engine(clock=clock)
    first.create_queue("jobs")
    ids = post(first, "jobs", *range(5))
    kill(first, "jobs", 5)
    job = first.start_redrive_job("jobs.dlq")
    first.claim_redrive_jobs(OWNER, 10, LEASE_S)
    first.run_redrive_chunk(job.id, OWNER, 2, LEASE_S)
    # Closed without giving the lease back, as a crash would leave it.
    first.close()

    second = make_engine(clock=clock)
    assert second.claim_redrive_jobs("server-b", 10, LEASE_S) == []
    clock.advance(LEASE_S + 1)
    [resumed] = second.claim_redrive_jobs("server-b", 10, LEASE_S)
    assert resumed.moved == 2
    done = second.run_redrive_chunk(job.id, "server-b", 500, LEASE_S)
    assert (done.state, done.moved) == ("done", 5)
    assert sorted(m.id for m in second.peek("jobs", limit=10)) == sorted(ids)
    assert second.stats("jobs.dlq").dead == 0


def test_job_fails_when_dlq_deleted(engine, dead):
    job = engine.start_redrive_job("jobs.dlq")
    claim(engine)
    engine.delete_queue("jobs.dlq")
    failed = chunk(engine, job.id, 500)
    assert failed.state == "failed"
    assert "no longer exists" in failed.error


def test_job_unknown_dlq(engine):
    with pytest.raises(QueueNotFound):
        engine.start_redrive_job("nowhere.dlq")
    assert engine.list_redrive_jobs() == []


def test_job_unknown_id(engine):
    with pytest.raises(RedriveJobNotFound):
        engine.get_redrive_job("nope")
    with pytest.raises(RedriveJobNotFound):
        engine.cancel_redrive_job("nope")


@pytest.mark.parametrize(
    "options",
    [
        {"rate_per_s": 0},
        {"rate_per_s": -2},
        {"rate_per_s": "fast"},
        {"limit": 0},
        {"limit": 1.5},
        {"source_queue": "has space"},
        {"dead_after": "yesterday"},
        {"dead_after": float("nan")},
    ],
)
def test_job_invalid_options(engine, dead, options):
    with pytest.raises(ValidationError) as caught:
        engine.start_redrive_job("jobs.dlq", **options)
    assert next(iter(options)) in str(caught.value)
    assert engine.list_redrive_jobs() == []


def test_list_invalid_state(engine):
    with pytest.raises(ValidationError):
        engine.list_redrive_jobs(state="running")


def test_runner_finishes_job(make_engine):
    engine = make_engine(redrive_jobs=True)
    engine.create_queue("jobs")
    post(engine, "jobs", *range(12))
    kill(engine, "jobs", 12)
    job = engine.start_redrive_job("jobs.dlq", rate_per_s=20)

    deadline = time.monotonic() + 60
    while engine.get_redrive_job(job.id).state == "active":
        assert time.monotonic() < deadline, engine.get_redrive_job(job.id)
        time.sleep(0.05)
    finished = engine.get_redrive_job(job.id)
    assert (finished.state, finished.moved) == ("done", 12)
    assert engine.stats("jobs").ready == 12


def test_runner_gives_leases_back_on_close(make_engine):
    runner = make_engine(redrive_jobs=True)
    runner.create_queue("jobs")
    post(runner, "jobs", *range(3))
    kill(runner, "jobs", 3)
    job = runner.start_redrive_job("jobs.dlq", rate_per_s=0.01)
    deadline = time.monotonic() + 60
    while runner.get_redrive_job(job.id).claimed_until is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runner.close()

    other = make_engine()
    [taken] = other.claim_redrive_jobs("server-b", 10, LEASE_S)
    assert taken.id == job.id


# Recovery: a redrive job when a breaker closes ----------------------------------

RECOVERING = {"min_attempts": 2, "cooldown_s": 10, "probes": 1,
              "redrive_on_close": True, "redrive_rate_per_s": 5}


def test_breaker_close_redrives_incident(engine, clock):
    engine.create_queue("api", {"max_attempts": 1, "breaker": RECOVERING})
    post(engine, "api", "before", "during-1", "during-2", "probe")
    kill(engine, "api", 1)
    clock.advance(120)
    kill(engine, "api", 2)
    assert engine.stats("api").breaker["state"] == "open"
    assert engine.list_redrive_jobs() == []

    clock.advance(10)
    [probe] = engine.reserve("api")
    engine.ack("api", [lease(probe)])
    assert engine.stats("api").breaker["state"] == "closed"

    [job] = engine.list_redrive_jobs()
    assert (job.dlq, job.source_queue, job.rate_per_s) == ("api.dlq", "api", 5.0)
    assert job.dead_after == clock.now - 10
    claim(engine)
    assert chunk(engine, job.id, 500).state == "done"
    assert [m.body for m in engine.peek("api")] == ["during-1", "during-2"]
    assert [m.body for m in engine.peek("api.dlq", state="dead")] == ["before"]


def test_forced_close_redrives_incident(engine, clock):
    engine.create_queue("api", {"max_attempts": 1, "breaker": RECOVERING})
    post(engine, "api", "a", "b")
    kill(engine, "api", 2)
    engine.force_breaker("api", "closed")
    [job] = engine.list_redrive_jobs()
    assert job.source_queue == "api"


def test_no_recovery_without_option(engine, clock):
    breaker = {**RECOVERING, "redrive_on_close": False}
    engine.create_queue("api", {"max_attempts": 1, "breaker": breaker})
    post(engine, "api", "a", "b", "probe")
    kill(engine, "api", 2)
    clock.advance(10)
    [probe] = engine.reserve("api")
    engine.ack("api", [lease(probe)])
    assert engine.stats("api").breaker["state"] == "closed"
    assert engine.list_redrive_jobs() == []
