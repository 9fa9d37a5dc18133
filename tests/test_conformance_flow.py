"""Flow control, run against every store: rate and concurrency limits.

Like test_conformance.py, time-based cases move a fake clock, and long
polls use the real clock.
"""

from __future__ import annotations

import threading

import pytest

from conveyor.engine import Engine
from conveyor.errors import QueueNotFound, ValidationError
from conveyor.models import Message, NewMessage


def post(engine: Engine, queue: str, *bodies, **options) -> list[str]:
    results = engine.post(queue, [NewMessage(body, **options) for body in bodies])
    return [r.id for r in results]


def lease(message: Message, **extra) -> dict:
    return {"id": message.id, "receipt": message.receipt, **extra}


def bodies(messages: list[Message]) -> list:
    return [m.body for m in messages]


# Rate limit ---------------------------------------------------------------


def test_rate_burst_then_refill(engine, clock):
    engine.create_queue("api", {"rate_limit_per_s": 2, "rate_burst": 3})
    post(engine, "api", *range(10))

    assert len(engine.reserve("api", 10)) == 3
    assert engine.reserve("api", 10) == []
    clock.advance(0.5)
    assert len(engine.reserve("api", 10)) == 1
    clock.advance(60)
    assert len(engine.reserve("api", 10)) == 3


def test_rate_default_burst_is_rate_rounded_up(engine):
    engine.create_queue("api", {"rate_limit_per_s": 2.5})
    post(engine, "api", *range(10))
    assert len(engine.reserve("api", 10)) == 3


def test_rate_reserve_takes_only_what_it_asks(engine, clock):
    engine.create_queue("api", {"rate_limit_per_s": 1, "rate_burst": 3})
    post(engine, "api", *range(10))
    assert len(engine.reserve("api", 2)) == 2
    assert len(engine.reserve("api", 10)) == 1


def test_rate_retries_take_tokens(engine, clock):
    engine.create_queue("api", {"rate_limit_per_s": 1, "rate_burst": 1})
    post(engine, "api", "a")
    [first] = engine.reserve("api")
    engine.nack("api", [lease(first, delay_s=0)])

    assert engine.reserve("api") == []
    clock.advance(1)
    [again] = engine.reserve("api")
    assert again.id == first.id
    assert again.receive_count == 2


def test_rate_empty_reserves_keep_tokens(engine, clock):
    engine.create_queue("api", {"rate_limit_per_s": 1, "rate_burst": 2})
    assert engine.reserve("api", 10) == []
    post(engine, "api", *range(5))
    assert len(engine.reserve("api", 10)) == 2


def test_rate_shared_by_engines(make_engine, clock):
    first = make_engine(clock=clock)
    second = make_engine(clock=clock)
    first.create_queue("api", {"rate_limit_per_s": 1, "rate_burst": 2})
    post(first, "api", *range(5))

    assert len(first.reserve("api", 1)) == 1
    assert len(second.reserve("api", 10)) == 1
    assert first.reserve("api", 10) == []


def test_rate_survives_reopen(make_engine, clock):
    first = make_engine(clock=clock)
    first.create_queue("api", {"rate_limit_per_s": 1, "rate_burst": 3})
    post(first, "api", *range(5))
    assert len(first.reserve("api", 10)) == 3
    first.close()

    second = make_engine(clock=clock)
    assert second.reserve("api", 10) == []
    clock.advance(1)
    assert len(second.reserve("api", 10)) == 1


def test_rate_change_applies_to_next_reserve(engine, clock):
    engine.create_queue("api", {"rate_limit_per_s": 1, "rate_burst": 1})
    post(engine, "api", *range(10))
    assert len(engine.reserve("api", 10)) == 1

    engine.update_queue("api", {"rate_limit_per_s": None})
    assert len(engine.reserve("api", 10)) == 9
    assert engine.get_queue("api").settings["rate_burst"] is None


def test_rate_next_change_is_next_token(engine, clock):
    engine.create_queue("api", {"rate_limit_per_s": 4, "rate_burst": 1})
    post(engine, "api", 1, 2)
    [first] = engine.reserve("api", 10)
    engine.ack("api", [lease(first)])
    assert engine.store.next_change_at("api", clock.now) == pytest.approx(clock.now + 0.25)
    clock.advance(1)
    assert engine.store.next_change_at("api", clock.now) is None


def test_long_poll_wakes_when_token_due(live_engine):
    live_engine.create_queue("api", {"rate_limit_per_s": 5, "rate_burst": 1})
    post(live_engine, "api", "a", "b")
    assert bodies(live_engine.reserve("api", 10)) == ["a"]
    assert bodies(live_engine.reserve("api", 10, wait_s=10)) == ["b"]


# Concurrency limit --------------------------------------------------------


def test_max_in_flight_caps_reserves(engine):
    engine.create_queue("db", {"max_in_flight": 2})
    post(engine, "db", *range(5))

    first = engine.reserve("db", 10)
    assert len(first) == 2
    assert engine.reserve("db", 10) == []
    engine.ack("db", [lease(first[0])])
    assert len(engine.reserve("db", 10)) == 1


def test_max_in_flight_freed_by_nack_and_expiry(engine, clock):
    engine.create_queue(
        "db", {"max_in_flight": 1, "visibility_timeout_s": 10, "backoff_base_s": 0}
    )
    post(engine, "db", "a", "b", "c")

    [a] = engine.reserve("db", 10)
    engine.nack("db", [lease(a, delay_s=60)])
    [b] = engine.reserve("db", 10)
    assert b.body == "b"
    clock.advance(11)
    [again] = engine.reserve("db", 10)
    assert again.id == b.id
    assert engine.reserve("db", 10) == []


def test_max_in_flight_shared_by_engines(make_engine, clock):
    first = make_engine(clock=clock)
    second = make_engine(clock=clock)
    first.create_queue("db", {"max_in_flight": 3})
    post(first, "db", *range(10))
    assert len(first.reserve("db", 2)) == 2
    assert len(second.reserve("db", 10)) == 1
    assert first.reserve("db", 10) == []


def test_max_in_flight_with_rate(engine, clock):
    engine.create_queue("db", {"max_in_flight": 1, "rate_limit_per_s": 10, "rate_burst": 5})
    post(engine, "db", *range(5))
    [first] = engine.reserve("db", 10)
    engine.ack("db", [lease(first)])
    assert len(engine.reserve("db", 10)) == 1


def test_long_poll_wakes_when_slot_frees(live_engine):
    live_engine.create_queue("db", {"max_in_flight": 1})
    post(live_engine, "db", "a", "b")
    [a] = live_engine.reserve("db", 10)

    timer = threading.Timer(0.2, lambda: live_engine.ack("db", [lease(a)]))
    timer.start()
    try:
        assert bodies(live_engine.reserve("db", 10, wait_s=10)) == ["b"]
    finally:
        timer.join()


def test_group_max_in_flight(engine):
    engine.create_queue("orders", {"type": "fifo", "group_max_in_flight": 2})
    post(engine, "orders", "a1", "a2", "a3", group="a")
    post(engine, "orders", "b1", "b2", group="b")

    first = engine.reserve("orders", 10)
    assert bodies(first) == ["a1", "a2", "b1", "b2"]
    assert engine.reserve("orders", 10) == []
    engine.ack("orders", [lease(first[0])])
    assert bodies(engine.reserve("orders", 10)) == ["a3"]


def test_group_max_in_flight_after_redrive(engine):
    engine.create_queue(
        "orders", {"type": "fifo", "group_max_in_flight": 2, "max_attempts": 1}
    )
    post(engine, "orders", "a1", "a2", "a3", group="a")
    [a1, a2] = engine.reserve("orders", 10)
    engine.nack("orders", [lease(a1)])
    [a3] = engine.reserve("orders", 10)
    assert a3.body == "a3"

    engine.redrive("orders.dlq")
    # a2 and a3 are in flight, so the redriven a1 waits for a slot.
    assert engine.reserve("orders", 10) == []
    engine.ack("orders", [lease(a2)])
    assert bodies(engine.reserve("orders", 10)) == ["a1"]


def test_group_max_in_flight_one_keeps_order(engine):
    engine.create_queue("orders", {"type": "fifo"})
    assert engine.get_queue("orders").settings["group_max_in_flight"] == 1
    post(engine, "orders", "a1", "a2", group="a")
    assert bodies(engine.reserve("orders", 10)) == ["a1"]


# Settings -----------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"rate_limit_per_s": 0},
        {"rate_limit_per_s": -1},
        {"rate_limit_per_s": "fast"},
        {"rate_limit_per_s": float("nan")},
        {"rate_limit_per_s": float("inf")},
        {"rate_limit_per_s": True},
        {"rate_burst": 0},
        {"rate_burst": 2.5},
        {"max_in_flight": 0},
        {"max_in_flight": "4"},
        {"group_max_in_flight": 0},
        {"group_max_in_flight": None},
        {"group_max_in_flight": 2},
    ],
)
def test_invalid_flow_settings_rejected(engine, settings):
    with pytest.raises(ValidationError) as caught:
        engine.create_queue("bad", settings)
    assert next(iter(settings)) in str(caught.value)
    assert engine.list_queues() == []


def test_invalid_flow_update_changes_nothing(engine):
    engine.create_queue("api", {"rate_limit_per_s": 5})
    before = engine.get_queue("api").settings
    with pytest.raises(ValidationError):
        engine.update_queue("api", {"rate_limit_per_s": 1, "max_in_flight": 0})
    assert engine.get_queue("api").settings == before


def test_group_max_in_flight_needs_fifo_message(engine):
    with pytest.raises(ValidationError) as caught:
        engine.create_queue("plain", {"group_max_in_flight": 3})
    assert "needs a fifo queue" in str(caught.value)


def test_rate_burst_needs_rate(engine):
    with pytest.raises(ValidationError) as caught:
        engine.create_queue("api", {"rate_burst": 5})
    assert "rate_burst=5 needs rate_limit_per_s" in str(caught.value)
    assert engine.list_queues() == []


def test_burst_without_rate_changes_nothing(engine):
    engine.create_queue("api", {"rate_limit_per_s": 5, "rate_burst": 10})
    before = engine.get_queue("api").settings
    with pytest.raises(ValidationError) as caught:
        engine.update_queue("api", {"rate_limit_per_s": None, "rate_burst": 20})
    assert "leave rate_burst unset" in str(caught.value)
    assert engine.get_queue("api").settings == before


def test_flow_settings_defaults(engine):
    settings = engine.create_queue("plain").settings
    assert settings["rate_limit_per_s"] is None
    assert settings["rate_burst"] is None
    assert settings["max_in_flight"] is None
    assert settings["group_max_in_flight"] == 1


def test_delete_queue_drops_bucket(engine, clock):
    engine.create_queue("api", {"rate_limit_per_s": 1, "rate_burst": 1})
    post(engine, "api", 1, 2)
    assert len(engine.reserve("api", 10)) == 1
    engine.delete_queue("api")

    engine.create_queue("api", {"rate_limit_per_s": 1, "rate_burst": 1})
    post(engine, "api", 3)
    assert len(engine.reserve("api", 10)) == 1


# Pause ---------------------------------------------------------------------


def test_pause_stops_delivery_keeps_posts(engine):
    engine.create_queue("jobs")
    post(engine, "jobs", "a")
    info = engine.pause_queue("jobs")
    assert info.settings["paused"] is True

    post(engine, "jobs", "b")
    assert engine.reserve("jobs", 10) == []
    stats = engine.stats("jobs")
    assert stats.paused is True
    assert stats.ready == 2

    engine.resume_queue("jobs")
    assert bodies(engine.reserve("jobs", 10)) == ["a", "b"]
    assert engine.stats("jobs").paused is False


def test_pause_lets_leases_finish(engine):
    engine.create_queue("jobs")
    post(engine, "jobs", "a")
    [a] = engine.reserve("jobs")
    engine.pause_queue("jobs")
    [result] = engine.ack("jobs", [lease(a)])
    assert result.ok


def test_pause_holds_back_retries(engine, clock):
    engine.create_queue("jobs", {"visibility_timeout_s": 5, "backoff_base_s": 0})
    post(engine, "jobs", "a")
    engine.reserve("jobs")
    engine.pause_queue("jobs")
    clock.advance(6)
    assert engine.reserve("jobs") == []
    assert engine.stats("jobs").ready == 1


def test_pause_survives_reopen(make_engine, clock):
    first = make_engine(clock=clock)
    first.create_queue("jobs")
    first.pause_queue("jobs")
    post(first, "jobs", "a")
    first.close()
    second = make_engine(clock=clock)
    assert second.reserve("jobs") == []
    assert second.stats("jobs").paused is True


def test_pause_unknown_queue(engine):
    with pytest.raises(QueueNotFound):
        engine.pause_queue("nowhere")


def test_paused_setting_must_be_boolean(engine):
    with pytest.raises(ValidationError) as caught:
        engine.create_queue("jobs", {"paused": "yes"})
    assert "paused" in str(caught.value)
    assert engine.list_queues() == []


def test_long_poll_wakes_on_resume(live_engine):
    live_engine.create_queue("jobs")
    live_engine.pause_queue("jobs")
    post(live_engine, "jobs", "a")

    timer = threading.Timer(0.2, lambda: live_engine.resume_queue("jobs"))
    timer.start()
    try:
        assert bodies(live_engine.reserve("jobs", 10, wait_s=10)) == ["a"]
    finally:
        timer.join()


def test_stats_report_tokens(engine, clock):
    engine.create_queue("api", {"rate_limit_per_s": 2, "rate_burst": 4})
    assert engine.stats("api").tokens == pytest.approx(4)
    post(engine, "api", *range(3))
    engine.reserve("api", 10)
    assert engine.stats("api").tokens == pytest.approx(1)
    clock.advance(0.5)
    assert engine.stats("api").tokens == pytest.approx(2)
    engine.create_queue("plain")
    assert engine.stats("plain").tokens is None


# Circuit breaker ------------------------------------------------------------

BREAKER = {"min_attempts": 4, "failure_ratio": 0.5, "window_s": 60, "cooldown_s": 10,
           "max_cooldown_s": 25, "probes": 2}


def breaker_queue(engine: Engine, count: int = 20, **breaker) -> str:
    settings = {"backoff_base_s": 0, "max_attempts": 100, "breaker": {**BREAKER, **breaker}}
    engine.create_queue("api", settings)
    post(engine, "api", *range(count))
    return "api"


def fail(engine: Engine, queue: str, count: int) -> None:
    messages = engine.reserve(queue, count)
    assert len(messages) == count
    results = engine.nack(queue, [lease(m, error="HTTP 500") for m in messages])
    assert all(r.ok for r in results)


def succeed(engine: Engine, queue: str, count: int) -> None:
    messages = engine.reserve(queue, count)
    assert len(messages) == count
    assert all(r.ok for r in engine.ack(queue, [lease(m) for m in messages]))


def breaker_state(engine: Engine, queue: str) -> str:
    return engine.stats(queue).breaker["state"]


def test_breaker_opens_at_ratio(engine):
    queue = breaker_queue(engine)
    succeed(engine, queue, 1)
    fail(engine, queue, 2)
    assert breaker_state(engine, queue) == "closed"
    fail(engine, queue, 1)

    status = engine.stats(queue).breaker
    assert status["state"] == "open"
    assert status["failures"] == 3
    assert status["attempts"] == 4
    assert status["failure_ratio"] == pytest.approx(0.75)
    [event] = engine.breaker(queue).events
    assert (event.from_state, event.to_state) == ("closed", "open")
    assert (event.failures, event.attempts) == (3, 4)
    assert event.cooldown_s == 10
    assert "3 of 4 attempts failed" in event.reason


def test_breaker_needs_min_attempts(engine):
    queue = breaker_queue(engine, min_attempts=5)
    fail(engine, queue, 4)
    assert breaker_state(engine, queue) == "closed"
    assert len(engine.reserve(queue, 10)) == 10


def test_breaker_stays_closed_below_ratio(engine):
    queue = breaker_queue(engine)
    succeed(engine, queue, 3)
    fail(engine, queue, 2)
    assert breaker_state(engine, queue) == "closed"
    assert engine.stats(queue).breaker["failure_ratio"] == pytest.approx(0.4)


def test_breaker_window_forgets_old_failures(engine, clock):
    queue = breaker_queue(engine)
    fail(engine, queue, 3)
    clock.advance(61)
    fail(engine, queue, 1)
    assert breaker_state(engine, queue) == "closed"
    assert engine.stats(queue).breaker["attempts"] == 1


def test_open_breaker_delivers_nothing_until_cooldown(engine, clock):
    queue = breaker_queue(engine)
    fail(engine, queue, 4)
    assert engine.reserve(queue, 10) == []
    clock.advance(9)
    assert engine.reserve(queue, 10) == []
    assert engine.stats(queue).breaker["next_probe_at"] == pytest.approx(clock.now + 1)

    clock.advance(1)
    probes = engine.reserve(queue, 10)
    assert len(probes) == 2
    assert breaker_state(engine, queue) == "half_open"
    assert engine.reserve(queue, 10) == []


def test_breaker_closes_when_probes_succeed(engine, clock):
    queue = breaker_queue(engine)
    fail(engine, queue, 4)
    clock.advance(10)
    succeed(engine, queue, 2)

    status = engine.stats(queue).breaker
    assert status["state"] == "closed"
    assert status["attempts"] == 0
    assert len(engine.reserve(queue, 10)) == 10
    transitions = [(e.from_state, e.to_state) for e in engine.breaker(queue).events]
    assert transitions == [("half_open", "closed"), ("open", "half_open"), ("closed", "open")]


def test_failed_probe_doubles_cooldown(engine, clock):
    queue = breaker_queue(engine)
    fail(engine, queue, 4)
    clock.advance(10)
    fail(engine, queue, 1)

    status = engine.stats(queue).breaker
    assert status["state"] == "open"
    assert status["cooldown_s"] == 20
    clock.advance(19)
    assert engine.reserve(queue, 10) == []
    clock.advance(1)
    fail(engine, queue, 1)
    # 40 s is above max_cooldown_s, so the cool-down stops at 25 s.
    assert engine.stats(queue).breaker["cooldown_s"] == 25
    clock.advance(25)
    assert len(engine.reserve(queue, 10)) == 2


def test_breaker_closes_when_probes_run_out_of_messages(engine, clock):
    queue = breaker_queue(engine, count=5, probes=3)
    failing = engine.reserve(queue, 4)
    engine.nack(queue, [lease(m, dead=True) for m in failing])
    clock.advance(10)
    [last] = engine.reserve(queue, 10)
    engine.ack(queue, [lease(last)])
    assert breaker_state(engine, queue) == "half_open"

    assert engine.reserve(queue, 10) == []
    assert breaker_state(engine, queue) == "closed"


def test_lease_expiry_counts_as_failure(engine, clock):
    queue = breaker_queue(engine, count=5)
    engine.update_queue(queue, {"visibility_timeout_s": 5})
    assert len(engine.reserve(queue, 4)) == 4
    clock.advance(6)
    engine.sweep()
    status = engine.stats(queue).breaker
    assert status["failures"] == 4
    assert status["state"] == "open"


def test_release_is_not_an_outcome(engine):
    queue = breaker_queue(engine)
    messages = engine.reserve(queue, 4)
    engine.nack(queue, [lease(m, release=True) for m in messages])
    assert engine.stats(queue).breaker["attempts"] == 0


def test_dead_letter_counts_as_failure(engine):
    queue = breaker_queue(engine, min_attempts=2)
    messages = engine.reserve(queue, 2)
    engine.nack(queue, [lease(m, dead=True) for m in messages])
    assert breaker_state(engine, queue) == "open"


def test_force_open_closed_auto(engine, clock):
    queue = breaker_queue(engine)
    report = engine.force_breaker(queue, "open")
    assert report.status.state == "open"
    assert report.status.mode == "open"
    clock.advance(1000)
    assert engine.reserve(queue, 10) == []

    report = engine.force_breaker(queue, "closed")
    assert (report.status.state, report.status.mode) == ("closed", "closed")
    fail(engine, queue, 10)
    assert breaker_state(engine, queue) == "closed"

    report = engine.force_breaker(queue, "auto")
    assert report.status.mode == "auto"
    fail(engine, queue, 1)
    assert breaker_state(engine, queue) == "open"
    reasons = [e.reason for e in engine.breaker(queue).events]
    assert "forced open by an operator" in reasons
    assert "forced closed by an operator" in reasons


def test_auto_after_forced_open_probes_after_cooldown(engine, clock):
    queue = breaker_queue(engine)
    engine.force_breaker(queue, "open")
    engine.force_breaker(queue, "auto")
    assert engine.reserve(queue, 10) == []
    clock.advance(10)
    assert len(engine.reserve(queue, 10)) == 2


def test_force_open_when_open_records_event(engine):
    queue = breaker_queue(engine, min_attempts=2)
    fail(engine, queue, 2)
    assert breaker_state(engine, queue) == "open"
    before = len(engine.breaker(queue).events)

    engine.force_breaker(queue, "open")
    engine.force_breaker(queue, "open")

    events = engine.breaker(queue).events
    assert len(events) == before + 1
    assert events[0].reason == "forced open by an operator while already open"
    assert (events[0].from_state, events[0].to_state) == ("open", "open")


@pytest.mark.parametrize("state", ["half_open", "OPEN", "", None])
def test_force_invalid_state(engine, state):
    queue = breaker_queue(engine)
    with pytest.raises(ValidationError):
        engine.force_breaker(queue, state)
    assert engine.breaker(queue).events == []


def test_force_without_breaker(engine):
    engine.create_queue("plain")
    with pytest.raises(ValidationError) as caught:
        engine.force_breaker("plain", "open")
    assert "has no circuit breaker" in str(caught.value)
    assert engine.breaker("plain").status is None


def test_breaker_shared_by_engines(make_engine, clock):
    first = make_engine(clock=clock)
    second = make_engine(clock=clock)
    queue = breaker_queue(first)
    fail(first, queue, 4)
    assert second.reserve(queue, 10) == []
    clock.advance(10)
    assert len(second.reserve(queue, 10)) == 2
    assert first.reserve(queue, 10) == []


def test_breaker_survives_reopen(make_engine, clock):
    first = make_engine(clock=clock)
    queue = breaker_queue(first)
    fail(first, queue, 4)
    first.close()
    second = make_engine(clock=clock)
    assert second.reserve(queue, 10) == []
    assert second.stats(queue).breaker["state"] == "open"


def test_removing_breaker_resets_state(engine):
    queue = breaker_queue(engine)
    fail(engine, queue, 4)
    engine.update_queue(queue, {"breaker": None})
    assert engine.stats(queue).breaker is None
    assert len(engine.reserve(queue, 10)) == 10

    engine.update_queue(queue, {"breaker": BREAKER})
    assert engine.stats(queue).breaker["state"] == "closed"
    assert engine.stats(queue).breaker["attempts"] == 0


def test_breaker_events_limit_and_delete(engine, clock):
    queue = breaker_queue(engine)
    fail(engine, queue, 4)
    clock.advance(10)
    succeed(engine, queue, 2)
    assert len(engine.breaker(queue, limit=2).events) == 2
    assert engine.breaker(queue, limit=2).events[0].to_state == "closed"

    engine.delete_queue(queue)
    breaker_queue(engine)
    assert engine.breaker(queue).events == []


def test_long_poll_wakes_after_cooldown(live_engine):
    live_engine.create_queue(
        "api", {"backoff_base_s": 0, "breaker": {**BREAKER, "cooldown_s": 0.3}}
    )
    post(live_engine, "api", *range(6))
    fail(live_engine, "api", 4)
    assert len(live_engine.reserve("api", 10, wait_s=10)) == 2


@pytest.mark.parametrize(
    "breaker",
    [
        5,
        "on",
        {"failure_ratio": 0},
        {"failure_ratio": 1.5},
        {"window_s": 0.5},
        {"min_attempts": 0},
        {"probes": 0},
        {"cooldown_s": 100, "max_cooldown_s": 50},
        {"redrive_on_close": "yes"},
        {"redrive_rate_per_s": 0},
        {"colour": "red"},
    ],
)
def test_invalid_breaker_rejected(engine, breaker):
    with pytest.raises(ValidationError) as caught:
        engine.create_queue("api", {"breaker": breaker})
    assert "breaker" in str(caught.value)
    assert engine.list_queues() == []


def test_breaker_defaults(engine):
    settings = engine.create_queue("api", {"breaker": {}}).settings
    assert settings["breaker"] == {
        "failure_ratio": 0.5,
        "window_s": 60.0,
        "min_attempts": 20,
        "cooldown_s": 30.0,
        "max_cooldown_s": 600.0,
        "probes": 3,
        "redrive_on_close": False,
        "redrive_rate_per_s": None,
    }


# RetryAfter (nack with retry_after_s) ----------------------------------------------


def test_retry_after_gives_attempt_back(engine, clock):
    engine.create_queue("api", {"max_attempts": 1})
    post(engine, "api", "a")
    for _ in range(3):
        [message] = engine.reserve("api")
        assert message.receive_count == 1
        [result] = engine.nack("api", [lease(message, retry_after_s=30, error="HTTP 429")])
        assert result.ok
        assert result.outcome == "retried"
        assert engine.reserve("api") == []
        clock.advance(30)

    [message] = engine.reserve("api")
    assert message.last_error == "HTTP 429"
    assert engine.stats("api").dead == 0


def test_retry_after_counts_breaker_failure(engine):
    engine.create_queue("api", {"breaker": {"min_attempts": 2, "cooldown_s": 60}})
    post(engine, "api", 1, 2)
    messages = engine.reserve("api", 2)
    engine.nack("api", [lease(m, retry_after_s=1) for m in messages])
    status = engine.stats("api").breaker
    assert status["failures"] == 2
    assert status["state"] == "open"


@pytest.mark.parametrize(
    "extra",
    [
        {"retry_after_s": 0},
        {"retry_after_s": -1},
        {"retry_after_s": 86_401},
        {"retry_after_s": float("inf")},
        {"retry_after_s": "5"},
        {"retry_after_s": True},
        {"retry_after_s": 5, "delay_s": 1},
        {"retry_after_s": 5, "delay_s": 0},
        {"retry_after_s": 5, "dead": True},
        {"retry_after_s": 5, "release": True},
    ],
)
def test_retry_after_invalid(engine, extra):
    engine.create_queue("api")
    post(engine, "api", "a")
    [message] = engine.reserve("api")
    with pytest.raises(ValidationError) as caught:
        engine.nack("api", [lease(message, **extra)])
    assert "retry_after_s" in str(caught.value)
    assert engine.stats("api").reserved == 1
    [result] = engine.ack("api", [lease(message)])
    assert result.ok


def test_retry_after_stale_receipt(engine, clock):
    engine.create_queue("api", {"visibility_timeout_s": 5})
    post(engine, "api", "a")
    [message] = engine.reserve("api")
    clock.advance(6)
    [result] = engine.nack("api", [lease(message, retry_after_s=10)])
    assert result.error == "stale-receipt"


def test_retry_after_of_cancelled_message_cancels(engine):
    engine.create_queue("api")
    post(engine, "api", "a")
    [message] = engine.reserve("api")
    assert engine.cancel(message.id).outcome == "cancel-requested"
    [result] = engine.nack("api", [lease(message, retry_after_s=30)])
    assert result.outcome == "cancelled"
    stats = engine.stats("api")
    assert stats.delayed + stats.ready + stats.reserved == 0
