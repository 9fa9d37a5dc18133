"""Task-run records on every store: idempotency keys, completion records,
cancellation, progress and attempt logs.

Like test_conformance.py, time-based cases move a fake clock instead of
sleeping.
"""

from __future__ import annotations

import pytest

from conveyor.engine import Engine
from conveyor.errors import MessageFinished, MessageNotFound, ValidationError
from conveyor.models import Message, NewMessage
from conveyor.reports import MAX_LOG_BYTES, MAX_PROGRESS_TEXT

DAY_S = 86_400.0


def post_one(engine: Engine, queue: str, body: object = "job", **options) -> str:
    return engine.post(queue, [NewMessage(body, **options)])[0].id


def lease(message: Message, **extra) -> dict:
    return {"id": message.id, "receipt": message.receipt, **extra}


def reserve_one(engine: Engine, queue: str) -> Message:
    [message] = engine.reserve(queue)
    return message


@pytest.fixture
def queue(engine: Engine) -> str:
    engine.create_queue("jobs", {"backoff_base_s": 0.0, "max_attempts": 2})
    return "jobs"


@pytest.fixture
def fifo(engine: Engine) -> str:
    engine.create_queue("orders", {"type": "fifo", "backoff_base_s": 0.0})
    return "orders"


# Idempotency keys ----------------------------------------------------------


def test_idempotency_key_returns_first_message(engine, queue):
    first = engine.post(queue, [NewMessage("a", idempotency_key="order-7")])[0]
    second = engine.post(queue, [NewMessage("b", idempotency_key="order-7")])[0]

    assert second.id == first.id
    assert second.deduplicated
    assert engine.stats(queue).ready == 1
    assert engine.get_message(first.id).idempotency_key == "order-7"
    assert engine.get_message(first.id).dedup_id is None


def test_idempotency_key_apart_from_dedup_id(engine, queue):
    keyed = post_one(engine, queue, "a", idempotency_key="same")
    deduped = post_one(engine, queue, "b", dedup_id="same")

    assert keyed != deduped
    assert engine.get_message(deduped).dedup_id == "same"
    assert engine.get_message(deduped).idempotency_key is None


def test_idempotency_key_window_ends(engine, queue, clock):
    engine.update_queue(queue, {"dedup_window_s": 60})
    first = post_one(engine, queue, idempotency_key="k")
    clock.advance(61)
    engine.sweep()

    assert post_one(engine, queue, idempotency_key="k") != first


def test_idempotency_key_with_dedup_id_rejected(engine, queue):
    with pytest.raises(ValidationError, match="both dedup_id and idempotency_key"):
        engine.post(queue, [NewMessage("a", dedup_id="d", idempotency_key="k")])
    assert engine.stats(queue).ready == 0


# Completion records ----------------------------------------------------------


def test_complete_stores_record(engine, queue, clock):
    post_one(engine, queue)
    message = reserve_one(engine, queue)

    [result] = engine.complete(queue, [lease(message, result={"total": 3})])
    stored = engine.get_message(message.id)

    assert result.ok
    assert result.outcome == "completed"
    assert stored.completed_at == clock.now
    assert stored.completed_result == {"total": 3}


def test_complete_stale_receipt_rejected(engine, queue, clock):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    clock.advance(31)
    again = reserve_one(engine, queue)

    [result] = engine.complete(queue, [lease(message, result=1)])

    assert not result.ok
    assert result.error == "stale-receipt"
    assert engine.get_message(again.id).completed_at is None


def test_completed_message_redelivered_after_last_attempt(engine, queue, clock):
    post_one(engine, queue, max_attempts=1)
    message = reserve_one(engine, queue)
    engine.complete(queue, [lease(message, result="done")])
    clock.advance(31)
    engine.sweep()

    redelivered = reserve_one(engine, queue)

    assert redelivered.id == message.id
    assert redelivered.receive_count == 2
    assert redelivered.completed_result == "done"
    assert engine.stats(queue).dead == 0


def test_complete_result_must_be_json(engine, queue):
    post_one(engine, queue)
    message = reserve_one(engine, queue)

    with pytest.raises(ValidationError):
        engine.complete(queue, [lease(message, result={"x": object()})])
    assert engine.get_message(message.id).completed_at is None


# Cancellation ----------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"delay_s": 600}])
def test_cancel_waiting_message(engine, queue, options):
    message_id = post_one(engine, queue, **options)

    result = engine.cancel(message_id)
    stored = engine.get_result(message_id)

    assert result.outcome == "cancelled"
    assert engine.stats(queue).ready + engine.stats(queue).delayed == 0
    assert stored.status == "cancelled"
    assert engine.reserve(queue) == []


def test_cancel_result_ttl(engine, queue, clock):
    kept = post_one(engine, queue)
    dropped = post_one(engine, queue)

    engine.cancel(kept, result_ttl_s=60)
    engine.cancel(dropped, result_ttl_s=0)

    assert engine.get_result(kept).expires_at == clock.now + 60
    assert engine.get_result(dropped) is None


def test_cancel_running_message_flags_it(engine, queue):
    post_one(engine, queue)
    message = reserve_one(engine, queue)

    result = engine.cancel(message.id)
    [touched] = engine.touch(queue, [lease(message)])
    [updated] = engine.progress(queue, [lease(message, progress=0.5)])

    assert result.outcome == "cancel-requested"
    assert engine.get_message(message.id).state == "reserved"
    assert engine.get_message(message.id).cancel_requested
    assert touched.cancel_requested
    assert updated.cancel_requested


def test_touch_without_cancel_has_no_flag(engine, queue):
    post_one(engine, queue)
    message = reserve_one(engine, queue)

    [touched] = engine.touch(queue, [lease(message)])

    assert touched.cancel_requested is None
    assert "cancel_requested" not in touched.to_wire()


def test_cancelled_nack_finishes_message(engine, queue):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    engine.cancel(message.id)

    [result] = engine.nack(queue, [lease(message, cancelled=True, result_ttl_s=60)])

    assert result.outcome == "cancelled"
    assert engine.get_result(message.id).status == "cancelled"
    assert engine.stats(queue).dead == 0
    with pytest.raises(MessageNotFound):
        engine.get_message(message.id)


@pytest.mark.parametrize(
    "nack", [{"delay_s": 0}, {"release": True}, {"dead": True}], ids=["retry", "release", "dead"]
)
def test_nack_after_cancel_request_cancels(engine, queue, nack):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    engine.cancel(message.id)

    [result] = engine.nack(queue, [lease(message, error="ValueError: bad", **nack)])

    assert result.outcome == "cancelled"
    assert engine.get_result(message.id).status == "cancelled"
    assert "ValueError: bad" in engine.get_result(message.id).error
    assert engine.reserve(queue) == []
    assert engine.stats(queue).dead == 0


def test_ack_after_cancel_request_succeeds(engine, queue):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    engine.cancel(message.id)

    [result] = engine.ack(queue, [lease(message, result=7)])

    assert result.outcome == "acked"
    assert engine.get_result(message.id).status == "succeeded"


def test_lease_expiry_after_cancel_request_cancels(engine, queue, clock):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    engine.cancel(message.id)
    clock.advance(31)

    engine.sweep()

    assert engine.get_result(message.id).status == "cancelled"
    assert engine.reserve(queue) == []


def test_completion_record_wins_over_cancel(engine, queue, clock):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    engine.complete(queue, [lease(message, result="charged")])
    engine.cancel(message.id)
    clock.advance(31)
    engine.sweep()

    redelivered = reserve_one(engine, queue)
    [result] = engine.ack(queue, [lease(redelivered, result=redelivered.completed_result)])

    assert redelivered.completed_result == "charged"
    assert result.outcome == "acked"
    assert engine.get_result(message.id).status == "succeeded"
    assert engine.get_result(message.id).value == "charged"


def test_cancel_expired_lease_removes_at_once(engine, queue, clock):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    clock.advance(31)

    result = engine.cancel(message.id)

    assert result.outcome == "cancelled"
    assert engine.reserve(queue) == []


def test_cancel_finished_message_rejected(engine, queue):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    engine.ack(queue, [lease(message, result=1)])

    with pytest.raises(MessageFinished, match="finished already with status 'succeeded'"):
        engine.cancel(message.id)
    assert engine.get_result(message.id).status == "succeeded"


def test_cancel_dead_message_rejected(engine, queue):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    engine.nack(queue, [lease(message, dead=True)])

    with pytest.raises(MessageFinished, match="dead in DLQ"):
        engine.cancel(message.id)
    assert engine.get_message(message.id).state == "dead"


def test_cancel_unknown_message(engine, queue):
    with pytest.raises(MessageNotFound):
        engine.cancel("0" * 28)


@pytest.mark.parametrize("ttl", [-1, "long", 10**9])
def test_cancel_bad_ttl_changes_nothing(engine, queue, ttl):
    message_id = post_one(engine, queue)

    with pytest.raises(ValidationError):
        engine.cancel(message_id, result_ttl_s=ttl)
    assert engine.get_message(message_id).state == "ready"


def test_cancel_fifo_head_frees_group(engine, fifo):
    head = post_one(engine, fifo, "first", group="g")
    post_one(engine, fifo, "second", group="g")

    engine.cancel(head)

    assert reserve_one(engine, fifo).body == "second"


# Progress ------------------------------------------------------------------------


def test_progress_stored_on_message(engine, queue, clock):
    post_one(engine, queue)
    message = reserve_one(engine, queue)

    [result] = engine.progress(queue, [lease(message, progress=0.25, progress_text="1 of 4")])
    stored = engine.get_message(message.id)

    assert result.ok
    assert result.outcome == "updated"
    assert stored.progress == 0.25
    assert stored.progress_text == "1 of 4"
    assert stored.progress_at == clock.now


def test_progress_stale_receipt_rejected(engine, queue, clock):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    clock.advance(31)
    reserve_one(engine, queue)

    [result] = engine.progress(queue, [lease(message, progress=0.9)])

    assert result.error == "stale-receipt"
    assert engine.get_message(message.id).progress is None


@pytest.mark.parametrize(
    "fields",
    [
        {"progress": 1.5},
        {"progress": -0.1},
        {"progress": float("nan")},
        {"progress": True},
        {"progress": "half"},
        {},
        {"progress": 0.5, "progress_text": "x" * (MAX_PROGRESS_TEXT + 1)},
        {"progress": 0.5, "progress_text": 5},
    ],
)
def test_progress_invalid_changes_nothing(engine, queue, fields):
    post_one(engine, queue)
    message = reserve_one(engine, queue)

    with pytest.raises(ValidationError):
        engine.progress(queue, [lease(message, progress=0.1), lease(message, **fields)])
    assert engine.get_message(message.id).progress is None


def test_ack_keeps_last_progress_in_result(engine, queue):
    post_one(engine, queue)
    message = reserve_one(engine, queue)

    engine.ack(queue, [lease(message, result=1, progress=1.0, progress_text="done")])
    stored = engine.get_result(message.id)

    assert stored.progress == 1.0
    assert stored.progress_text == "done"


# Attempt logs --------------------------------------------------------------------


def test_logs_stored_per_attempt(engine, queue):
    post_one(engine, queue)
    first = reserve_one(engine, queue)
    engine.nack(queue, [lease(first, error="boom", logs="attempt one\n")])
    second = reserve_one(engine, queue)
    engine.ack(queue, [lease(second, result=1, logs="attempt two\n")])

    logs = engine.get_logs(first.id)
    only_second = engine.get_logs(first.id, attempt=2)

    assert [(log.attempt, log.text) for log in logs] == [
        (1, "attempt one\n"),
        (2, "attempt two\n"),
    ]
    assert [log.text for log in only_second] == ["attempt two\n"]
    assert logs[0].queue == queue


def test_logs_cut_at_limit(engine, queue):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    long_text = "line of log output\n" * 10_000 + "Traceback: the final error\n"

    engine.ack(queue, [lease(message, result=1, logs=long_text)])
    [log] = engine.get_logs(message.id)

    assert len(log.text.encode()) <= MAX_LOG_BYTES
    assert log.text.startswith("line of log output\n")
    assert "[log cut at 64 KiB:" in log.text
    assert log.text.endswith("Traceback: the final error\n")


def test_logs_expire_with_result(engine, queue, clock):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    engine.ack(queue, [lease(message, result=1, result_ttl_s=60, logs="kept\n")])

    clock.advance(59)
    engine.sweep()
    before_expiry = engine.get_logs(message.id)
    clock.advance(2)
    engine.sweep()

    assert [log.text for log in before_expiry] == ["kept\n"]
    assert engine.get_logs(message.id) == []
    assert engine.get_result(message.id) is None


def test_ack_without_result_deletes_logs(engine, queue):
    post_one(engine, queue)
    first = reserve_one(engine, queue)
    engine.nack(queue, [lease(first, logs="first attempt\n")])
    second = reserve_one(engine, queue)

    engine.ack(queue, [lease(second)])

    assert engine.get_logs(first.id) == []


def test_set_wise_ack_finishes_earlier_logs(engine, queue, clock):
    ids = [post_one(engine, queue, n) for n in range(3)]
    for message in engine.reserve(queue, 3):
        engine.nack(queue, [lease(message, logs=f"failed {message.body}\n")])
    retried = engine.reserve(queue, 3)

    engine.ack(queue, [lease(m, result=m.body, result_ttl_s=60) for m in retried])
    clock.advance(61)
    engine.sweep()

    assert all(engine.get_logs(message_id) == [] for message_id in ids)


def test_dead_message_keeps_logs(engine, queue, clock):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    engine.nack(queue, [lease(message, dead=True, logs="why it died\n")])

    clock.advance(5 * DAY_S)
    engine.sweep()

    assert [log.text for log in engine.get_logs(message.id)] == ["why it died\n"]


def test_logs_not_json_string_rejected(engine, queue):
    post_one(engine, queue)
    message = reserve_one(engine, queue)

    with pytest.raises(ValidationError):
        engine.ack(queue, [lease(message, logs=["not", "text"])])
    assert engine.get_message(message.id).state == "reserved"


def test_logs_of_stale_ack_not_stored(engine, queue, clock):
    post_one(engine, queue)
    message = reserve_one(engine, queue)
    clock.advance(31)
    reserve_one(engine, queue)

    [result] = engine.ack(queue, [lease(message, logs="late\n")])

    assert result.error == "stale-receipt"
    assert engine.get_logs(message.id) == []


@pytest.mark.parametrize("attempt", [0, -1, "1"])
def test_logs_bad_attempt_rejected(engine, queue, attempt):
    with pytest.raises(ValidationError):
        engine.get_logs("0" * 28, attempt=attempt)
