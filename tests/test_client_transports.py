"""The same SDK-level tests on both transports: Engine and HTTPClient.

The `client` fixture runs each test on an in-process Engine over a SQLite
file and on an HTTPClient talking to a real `conveyor server` subprocess.
"""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from typing import Any, Iterator

import pytest

from conveyor import errors
from conveyor.client import HTTPClient, connect
from conveyor.engine import Engine
from conveyor.models import (
    EntryResult,
    Message,
    NewMessage,
    PostResult,
    QueueInfo,
    QueueStats,
)
from http_fixtures import TOKEN, ServerProcess, auth_server, free_port, http_server

__all__ = ["auth_server", "http_server"]  # fixtures, used by name

SHARED_METHODS = (
    "create_queue",
    "update_queue",
    "get_queue",
    "list_queues",
    "delete_queue",
    "purge_queue",
    "post",
    "reserve",
    "ack",
    "nack",
    "touch",
    "redrive",
    "peek",
    "get_message",
    "get_result",
    "stats",
    "complete",
    "progress",
    "cancel",
    "get_logs",
    "close",
)


@pytest.fixture(params=["engine", "http"])
def client(request: pytest.FixtureRequest, tmp_path) -> Iterator[Any]:
    if request.param == "engine":
        opened = connect(f"sqlite:///{tmp_path}/client.db")
    else:
        server: ServerProcess = request.getfixturevalue("http_server")
        opened = connect(server.url)
    yield opened
    opened.close()


@pytest.fixture
def queue(client: Any) -> str:
    """A new queue whose retries are immediate, so tests need not wait."""
    name = "t-" + uuid.uuid4().hex[:12]
    client.create_queue(name, {"backoff_base_s": 0, "backoff_jitter": "none"})
    return name


def lease(client: Any, queue: str, *bodies: Any, **options: Any) -> list[Message]:
    """Post the bodies and reserve them all."""
    client.post(queue, [NewMessage(body) for body in bodies])
    return client.reserve(queue, max_messages=len(bodies), **options)


def entry(message: Message, **extra: Any) -> dict[str, Any]:
    return {"id": message.id, "receipt": message.receipt, **extra}


# Interface ----------------------------------------------------------------


@pytest.mark.parametrize("name", SHARED_METHODS)
def test_http_client_signature_matches_engine(name: str) -> None:
    engine_signature = inspect.signature(getattr(Engine, name))
    http_signature = inspect.signature(getattr(HTTPClient, name))
    assert list(http_signature.parameters) == list(engine_signature.parameters)
    for parameter, expected in engine_signature.parameters.items():
        assert http_signature.parameters[parameter].default == expected.default


def test_connect_picks_transport(tmp_path, http_server: ServerProcess) -> None:
    engine = connect(f"sqlite:///{tmp_path}/pick.db")
    http = connect(http_server.url)
    try:
        assert isinstance(engine, Engine)
        assert isinstance(http, HTTPClient)
    finally:
        engine.close()
        http.close()


def test_connect_unknown_scheme_raises() -> None:
    with pytest.raises(errors.ValidationError, match="ftp://x"):
        connect("ftp://x")


def test_connect_store_url_hides_password() -> None:
    with pytest.raises(errors.ValidationError) as raised:
        connect("postgresql://conveyor:s3cret@127.0.0.1:5432/test")
    assert "s3cret" not in str(raised.value)
    assert "postgresql://127.0.0.1:5432/test" in str(raised.value)


def test_connect_token_from_argument(auth_server: ServerProcess) -> None:
    with connect(auth_server.url, token=TOKEN) as client:
        assert isinstance(client.list_queues(), list)


def test_connect_token_from_environment(
    auth_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_TOKEN", TOKEN)
    with connect(auth_server.url) as client:
        assert isinstance(client.list_queues(), list)


def test_http_wrong_token_raises_unauthorized(auth_server: ServerProcess) -> None:
    with connect(auth_server.url, token="wrong") as client:
        with pytest.raises(errors.Unauthorized):
            client.list_queues()


def test_http_unreachable_raises_transport_error() -> None:
    client = connect(f"http://127.0.0.1:{free_port()}", timeout_s=5)
    try:
        with pytest.raises(errors.TransportError, match="could not reach") as caught:
            client.list_queues()
        assert caught.value.extra["url"] == client.url
    finally:
        client.close()


# Queues -------------------------------------------------------------------


def test_create_queue_returns_info(client: Any) -> None:
    name = "c-" + uuid.uuid4().hex[:12]
    info = client.create_queue(name, {"max_attempts": 4})
    assert isinstance(info, QueueInfo)
    assert info.name == name
    assert info.settings["max_attempts"] == 4


def test_create_existing_queue_raises(client: Any, queue: str) -> None:
    with pytest.raises(errors.QueueAlreadyExists):
        client.create_queue(queue)


def test_create_queue_exist_ok_returns_existing(client: Any, queue: str) -> None:
    info = client.create_queue(queue, {"max_attempts": 9}, exist_ok=True)
    assert info.settings["max_attempts"] == 5


def test_create_queue_invalid_name_raises(client: Any) -> None:
    with pytest.raises(errors.ValidationError, match="queue name"):
        client.create_queue("no spaces")


def test_create_queue_bad_setting_raises(client: Any) -> None:
    name = "b-" + uuid.uuid4().hex[:12]
    with pytest.raises(errors.ValidationError, match="max_attempts"):
        client.create_queue(name, {"max_attempts": 0})
    with pytest.raises(errors.QueueNotFound):
        client.get_queue(name)


def test_update_queue_changes_settings(client: Any, queue: str) -> None:
    info = client.update_queue(queue, {"visibility_timeout_s": 12})
    assert info.settings["visibility_timeout_s"] == 12
    assert client.get_queue(queue).settings["visibility_timeout_s"] == 12


def test_list_queues_includes_dlq(client: Any, queue: str) -> None:
    names = {info.name for info in client.list_queues()}
    assert {queue, queue + ".dlq"} <= names


def test_delete_queue_counts_messages(client: Any, queue: str) -> None:
    client.post(queue, [NewMessage(1), NewMessage(2)])
    assert client.delete_queue(queue) == 2
    with pytest.raises(errors.QueueNotFound):
        client.stats(queue)


def test_purge_queue_counts_messages(client: Any, queue: str) -> None:
    client.post(queue, [NewMessage(1), NewMessage(2), NewMessage(3)])
    assert client.purge_queue(queue) == 3
    assert client.stats(queue).ready == 0


def test_unknown_queue_raises_queue_not_found(client: Any) -> None:
    with pytest.raises(errors.QueueNotFound):
        client.post("no-such-queue", [NewMessage(1)])


# Post and reserve ---------------------------------------------------------


def test_post_returns_results(client: Any, queue: str) -> None:
    results = client.post(queue, [NewMessage("a"), NewMessage("b", dedup_id="d")])
    again = client.post(queue, [NewMessage("c", dedup_id="d")])
    assert all(isinstance(r, PostResult) for r in results)
    assert again[0].id == results[1].id
    assert again[0].deduplicated is True
    assert client.stats(queue).ready == 2


def test_reserve_round_trips_message(client: Any, queue: str) -> None:
    sent = NewMessage(
        {"text": "\u0000\U0001f680\u05e9"},
        headers={"h": "v"},
        priority=3,
        max_attempts=2,
    )
    [posted] = client.post(queue, [sent])
    [message] = client.reserve(queue, visibility_timeout_s=60)
    assert isinstance(message, Message)
    assert message.id == posted.id
    assert message.body == sent.body
    assert message.headers == {"h": "v"}
    assert message.priority == 3
    assert message.max_attempts == 2
    assert message.receive_count == 1
    assert message.receipt


def test_reserve_round_trips_bytes(client: Any, queue: str) -> None:
    data = bytes(range(256))
    [message] = lease(client, queue, data)
    assert message.body == data
    assert client.get_message(message.id).body == data


def test_reserve_orders_by_priority(client: Any, queue: str) -> None:
    client.post(queue, [NewMessage("low", priority=-1), NewMessage("high", priority=9)])
    messages = client.reserve(queue, max_messages=2)
    assert [m.body for m in messages] == ["high", "low"]


def test_reserve_wait_ends_empty(client: Any, queue: str) -> None:
    assert client.reserve(queue, wait_s=0.2) == []


def test_reserve_long_poll_gets_later_post(client: Any, queue: str) -> None:
    received: list[list[Message]] = []
    poller = threading.Thread(
        target=lambda: received.append(client.reserve(queue, wait_s=20))
    )
    poller.start()
    time.sleep(0.2)
    client.post(queue, [NewMessage("late")])
    poller.join(timeout=30)
    assert [m.body for m in received[0]] == ["late"]


def test_post_negative_delay_raises(client: Any, queue: str) -> None:
    with pytest.raises(errors.ValidationError, match="delay_s") as caught:
        client.post(queue, [NewMessage(1), NewMessage(2, delay_s=-1)])
    assert caught.value.extra["index"] == 1
    assert client.stats(queue).ready == 0


def test_post_integer_beyond_64_bits_raises(client: Any, queue: str) -> None:
    with pytest.raises(errors.ValidationError, match="64-bit"):
        client.post(queue, [NewMessage({"n": 2**70})])
    assert client.stats(queue).ready == 0


def test_ack_result_not_json_raises(client: Any, queue: str) -> None:
    [message] = lease(client, queue, 1)
    with pytest.raises(errors.ValidationError, match="64-bit"):
        client.ack(queue, [entry(message, result=2**70, result_ttl_s=60)])
    assert client.stats(queue).reserved == 1


def test_post_too_large_raises(client: Any, queue: str) -> None:
    client.update_queue(queue, {"max_message_size": 100})
    with pytest.raises(errors.PayloadTooLarge):
        client.post(queue, [NewMessage("x" * 200)])
    assert client.stats(queue).ready == 0


# Ack, nack, touch -----------------------------------------------------------


def test_ack_removes_and_stores_result(client: Any, queue: str) -> None:
    [message] = lease(client, queue, 1)
    [result] = client.ack(
        queue, [entry(message, result={"v": [1, 2]}, result_ttl_s=60)]
    )
    assert isinstance(result, EntryResult)
    assert result.ok is True
    assert result.outcome == "acked"
    assert client.stats(queue).reserved == 0
    assert client.get_result(message.id).value == {"v": [1, 2]}


def test_get_result_missing_is_none(client: Any, queue: str) -> None:
    [posted] = client.post(queue, [NewMessage(1)])
    assert client.get_result(posted.id) is None


def test_ack_stale_receipt_reports_error(client: Any, queue: str) -> None:
    [first] = lease(client, queue, 1, visibility_timeout_s=0.1)
    second: list[Message] = []
    while not second:
        second = client.reserve(queue, wait_s=2)
    [result] = client.ack(queue, [entry(first)])
    assert result.ok is False
    assert result.error == "stale-receipt"
    assert client.peek(queue)[0].state == "reserved"
    assert client.peek(queue)[0].receive_count == 2


def test_ack_unknown_message_reports_not_found(client: Any, queue: str) -> None:
    [result] = client.ack(queue, [{"id": "00000000unknown", "receipt": "r"}])
    assert result.error == "message-not-found"


def test_ack_unknown_key_raises(client: Any, queue: str) -> None:
    [message] = lease(client, queue, 1)
    with pytest.raises(errors.ValidationError, match="dead"):
        client.ack(queue, [entry(message, dead=True)])
    assert client.stats(queue).reserved == 1


def test_nack_retries(client: Any, queue: str) -> None:
    [message] = lease(client, queue, 1)
    [result] = client.nack(queue, [entry(message, error="boom")])
    assert result.outcome == "retried"
    [again] = client.reserve(queue, wait_s=5)
    assert again.id == message.id
    assert again.receive_count == 2
    assert again.last_error == "boom"


def test_nack_after_max_attempts_dead_letters(client: Any, queue: str) -> None:
    client.update_queue(queue, {"max_attempts": 1})
    [message] = lease(client, queue, 1)
    [result] = client.nack(queue, [entry(message, error="last")])
    assert result.outcome == "dead"
    [dead] = client.peek(queue + ".dlq", state="dead")
    assert dead.id == message.id
    assert dead.source_queue == queue


def test_nack_release_keeps_attempts(client: Any, queue: str) -> None:
    [message] = lease(client, queue, 1)
    [result] = client.nack(queue, [entry(message, release=True)])
    assert result.outcome == "released"
    [stored] = client.peek(queue)
    assert stored.state == "ready"
    assert stored.receive_count == 0


def test_touch_extends_lease(client: Any, queue: str) -> None:
    [message] = lease(client, queue, 1, visibility_timeout_s=5)
    [result] = client.touch(queue, [entry(message, visibility_timeout_s=600)])
    assert result.outcome == "touched"
    assert result.reserved_until > message.reserved_until + 500


def test_entries_missing_receipt_raise(client: Any, queue: str) -> None:
    [message] = lease(client, queue, 1)
    with pytest.raises(errors.ValidationError, match="receipt"):
        client.touch(queue, [{"id": message.id}])


# Reads and DLQ ----------------------------------------------------------------


def test_peek_filters_and_pages(client: Any, queue: str) -> None:
    client.post(
        queue, [NewMessage(i) for i in range(4)] + [NewMessage("d", delay_s=600)]
    )
    assert [m.body for m in client.peek(queue, limit=2, offset=1, state="ready")] == [
        1,
        2,
    ]
    assert [m.body for m in client.peek(queue, state="delayed")] == ["d"]


def test_peek_bad_state_raises(client: Any, queue: str) -> None:
    with pytest.raises(errors.ValidationError):
        client.peek(queue, state="lost")


def test_stats_counts_states(client: Any, queue: str) -> None:
    client.post(queue, [NewMessage(1), NewMessage(2), NewMessage(3, delay_s=600)])
    client.reserve(queue)
    stats = client.stats(queue)
    assert isinstance(stats, QueueStats)
    assert (stats.ready, stats.reserved, stats.delayed, stats.dead) == (1, 1, 1, 0)


def test_get_message_unknown_raises(client: Any) -> None:
    with pytest.raises(errors.MessageNotFound):
        client.get_message("00000000unknown")


def test_redrive_moves_dead_messages(client: Any, queue: str) -> None:
    messages = lease(client, queue, 1, 2, 3)
    client.nack(queue, [entry(m, dead=True) for m in messages])
    assert client.redrive(queue + ".dlq", message_ids=[messages[0].id]) == 1
    assert client.redrive(queue + ".dlq", limit=1) == 1
    assert client.redrive(queue + ".dlq") == 1
    assert client.stats(queue).ready == 3


def test_redrive_unknown_id_raises(client: Any, queue: str) -> None:
    [message] = lease(client, queue, 1)
    client.nack(queue, [entry(message, dead=True)])
    with pytest.raises(errors.MessageNotFound):
        client.redrive(queue + ".dlq", message_ids=[message.id, "zz"])
    assert client.stats(queue + ".dlq").dead == 1


def test_concurrent_posts_from_threads(client: Any, queue: str) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def post_batch(start: int) -> None:
        results = client.post(queue, [NewMessage(start + i) for i in range(50)])
        with lock:
            ids.extend(r.id for r in results)

    threads = [threading.Thread(target=post_batch, args=(n * 50,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(set(ids)) == 400
    assert client.stats(queue).ready == 400


def test_transport_error_hides_url_password() -> None:
    from conveyor.client import connect
    from conveyor.errors import TransportError

    client = connect("http://user:s3cret@127.0.0.1:1")
    with pytest.raises(TransportError) as raised:
        client.list_queues()
    assert "s3cret" not in str(raised.value)
    assert "s3cret" not in repr(client)


# Task runs ----------------------------------------------------------------


def test_run_records_same_on_both(client: Any, queue: str) -> None:
    [message] = lease(client, queue, "job")

    [completed] = client.complete(queue, [entry(message, result={"n": 1})])
    client.cancel(message.id)
    [updated] = client.progress(queue, [entry(message, progress=0.5, progress_text="half")])
    client.nack(queue, [entry(message, cancelled=True, logs="captured\n", result_ttl_s=60)])
    result = client.get_result(message.id)
    [log] = client.get_logs(message.id, attempt=1)

    assert completed.outcome == "completed"
    assert updated.cancel_requested is True
    assert result.status == "cancelled"
    assert log.text == "captured\n"
    assert log.attempt == 1


def test_cancel_errors_same_on_both(client: Any, queue: str) -> None:
    [message] = lease(client, queue, "job")
    client.ack(queue, [entry(message, result=1)])

    with pytest.raises(errors.MessageFinished):
        client.cancel(message.id)
    with pytest.raises(errors.MessageNotFound):
        client.cancel("0" * 28)
