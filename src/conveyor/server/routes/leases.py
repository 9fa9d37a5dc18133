"""Leases: reserve (long poll), then ack, nack or touch with the receipt.

These are the hot endpoints, so they parse with orjson (see `wire.py`) and
await the engine's async twins, which wait for the group commit without
blocking the event loop.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Request

from ...engine import Engine
from ...models import Message
from ..openapi import PROBLEM_RESPONSES, request_body
from ..schemas import (
    AckRequest,
    EntryResults,
    MessageList,
    NackRequest,
    ReserveRequest,
    TouchRequest,
)
from ..wire import (
    entry_results_to_wire,
    json_response,
    message_to_wire,
    parse_entries,
    parse_reserve,
    read_json_object,
)

ENTRY_RESULTS_NOTE = (
    " Always 200 with one result per entry, in request order, even when the "
    "request has a single entry and it failed: an entry whose receipt is stale "
    "(`error: stale-receipt`) or whose message is gone (`error: "
    "message-not-found`) changed nothing, and the client decides what to do."
)


def lease_routes(engine: Engine, stopping: threading.Event) -> APIRouter:
    router = APIRouter(
        prefix="/queues/{name}", tags=["leases"], responses=PROBLEM_RESPONSES
    )

    @router.post(
        "/reserve",
        response_model=MessageList,
        summary="Lease ready messages, waiting up to wait_s for one",
        description="Returns as soon as at least one message is leased, or an "
        "empty list when the wait ends. Each message carries a new receipt.",
        openapi_extra=request_body(ReserveRequest),
    )
    async def reserve(name: str, request: Request):
        args = parse_reserve(await read_json_object(request))
        messages = await _long_poll(engine, stopping, request, name, **args)
        return json_response({"messages": [message_to_wire(m) for m in messages]})

    @router.post(
        "/ack",
        response_model=EntryResults,
        summary="Delete leased messages, optionally storing results",
        description="Each entry needs the message's current receipt."
        + ENTRY_RESULTS_NOTE,
        openapi_extra=request_body(AckRequest),
    )
    async def ack(name: str, request: Request):
        entries = parse_entries("ack", await read_json_object(request))
        return json_response(entry_results_to_wire(await engine.aack(name, entries)))

    @router.post(
        "/nack",
        response_model=EntryResults,
        summary="Fail leased messages: retry after a backoff, dead-letter or release",
        description="A failed attempt is retried after the queue's backoff (or "
        "`delay_s`) until max_attempts, then moves to the DLQ; `dead` moves it "
        "now and `release` returns it without using an attempt." + ENTRY_RESULTS_NOTE,
        openapi_extra=request_body(NackRequest),
    )
    async def nack(name: str, request: Request):
        entries = parse_entries("nack", await read_json_object(request))
        return json_response(entry_results_to_wire(await engine.anack(name, entries)))

    @router.post(
        "/touch",
        response_model=EntryResults,
        summary="Extend leases",
        description="Each lease runs `visibility_timeout_s` (default: the "
        "queue's) from now." + ENTRY_RESULTS_NOTE,
        openapi_extra=request_body(TouchRequest),
    )
    async def touch(name: str, request: Request):
        entries = parse_entries("touch", await read_json_object(request))
        return json_response(entry_results_to_wire(await engine.atouch(name, entries)))

    return router


async def _long_poll(
    engine: Engine,
    stopping: threading.Event,
    request: Request,
    queue: str,
    max_messages: Any,
    wait_s: Any,
    visibility_timeout_s: Any,
) -> list[Message]:
    """Reserve, ending the wait early once the server stops or the client leaves.

    The wait ends only between two reserves, never while a lease is being
    written, so no leased message is lost.
    """

    async def keep_waiting() -> bool:
        return not stopping.is_set() and not await request.is_disconnected()

    return await engine.areserve(
        queue, max_messages, wait_s, visibility_timeout_s, keep_waiting=keep_waiting
    )
