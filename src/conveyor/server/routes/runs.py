"""Task runs: completion records and progress of leased messages, cancel
by id, and the logs stored per attempt."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from ...engine import Engine
from ...validation import MAX_ATTEMPT_NUMBER
from ..openapi import PROBLEM_RESPONSES, request_body
from ..schemas import (
    AttemptLogList,
    CancelRequest,
    CompleteRequest,
    EntryResultModel,
    EntryResults,
    ProgressRequest,
)
from ..wire import entry_results_to_wire, json_response, parse_entries, read_json_object, read_model
from .leases import ENTRY_RESULTS_NOTE


def run_routes(engine: Engine) -> APIRouter:
    router = APIRouter(tags=["runs"], responses=PROBLEM_RESPONSES)

    @router.post(
        "/queues/{name}/complete",
        response_model=EntryResults,
        summary="Record that leased messages finished, before acking them",
        description="Stores each entry's `result` as the message's completion "
        "record. If the ack is lost and the lease ends, the message is "
        "delivered again at once, even after its last attempt, with "
        "`completed_at` and `completed_result` set, so its next consumer can "
        "ack it without doing the work again." + ENTRY_RESULTS_NOTE,
        openapi_extra=request_body(CompleteRequest),
    )
    async def complete(name: str, request: Request):
        entries = parse_entries("complete", await read_json_object(request))
        return json_response(entry_results_to_wire(await engine.acomplete(name, entries)))

    @router.post(
        "/queues/{name}/progress",
        response_model=EntryResults,
        summary="Store the progress of leased messages",
        description="`progress` is a fraction from 0 to 1 and `progress_text` "
        "at most 1024 characters. A result has `cancel_requested: true` when "
        "someone asked to cancel the message." + ENTRY_RESULTS_NOTE,
        openapi_extra=request_body(ProgressRequest),
    )
    async def progress(name: str, request: Request):
        entries = parse_entries("progress", await read_json_object(request))
        return json_response(entry_results_to_wire(await engine.aprogress(name, entries)))

    @router.post(
        "/messages/{message_id}/cancel",
        response_model=EntryResultModel,
        summary="Cancel a message by id, in any queue",
        description="A delayed or ready message is deleted and its result gets "
        "status `cancelled` (outcome `cancelled`). A reserved message is "
        "flagged; its consumer learns of it at its next touch or progress "
        "update and stops it (outcome `cancel-requested`). A dead or finished "
        "message gives 409 (type message-finished), an unknown id 404.",
        openapi_extra=request_body(CancelRequest, required=False),
    )
    async def cancel(message_id: str, http_request: Request):
        request = await read_model(http_request, CancelRequest, optional=True)
        result = await run_in_threadpool(engine.cancel, message_id, request.result_ttl_s)
        return json_response(result.to_wire())

    @router.get(
        "/messages/{message_id}/logs",
        response_model=AttemptLogList,
        summary="Get the logs stored for a message's attempts",
        description="One entry per attempt that sent logs, in attempt order; "
        "`attempt` picks one. An empty list means none are stored: the id "
        "is unknown, the attempts logged nothing, or the logs expired with "
        "the message's result.",
    )
    async def get_logs(
        message_id: str,
        attempt: int | None = Query(None, ge=1, le=MAX_ATTEMPT_NUMBER),
    ):
        logs = await run_in_threadpool(engine.get_logs, message_id, attempt)
        return json_response({"id": message_id, "logs": [log.to_wire() for log in logs]})

    return router
