"""The message contract, run against every store.

Time-based cases move a fake clock instead of sleeping; long polls use the
real clock.
"""

from __future__ import annotations

import threading
import time

import pytest

from conveyor.engine import Engine
from conveyor.errors import (
    MessageNotFound,
    PayloadTooLarge,
    QueueAlreadyExists,
    QueueNotFound,
    StoreUnavailable,
    ValidationError,
)
from conveyor.models import Message, NewMessage

HOUR_S = 3600.0


def post(engine: Engine, queue: str, *bodies, **options) -> list[str]:
    results = engine.post(queue, [NewMessage(body, **options) for body in bodies])
    return [r.id for r in results]


def lease(message: Message, **extra) -> dict:
    return {"id": message.id, "receipt": message.receipt, **extra}


def bodies(messages: list[Message]) -> list:
    return [m.body for m in messages]


@pytest.fixture
def queue(engine: Engine) -> str:
    engine.create_queue("jobs", {"backoff_base_s": 0.0, "max_attempts": 3})
    return "jobs"


@pytest.fixture
def fifo(engine: Engine) -> str:
    engine.create_queue("orders", {"type": "fifo", "backoff_base_s": 0.0, "max_attempts": 2})
    return "orders"


# Queues ------------------------------------------------------------------


def test_create_queue_defaults(engine):
    info = engine.create_queue("emails")
    assert info.settings["visibility_timeout_s"] == 30.0
    assert info.settings["max_attempts"] == 5
    assert info.settings["dead_letter_queue"] == "emails.dlq"
    assert engine.get_queue("emails.dlq").settings["retention_s"] > info.settings["retention_s"]


def test_create_queue_twice(engine, queue):
    with pytest.raises(QueueAlreadyExists):
        engine.create_queue(queue)
    assert engine.create_queue(queue, exist_ok=True).name == queue


@pytest.mark.parametrize(
    "settings",
    [
        {"type": "lifo"},
        {"visibility_timeout_s": -1},
        {"max_attempts": 0},
        {"max_attempts": "3"},
        {"retention_s": 1},
        {"backoff_jitter": "some"},
        {"backoff_cap_s": 0.5, "backoff_base_s": 2},
        {"colour": "blue"},
    ],
)
def test_create_queue_invalid_settings(engine, settings):
    with pytest.raises(ValidationError):
        engine.create_queue("bad", settings)
    assert [q.name for q in engine.list_queues()] == []


@pytest.mark.parametrize("name", ["", "has space", "-lead", "x" * 81, "a/b", 7])
def test_create_queue_invalid_name(engine, name):
    with pytest.raises(ValidationError):
        engine.create_queue(name)
    assert engine.list_queues() == []


def test_update_queue_at_run_time(engine, queue, clock):
    engine.update_queue(queue, {"visibility_timeout_s": 5})
    post(engine, queue, "a")
    [message] = engine.reserve(queue)
    assert message.reserved_until == pytest.approx(clock.now + 5)


def test_update_queue_invalid_leaves_settings(engine, queue):
    before = engine.get_queue(queue).settings
    with pytest.raises(ValidationError):
        engine.update_queue(queue, {"max_attempts": -2})
    assert engine.get_queue(queue).settings == before


def test_delete_queue(engine, queue):
    post(engine, queue, 1, 2)
    assert engine.delete_queue(queue) == 2
    with pytest.raises(QueueNotFound):
        engine.stats(queue)


def test_purge_queue(engine, queue):
    post(engine, queue, 1, 2, 3)
    assert engine.purge_queue(queue) == 3
    assert engine.stats(queue).ready == 0


def test_unknown_queue(engine):
    with pytest.raises(QueueNotFound):
        engine.post("nowhere", [NewMessage(1)])
    with pytest.raises(QueueNotFound):
        engine.reserve("nowhere")


# Post --------------------------------------------------------------------


def test_post_reserve_round_trip(engine, queue):
    values = [{"n": 1}, [1, 2], "text", 3.5, None, True, b"\x00\xffraw"]
    post(engine, queue, *values)
    assert bodies(engine.reserve(queue, 10)) == values


def test_post_unicode_round_trip(engine, queue):
    text = "nul\x00 emoji \U0001f680 rtl \u05e9\u05dc\u05d5\u05dd \u0627\u0644\u0633\u0644\u0627\u0645"
    post(engine, queue, {"t": text})
    assert engine.reserve(queue)[0].body == {"t": text}


def test_post_batch_limit(engine, queue):
    with pytest.raises(ValidationError):
        engine.post(queue, [NewMessage(i) for i in range(1001)])
    assert engine.stats(queue).ready == 0


def test_post_batch_all_or_nothing(engine, queue):
    engine.update_queue(queue, {"max_message_size": 100})
    batch = [NewMessage("small"), NewMessage("x" * 200)]
    with pytest.raises(PayloadTooLarge):
        engine.post(queue, batch)
    assert engine.stats(queue).ready == 0


@pytest.mark.parametrize(
    "options",
    [
        {"delay_s": -1},
        {"priority": "high"},
        {"priority": 10**6},
        {"dedup_id": ""},
        {"headers": {"k": 1}},
        {"max_attempts": 0},
        {"delay_s": 1, "not_before": time.time() + 5},
    ],
)
def test_post_invalid_options(engine, queue, options):
    with pytest.raises(ValidationError):
        engine.post(queue, [NewMessage("ok"), NewMessage("bad", **options)])
    assert engine.stats(queue).ready == 0


def test_post_body_not_json(engine, queue):
    with pytest.raises(ValidationError):
        engine.post(queue, [NewMessage({"when": object()})])
    assert engine.stats(queue).ready == 0


def test_post_max_size_ten_mib(engine, queue):
    engine.update_queue(queue, {"max_message_size": 10 * 1024 * 1024})
    payload = bytes(range(256)) * (10 * 4096 - 1)
    post(engine, queue, payload)
    assert engine.reserve(queue)[0].body == payload


def test_posts_survive_reopen(make_engine, clock):
    first = make_engine(clock=clock)
    first.create_queue("durable")
    ids = post(first, "durable", "a", "b")
    first.close()
    second = make_engine(clock=clock)
    assert [m.id for m in second.peek("durable")] == ids


def test_concurrent_posts_all_committed(engine, queue):
    def worker(n: int) -> None:
        for i in range(20):
            post(engine, queue, {"thread": n, "i": i})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.stats(queue).ready == 200


# Reserve and receipts ----------------------------------------------------


def test_reserve_new_receipt_each_time(engine, queue, clock):
    post(engine, queue, "a")
    first = engine.reserve(queue)[0]
    clock.advance(31)
    second = engine.reserve(queue)[0]
    assert second.id == first.id
    assert second.receipt != first.receipt
    assert second.receive_count == 2


def test_reserve_batch_limit(engine, queue):
    with pytest.raises(ValidationError):
        engine.reserve(queue, 101)


def test_reserved_message_hidden(engine, queue):
    post(engine, queue, "a")
    engine.reserve(queue)
    assert engine.reserve(queue) == []


def test_ack_deletes(engine, queue):
    post(engine, queue, "a")
    message = engine.reserve(queue)[0]
    [result] = engine.ack(queue, [lease(message)])
    assert result.ok
    with pytest.raises(MessageNotFound):
        engine.get_message(message.id)


def test_stale_receipt_changes_nothing(engine, queue, clock):
    post(engine, queue, "a")
    old = engine.reserve(queue)[0]
    clock.advance(31)
    new = engine.reserve(queue)[0]
    for action in (engine.ack, engine.nack, engine.touch):
        [result] = action(queue, [lease(old)])
        assert result.error == "stale-receipt"
    stored = engine.get_message(new.id)
    assert stored.receipt == new.receipt
    assert stored.state == "reserved"


def test_ack_after_lease_expired_is_stale(engine, queue, clock):
    post(engine, queue, "a")
    message = engine.reserve(queue)[0]
    clock.advance(31)
    [result] = engine.ack(queue, [lease(message)])
    assert result.error == "stale-receipt"
    assert engine.stats(queue).reserved == 1


def test_ack_unknown_message(engine, queue):
    [result] = engine.ack(queue, [{"id": "nope", "receipt": "r"}])
    assert result.error == "message-not-found"


def test_ack_batch_mixed(engine, queue):
    post(engine, queue, "a", "b")
    first, second = engine.reserve(queue, 2)
    results = engine.ack(queue, [lease(first), {"id": second.id, "receipt": "wrong"}])
    assert [r.ok for r in results] == [True, False]
    assert engine.stats(queue).reserved == 1


def test_ack_batch_repeated_id(engine, queue):
    post(engine, queue, "a")
    message = engine.reserve(queue)[0]
    results = engine.ack(queue, [lease(message), lease(message)])
    assert [r.ok for r in results] == [True, False]
    # The first entry deleted the message, as a second ack call would find.
    assert results[1].error == "message-not-found"
    assert engine.stats(queue).reserved == 0


def test_ack_large_batch_stores_results_of_acked_only(engine, queue, clock):
    ids = post(engine, queue, *range(40))
    messages = engine.reserve(queue, 40)
    entries = [lease(m, result=m.body, result_ttl_s=60) for m in messages]
    entries[7]["receipt"] = "wrong"
    entries.append({"id": "unknown", "receipt": "r"})
    results = engine.ack(queue, entries)
    assert [r.ok for r in results] == [i != 7 for i in range(40)] + [False]
    assert results[7].error == "stale-receipt"
    assert results[40].error == "message-not-found"
    assert engine.get_result(messages[3].id).value == messages[3].body
    assert engine.get_result(messages[7].id) is None
    assert engine.stats(queue).reserved == 1
    assert sorted(ids) == sorted(m.id for m in messages)


def test_touch_extends_lease(engine, queue, clock):
    post(engine, queue, "a")
    message = engine.reserve(queue)[0]
    clock.advance(20)
    [result] = engine.touch(queue, [lease(message, visibility_timeout_s=60)])
    assert result.reserved_until == pytest.approx(clock.now + 60)
    clock.advance(50)
    assert engine.ack(queue, [lease(message)])[0].ok


# Failure, retry, DLQ ----------------------------------------------------


def test_nack_retries_with_delay(engine, queue, clock):
    post(engine, queue, "a")
    message = engine.reserve(queue)[0]
    engine.nack(queue, [lease(message, delay_s=10, error="boom")])
    assert engine.reserve(queue) == []
    clock.advance(10)
    again = engine.reserve(queue)[0]
    assert again.last_error == "boom"
    assert again.receive_count == 2


def test_nack_uses_backoff(engine, clock):
    engine.create_queue("slow", {"backoff_base_s": 4, "backoff_jitter": "none"})
    post(engine, "slow", "a")
    engine.nack("slow", [lease(engine.reserve("slow")[0])])
    clock.advance(3.9)
    assert engine.reserve("slow") == []
    clock.advance(0.2)
    second = engine.reserve("slow")[0]
    engine.nack("slow", [lease(second)])
    clock.advance(7.9)
    assert engine.reserve("slow") == []
    clock.advance(0.2)
    assert len(engine.reserve("slow")) == 1


def test_lease_expiry_is_failed_attempt(engine, queue, clock):
    post(engine, queue, "a")
    for _ in range(3):
        assert len(engine.reserve(queue)) == 1
        clock.advance(31)
    engine.sweep()
    dead = engine.peek("jobs.dlq", state="dead")
    assert [m.receive_count for m in dead] == [3]
    assert "lease expired" in dead[0].last_error


def test_dead_letter_keeps_fields(engine, queue):
    [message_id] = post(engine, queue, {"k": 1})
    for attempt in range(3):
        message = engine.reserve(queue)[0]
        engine.nack(queue, [lease(message, error=f"failure {attempt}")])
    dead = engine.get_message(message_id)
    assert dead.queue == "jobs.dlq"
    assert dead.state == "dead"
    assert dead.source_queue == "jobs"
    assert dead.receive_count == 3
    assert dead.last_error == "failure 2"
    assert dead.body == {"k": 1}


def test_nack_dead_skips_attempts(engine, queue):
    [message_id] = post(engine, queue, "a")
    [result] = engine.nack(queue, [lease(engine.reserve(queue)[0], dead=True, error="bad")])
    assert result.outcome == "dead"
    assert engine.get_message(message_id).state == "dead"


def test_nack_release_keeps_attempts(engine, queue):
    post(engine, queue, "a")
    message = engine.reserve(queue)[0]
    [result] = engine.nack(queue, [lease(message, release=True)])
    assert result.outcome == "released"
    again = engine.reserve(queue)[0]
    assert again.receive_count == 1


def test_message_max_attempts_override(engine, queue):
    [message_id] = post(engine, queue, "a", max_attempts=1)
    engine.nack(queue, [lease(engine.reserve(queue)[0])])
    assert engine.get_message(message_id).state == "dead"


def test_redrive_all(engine, queue):
    ids = post(engine, queue, "a", "b")
    engine.nack(queue, [lease(m, dead=True) for m in engine.reserve(queue, 2)])
    assert engine.redrive("jobs.dlq") == 2
    redriven = engine.reserve(queue, 2)
    assert [m.id for m in redriven] == ids
    assert [m.receive_count for m in redriven] == [1, 1]


def test_redrive_by_id(engine, queue):
    first, second = post(engine, queue, "a", "b")
    engine.nack(queue, [lease(m, dead=True) for m in engine.reserve(queue, 2)])
    assert engine.redrive("jobs.dlq", [second]) == 1
    assert engine.get_message(first).state == "dead"
    assert engine.get_message(second).state == "ready"


def test_redrive_unknown_id_moves_nothing(engine, queue):
    [message_id] = post(engine, queue, "a")
    engine.nack(queue, [lease(engine.reserve(queue)[0], dead=True)])
    with pytest.raises(MessageNotFound):
        engine.redrive("jobs.dlq", [message_id, "missing"])
    assert engine.get_message(message_id).state == "dead"


# Delays, priorities ------------------------------------------------------


def test_long_delay_independent_of_lease(engine, queue, clock):
    [message_id] = post(engine, queue, "later", delay_s=2 * HOUR_S)
    clock.advance(2 * HOUR_S - 1)
    engine.sweep()
    assert engine.reserve(queue) == []
    clock.advance(1)
    delivered = engine.reserve(queue)
    assert [m.id for m in delivered] == [message_id]
    assert delivered[0].receive_count == 1


def test_not_before(engine, queue, clock):
    post(engine, queue, "at", not_before=clock.now + 60)
    assert engine.stats(queue).delayed == 1
    clock.advance(60)
    assert bodies(engine.reserve(queue)) == ["at"]


def test_default_delay(engine, clock):
    engine.create_queue("later", {"default_delay_s": 5})
    post(engine, "later", "x")
    assert engine.reserve("later") == []
    clock.advance(5)
    assert bodies(engine.reserve("later")) == ["x"]


def test_priority_order(engine, queue):
    post(engine, queue, "low1", priority=0)
    post(engine, queue, "high", priority=5)
    post(engine, queue, "low2", priority=0)
    post(engine, queue, "mid", priority=2)
    assert bodies(engine.reserve(queue, 4)) == ["high", "mid", "low1", "low2"]


# FIFO --------------------------------------------------------------------


def test_fifo_one_in_flight_per_group(engine, fifo):
    post(engine, fifo, "a1", "a2", group="a")
    post(engine, fifo, "b1", group="b")
    assert bodies(engine.reserve(fifo, 10)) == ["a1", "b1"]
    assert engine.reserve(fifo, 10) == []


def test_fifo_order_after_ack(engine, fifo):
    post(engine, fifo, "a1", "a2", "a3", group="a")
    seen = []
    while messages := engine.reserve(fifo, 10):
        seen += bodies(messages)
        engine.ack(fifo, [lease(m) for m in messages])
    assert seen == ["a1", "a2", "a3"]


def test_fifo_order_kept_under_retry(engine, fifo, clock):
    post(engine, fifo, "a1", "a2", group="a")
    head = engine.reserve(fifo)[0]
    engine.nack(fifo, [lease(head, delay_s=30)])
    assert engine.reserve(fifo, 10) == []
    clock.advance(30)
    assert bodies(engine.reserve(fifo, 10)) == ["a1"]


def test_fifo_dead_head_unblocks_group(engine, fifo):
    post(engine, fifo, "a1", "a2", group="a")
    engine.nack(fifo, [lease(engine.reserve(fifo)[0], dead=True)])
    assert bodies(engine.reserve(fifo)) == ["a2"]


def test_fifo_redrive_keeps_order(engine, fifo):
    post(engine, fifo, "a1", "a2", "a3", group="a")
    for _ in range(3):
        engine.nack(fifo, [lease(engine.reserve(fifo)[0], dead=True)])
    engine.redrive("orders.dlq")
    seen = []
    while messages := engine.reserve(fifo, 10):
        seen += bodies(messages)
        engine.ack(fifo, [lease(m) for m in messages])
    assert seen == ["a1", "a2", "a3"]


def test_fifo_requires_group(engine, fifo):
    with pytest.raises(ValidationError):
        engine.post(fifo, [NewMessage("x")])
    assert engine.stats(fifo).ready == 0


def test_standard_rejects_group(engine, queue):
    with pytest.raises(ValidationError):
        engine.post(queue, [NewMessage("x", group="g")])


# Dedup and retention -----------------------------------------------------


def test_dedup_returns_first_id(engine, queue):
    first = engine.post(queue, [NewMessage("a", dedup_id="order-7")])[0]
    second = engine.post(queue, [NewMessage("b", dedup_id="order-7")])[0]
    assert second.id == first.id
    assert second.deduplicated
    assert engine.stats(queue).ready == 1


def test_dedup_after_ack(engine, queue):
    [first] = post(engine, queue, "a", dedup_id="d")
    engine.ack(queue, [lease(engine.reserve(queue)[0])])
    assert post(engine, queue, "again", dedup_id="d") == [first]
    assert engine.stats(queue).ready == 0


def test_dedup_window_ends(engine, queue, clock):
    [first] = post(engine, queue, "a", dedup_id="d")
    clock.advance(301)
    [second] = post(engine, queue, "b", dedup_id="d")
    assert second != first


def test_retention_removes(engine, clock):
    engine.create_queue("short", {"retention_s": 60})
    post(engine, "short", "old")
    clock.advance(61)
    assert engine.sweep()["removed"] == 1
    assert engine.stats("short").ready == 0


# Reads -------------------------------------------------------------------


def test_stats_counts(engine, queue, clock):
    post(engine, queue, "r1", "r2", "r3")
    post(engine, queue, "later", delay_s=100)
    reserved = engine.reserve(queue)
    engine.nack(queue, [lease(engine.reserve(queue)[0], dead=True)])
    clock.advance(4)
    stats = engine.stats(queue)
    assert (stats.ready, stats.delayed, stats.reserved, stats.dead) == (1, 1, 1, 1)
    assert stats.oldest_ready_age_s == pytest.approx(4)
    assert reserved


def test_peek_does_not_lease(engine, queue):
    post(engine, queue, "a", "b")
    assert bodies(engine.peek(queue)) == ["a", "b"]
    assert engine.stats(queue).ready == 2


def test_result_stored_with_ttl(engine, queue, clock):
    [message_id] = post(engine, queue, "a")
    message = engine.reserve(queue)[0]
    engine.ack(queue, [lease(message, result={"x": 1}, result_ttl_s=60)])
    assert engine.get_result(message_id).value == {"x": 1}
    clock.advance(61)
    assert engine.get_result(message_id) is None


# Long polls (real clock) -------------------------------------------------


def test_long_poll_wakes_on_post(live_engine):
    live_engine.create_queue("wake")
    timer = threading.Timer(0.3, post, args=(live_engine, "wake", "hi"))
    timer.start()
    started = time.monotonic()
    messages = live_engine.reserve("wake", wait_s=10)
    assert bodies(messages) == ["hi"]
    assert time.monotonic() - started < 5


def test_long_poll_wakes_on_due_delay(live_engine):
    live_engine.create_queue("due")
    post(live_engine, "due", "soon", delay_s=0.4)
    messages = live_engine.reserve("due", wait_s=10)
    assert bodies(messages) == ["soon"]


def test_long_poll_times_out_empty(live_engine):
    live_engine.create_queue("empty")
    started = time.monotonic()
    assert live_engine.reserve("empty", wait_s=0.5) == []
    assert time.monotonic() - started >= 0.45


def test_long_poll_async(live_engine):
    import asyncio

    live_engine.create_queue("aio")

    async def scenario() -> list[Message]:
        task = asyncio.create_task(live_engine.areserve("aio", wait_s=10))
        await asyncio.sleep(0.2)
        await live_engine.apost("aio", [NewMessage("async")])
        return await task

    assert bodies(asyncio.run(scenario())) == ["async"]


def test_long_poll_wakes_on_short_retry(live_engine):
    live_engine.create_queue("retry", {"backoff_base_s": 0.0})
    post(live_engine, "retry", "again")
    leased = live_engine.reserve("retry")[0]
    timer = threading.Timer(0.2, live_engine.nack, args=("retry", [lease(leased, delay_s=0.1)]))
    timer.start()
    started = time.monotonic()
    messages = live_engine.reserve("retry", wait_s=10)
    assert bodies(messages) == ["again"]
    # The poll's own re-check comes after a second; the retry is due at 0.3 s.
    assert time.monotonic() - started < 0.9


# Results and settings that cannot change ---------------------------------


def test_ack_result_default_ttl(engine, queue, clock):
    [message_id] = post(engine, queue, "a")
    engine.ack(queue, [lease(engine.reserve(queue)[0], result=[1, 2])])
    assert engine.get_result(message_id).value == [1, 2]
    clock.advance(86_401)
    assert engine.get_result(message_id) is None


def test_ack_invalid_status(engine, queue):
    post(engine, queue, "a")
    message = engine.reserve(queue)[0]
    with pytest.raises(ValidationError):
        engine.ack(queue, [lease(message, status="weird")])
    assert engine.get_message(message.id).state == "reserved"


def test_queue_type_immutable(engine, queue, fifo):
    with pytest.raises(ValidationError):
        engine.update_queue(queue, {"type": "fifo"})
    with pytest.raises(ValidationError):
        engine.update_queue(fifo, {"type": "standard"})
    assert engine.get_queue(queue).settings["type"] == "standard"
    assert engine.get_queue(fifo).settings["type"] == "fifo"


def test_open_store_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreUnavailable):
        Engine(f"sqlite:///{blocker}/conveyor.db")


@pytest.mark.parametrize("options", [{"dedup_id": "\ud800"}, {"headers": {"k": "\udfff"}}])
def test_post_lone_surrogate(engine, queue, options):
    with pytest.raises(ValidationError):
        engine.post(queue, [NewMessage("x", **options)])
    assert engine.stats(queue).ready == 0


def test_ack_lone_surrogate_id(engine, queue):
    with pytest.raises(ValidationError):
        engine.ack(queue, [{"id": "\ud800", "receipt": "r"}])


def test_cancelled_write_keeps_writer(live_engine):
    import asyncio

    live_engine.create_queue("cancel")

    async def cancel_many() -> None:
        tasks = [
            asyncio.create_task(live_engine.apost("cancel", [NewMessage(i)])) for i in range(50)
        ]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(cancel_many())
    # The store must still commit, and every message either was stored once
    # or not at all. A store with several writer connections (PostgreSQL)
    # may commit a post that was already running after "after", so only
    # SQLite's single writer guarantees that "after" is last.
    post(live_engine, "cancel", "after")
    stored = bodies(live_engine.peek("cancel", limit=100))
    assert "after" in stored
    if live_engine.url.startswith("sqlite"):
        assert stored[-1] == "after"
    assert len(stored) == len(set(map(str, stored)))


# Redrive and FIFO edge cases ---------------------------------------------


def test_fifo_redrive_waits_for_in_flight(engine, fifo):
    post(engine, fifo, "a1", "a2", group="a")
    engine.nack(fifo, [lease(engine.reserve(fifo)[0], dead=True)])
    in_flight = engine.reserve(fifo)[0]
    engine.redrive("orders.dlq")
    assert engine.reserve(fifo, 10) == []
    engine.ack(fifo, [lease(in_flight)])
    assert bodies(engine.reserve(fifo, 10)) == ["a1"]


def test_fifo_own_dlq_unblocks_group(engine):
    engine.create_queue("self", {"type": "fifo", "dead_letter_queue": "self"})
    post(engine, "self", "a1", "a2", group="a")
    engine.nack("self", [lease(engine.reserve("self")[0], dead=True)])
    assert bodies(engine.reserve("self")) == ["a2"]


def test_redrive_all_skips_orphans(engine):
    engine.create_queue("gone", {"dead_letter_queue": "shared.dlq", "backoff_base_s": 0})
    engine.create_queue("kept", {"dead_letter_queue": "shared.dlq", "backoff_base_s": 0})
    post(engine, "gone", *range(3))
    post(engine, "kept", *range(600))
    engine.nack("gone", [lease(m, dead=True) for m in engine.reserve("gone", 3)])
    for _ in range(6):
        engine.nack("kept", [lease(m, dead=True) for m in engine.reserve("kept", 100)])
    engine.delete_queue("gone")
    assert engine.redrive("shared.dlq") == 600
    assert engine.stats("kept").ready == 600
    assert engine.stats("shared.dlq").dead == 3


def test_redrive_duplicate_ids_counted_once(engine, queue):
    [message_id] = post(engine, queue, "a")
    engine.nack(queue, [lease(engine.reserve(queue)[0], dead=True)])
    assert engine.redrive("jobs.dlq", [message_id, message_id]) == 1


def test_late_ack_after_dead_letter_is_stale(engine, queue, clock):
    post(engine, queue, "a", max_attempts=1)
    message = engine.reserve(queue)[0]
    clock.advance(31)
    engine.sweep()
    [result] = engine.ack(queue, [lease(message)])
    assert result.error == "stale-receipt"
    assert engine.get_message(message.id).state == "dead"


def test_update_checks_against_current_settings(engine):
    engine.create_queue("custom", {"backoff_base_s": 0, "backoff_cap_s": 0})
    engine.update_queue("custom", {"backoff_cap_s": 0.5})
    engine.update_queue("custom", {"backoff_cap_s": 900})
    engine.update_queue("custom", {"backoff_base_s": 400})
    settings = engine.get_queue("custom").settings
    assert (settings["backoff_base_s"], settings["backoff_cap_s"]) == (400, 900)
    with pytest.raises(ValidationError):
        engine.update_queue("custom", {"backoff_cap_s": 100})
    assert engine.get_queue("custom").settings["backoff_cap_s"] == 900


def test_header_size_counts_bytes(engine, queue):
    engine.update_queue(queue, {"max_message_size": 100})
    with pytest.raises(PayloadTooLarge):
        engine.post(queue, [NewMessage("x", headers={"h": "\U0001f680" * 30})])
    assert engine.stats(queue).ready == 0


def test_reserve_and_peek_cap_response_size(engine, queue):
    engine.update_queue(queue, {"max_message_size": 16 * 1024 * 1024})
    big = b"x" * (12 * 1024 * 1024)
    post(engine, queue, big, big, big, big)
    assert len(engine.peek(queue, limit=10)) == 2
    first = engine.reserve(queue, 10)
    assert len(first) == 2
    assert len(engine.reserve(queue, 10)) == 2


def test_redrive_ids_and_limit_rejected(engine, queue):
    [message_id] = post(engine, queue, "a")
    engine.nack(queue, [lease(engine.reserve(queue)[0], dead=True)])
    with pytest.raises(ValidationError):
        engine.redrive("jobs.dlq", [message_id], limit=1)
    assert engine.get_message(message_id).state == "dead"


@pytest.mark.parametrize("message_id", ["", "x" * 129, 42])
def test_invalid_message_id_names_limit(engine, message_id):
    with pytest.raises(ValidationError) as caught:
        engine.get_message(message_id)
    assert "expected a string of 1 to 128 characters" in str(caught.value)
