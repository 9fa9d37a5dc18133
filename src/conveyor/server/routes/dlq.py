"""Dead-letter queues: list dead messages and redrive them to their sources."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from ...engine import MAX_PEEK, Engine
from ...errors import ValidationError
from ...models import RedriveJob
from ..openapi import PROBLEM_RESPONSES, request_body
from ..schemas import MessageList, RedriveJobModel, RedriveRequest, RedriveResponse
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
        responses={202: {"model": RedriveJobModel, "description": "The job started"}},
        summary="Move dead messages back to their source queues",
        description="With `message_ids`, all of them move or none (404). Without, "
        "every dead message moves, oldest first, up to `limit`. An empty body "
        "redrives everything. With `background: true` the server starts a "
        "redrive job instead (202), which moves the messages in chunks at "
        "`rate_per_s`, optionally only those from `source_queue` or "
        "dead-lettered at or after `dead_after`.",
        openapi_extra=request_body(RedriveRequest, required=False),
    )
    async def redrive(dlq: str, http_request: Request):
        request = await read_model(http_request, RedriveRequest, optional=True)
        if request.background:
            job = await run_in_threadpool(_start_job, engine, dlq, request)
            return json_response(job.to_wire(), 202)
        _check_foreground(request)
        moved = await run_in_threadpool(
            engine.redrive, dlq, request.message_ids, request.limit
        )
        return json_response({"redriven": moved})

    return router


def _start_job(engine: Engine, dlq: str, request: RedriveRequest) -> RedriveJob:
    if request.message_ids is not None:
        raise ValidationError(
            "message_ids cannot be combined with background: a redrive job moves "
            "messages by filter (limit, source_queue, dead_after); redrive ids "
            "without background"
        )
    return engine.start_redrive_job(
        dlq,
        rate_per_s=request.rate_per_s,
        limit=request.limit,
        source_queue=request.source_queue,
        dead_after=request.dead_after,
    )


def _check_foreground(request: RedriveRequest) -> None:
    background_only = ("rate_per_s", "source_queue", "dead_after")
    set_fields = [name for name in background_only if getattr(request, name) is not None]
    if set_fields:
        raise ValidationError(
            f"{set_fields[0]} needs background: true, because only a redrive job "
            "paces or filters what it moves"
        )
