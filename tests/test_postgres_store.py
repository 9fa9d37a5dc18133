"""PostgreSQL-only behaviour: schema versions, several engines on one schema.

The conformance suite runs the contract itself on PostgreSQL. These tests
cover what only a shared database can show: concurrent transactions from
several engines, wake-ups through NOTIFY, and the schema version check.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import psycopg
import pytest

from conftest import POSTGRES_URL
from conveyor.engine import Engine
from conveyor.errors import StoreUnavailable
from conveyor.models import NewMessage
from conveyor.store import postgres_sql


@pytest.fixture
def engines(postgres_url):
    """Two engines on the same schema, like two servers; closed at teardown."""
    opened = [Engine(postgres_url, sweep=False), Engine(postgres_url, sweep=False)]
    yield opened
    for engine in opened:
        engine.close()


def set_schema_version(url: str, version: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (version,))


@pytest.mark.parametrize("offset, word", [(1, "newer"), (-1, "older")])
def test_schema_version_mismatch_rejected(postgres_url, offset, word):
    Engine(postgres_url, sweep=False).close()
    set_schema_version(postgres_url, postgres_sql.SCHEMA_VERSION + offset)
    with pytest.raises(StoreUnavailable) as caught:
        Engine(postgres_url, sweep=False)
    assert word in str(caught.value)
    assert str(postgres_sql.SCHEMA_VERSION) in str(caught.value)


def test_missing_schema_rejected():
    url = f"{POSTGRES_URL}?options=-csearch_path%3Dconveyor_no_such_schema"
    with pytest.raises(StoreUnavailable) as caught:
        Engine(url, sweep=False)
    assert "search_path" in str(caught.value)


def test_unreachable_server_hides_password():
    # Port 1 on the loopback address has no server, so the connection fails.
    url = "postgresql://postgres:secret-word@127.0.0.1:1/test?connect_timeout=2"
    with pytest.raises(StoreUnavailable) as caught:
        Engine(url, sweep=False)
    assert "secret-word" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)


def test_text_with_nul_round_trips(engines):
    engine = engines[0]
    engine.create_queue("nul", {"type": "fifo"})
    [posted] = engine.post("nul", [NewMessage("x", group="g\x00", dedup_id="d\x00")])
    [message] = engine.reserve("nul")
    assert message.group == "g\x00"
    assert message.dedup_id == "d\x00"
    engine.nack("nul", [{"id": posted.id, "receipt": message.receipt, "error": "e\x00"}])
    assert engine.get_message(posted.id).last_error == "e\x00"


def test_nul_in_receipt_is_stale(engines):
    engine = engines[0]
    engine.create_queue("jobs")
    [posted] = engine.post("jobs", [NewMessage("x")])
    [result] = engine.ack("jobs", [{"id": posted.id, "receipt": "r\x00"}])
    assert result.error == "stale-receipt"


def test_long_poll_woken_by_other_engine(engines):
    waiting, posting = engines
    waiting.create_queue("wake")
    got: list = []
    poll = threading.Thread(target=lambda: got.extend(waiting.reserve("wake", wait_s=10)))
    poll.start()
    time.sleep(0.05)
    started = time.monotonic()
    posting.post("wake", [NewMessage("hello")])
    poll.join(timeout=10)
    elapsed = time.monotonic() - started
    assert [m.body for m in got] == ["hello"]
    # Without NOTIFY the poll would find the message at its own re-check,
    # about 0.95 s after the post.
    assert elapsed < 0.6


def test_concurrent_reserves_deliver_once(engines):
    engines[0].create_queue("jobs")
    for start in range(0, 600, 200):
        engines[0].post("jobs", [NewMessage(i) for i in range(start, start + 200)])
    delivered: list[int] = []
    lock = threading.Lock()

    def consume(engine: Engine) -> None:
        while True:
            messages = engine.reserve("jobs", 7)
            if not messages:
                return
            with lock:
                delivered.extend(m.body for m in messages)

    threads = [threading.Thread(target=consume, args=(e,)) for e in engines * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(delivered) == 600
    assert sorted(delivered) == list(range(600))


def test_concurrent_dedup_stores_one(engines):
    engines[0].create_queue("jobs")
    ids: list[str] = []
    lock = threading.Lock()

    def post(engine: Engine) -> None:
        for _ in range(10):
            [result] = engine.post("jobs", [NewMessage("x", dedup_id="once")])
            with lock:
                ids.append(result.id)

    threads = [threading.Thread(target=post, args=(e,)) for e in engines * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 1
    assert engines[0].stats("jobs").ready == 1


def test_fifo_order_under_concurrency(engines):
    engines[0].create_queue("orders", {"type": "fifo"})
    groups = [f"g{n}" for n in range(5)]
    per_group = 30
    stop = threading.Event()

    def produce(engine: Engine, offset: int) -> None:
        # Two producers per group would not define an order, so each
        # producer owns its groups.
        for i in range(per_group):
            batch = [NewMessage({"g": g, "i": i}, group=g) for g in groups[offset::2]]
            engine.post("orders", batch)

    seen: dict[str, list[int]] = defaultdict(list)
    in_flight: dict[str, int] = defaultdict(int)
    violations: list[str] = []
    lock = threading.Lock()

    def consume(engine: Engine) -> None:
        while not stop.is_set():
            messages = engine.reserve("orders", 3, wait_s=0.2)
            with lock:
                for message in messages:
                    in_flight[message.group] += 1
                    if in_flight[message.group] > 1:
                        violations.append(f"two in flight in {message.group}")
                    seen[message.group].append(message.body["i"])
            time.sleep(0.001)
            with lock:
                for message in messages:
                    in_flight[message.group] -= 1
            entries = [{"id": m.id, "receipt": m.receipt} for m in messages]
            if entries:
                results = engine.ack("orders", entries)
                assert all(r.ok for r in results)

    consumers = [threading.Thread(target=consume, args=(e,)) for e in engines * 3]
    producers = [
        threading.Thread(target=produce, args=(engines[n], n)) for n in range(2)
    ]
    for thread in consumers + producers:
        thread.start()
    for thread in producers:
        thread.join()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if sum(len(v) for v in seen.values()) >= len(groups) * per_group:
                break
        time.sleep(0.05)
    stop.set()
    for thread in consumers:
        thread.join()

    assert violations == []
    for group in groups:
        assert seen[group] == list(range(per_group)), group
