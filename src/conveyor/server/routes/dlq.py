"""Dead-letter queues: list dead messages and redrive them to their sources."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from ...engine import MAX_PEEK, Engine
from ..openapi import PROBLEM_RESPONSES, request_body
from ..schemas import MessageList, RedriveRequest, RedriveResponse
from ..wire import json_response, message_to_wire, read_model


def dlq_routes(engine: Engine) -> APIRouter:
    router = APIRouter(
        prefix="/queues/{dlq}", tags=["dlq"], responses=PROBLEM_RESPONSES
    )

    @router.get(
        "/dead",
        response_model=MessageList,
        summary="List dead messages in a DLQ",
        description="Each dead message keeps its id, receive_count, last_error "
        "and source_queue.",
    )
    async def list_dead(
        dlq: str,
        limit: int = Query(10, ge=1, le=MAX_PEEK),
        offset: int = Query(0, ge=0),
    ):
        messages = await run_in_threadpool(engine.peek, dlq, limit, offset, "dead")
        return json_response(
            {"messages": [message_to_wire(m, False) for m in messages]}
        )

    @router.post(
        "/redrive",
        response_model=RedriveResponse,
        summary="Move dead messages back to their source queues",
        description="With `message_ids`, all of them move or none (404). Without, "
        "every dead message moves, oldest first, up to `limit`. An empty body "
        "redrives everything.",
        openapi_extra=request_body(RedriveRequest, required=False),
    )
    async def redrive(dlq: str, http_request: Request):
        request = await read_model(http_request, RedriveRequest, optional=True)
        moved = await run_in_threadpool(
            engine.redrive, dlq, request.message_ids, request.limit
        )
        return json_response({"redriven": moved})

    return router
