"""Wire forms on the per-message hot paths: EntryResult.to_wire, which the
server runs once per acked message, and message_from_wire, which the
worker runs once per reserved message.
"""

from __future__ import annotations

import dataclasses

import pytest

from conveyor.client.http import message_from_wire
from conveyor.models import EntryResult, Message
from conveyor.server.wire import message_to_wire

ENTRY_RESULTS = [
    EntryResult("msg_acked", True, outcome="acked"),
    EntryResult("msg_stale", False, error="stale-receipt", detail="the receipt is stale"),
    EntryResult("msg_touched", True, reserved_until=1_700_000_000.5, outcome="touched",
                cancel_requested=False),
    EntryResult("msg_cancel", True, outcome="touched", cancel_requested=True),
]


@pytest.mark.parametrize("result", ENTRY_RESULTS, ids=lambda result: result.id)
def test_entry_result_wire_matches_asdict(result: EntryResult) -> None:
    expected = {k: v for k, v in dataclasses.asdict(result).items() if v is not None}

    assert result.to_wire() == expected


def test_entry_result_wire_keeps_false() -> None:
    wire = EntryResult("msg_false", False, cancel_requested=False).to_wire()

    assert wire["ok"] is False
    assert wire["cancel_requested"] is False
    assert "error" not in wire


def make_message(body: object, **changes: object) -> Message:
    message = Message(
        id="msg_wire", queue="wire-queue", state="reserved", body=body,
        headers={"trace": "t-1"}, priority=2, group="g", dedup_id=None,
        posted_at=1_700_000_000.0, due_at=1_700_000_000.0, receive_count=2,
        max_attempts=5, last_error="ValueError: first try", source_queue=None,
        expires_at=1_700_086_400.0, reserved_until=1_700_000_030.0, receipt="r-1",
        idempotency_key="order-7", cancel_requested=True, progress=0.5,
        progress_text="half", progress_at=1_700_000_010.0,
        completed_at=1_700_000_020.0, completed_result={"total": 3},
    )
    return dataclasses.replace(message, **changes)


@pytest.mark.parametrize(
    "body",
    [{"task": "add", "args": [1, 2], "kwargs": {}}, b"\x00\x01binary", "text", None],
    ids=["task-call", "bytes", "string", "null"],
)
def test_message_round_trip(body: object) -> None:
    message = make_message(body)

    assert message_from_wire(message_to_wire(message)) == message


def test_message_null_headers_become_empty() -> None:
    wire = message_to_wire(make_message("text"))
    wire["headers"] = None

    assert message_from_wire(wire).headers == {}


def test_message_missing_optional_fields() -> None:
    wire = {"id": "msg_short", "queue": "q", "state": "ready", "body": [1], "headers": {}}

    message = message_from_wire(wire)

    assert message.body == [1]
    assert message.receipt is None
    assert message.completed_result is None
