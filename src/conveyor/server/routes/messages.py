"""Messages: post, peek and get, and the results of finished messages."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from ...engine import MAX_PEEK, Engine
from ...errors import NotFound
from ..openapi import PROBLEM_RESPONSES, request_body
from ..schemas import (
    MessageList,
    MessageModel,
    PostRequest,
    PostResponse,
    TaskResultModel,
)
from ..wire import json_response, message_to_wire, parse_post, read_json_object

StateFilter = Literal["delayed", "ready", "reserved", "dead"]


def message_routes(engine: Engine) -> APIRouter:
    router = APIRouter(tags=["messages"], responses=PROBLEM_RESPONSES)

    @router.post(
        "/queues/{name}/messages",
        status_code=201,
        response_model=PostResponse,
        summary="Post a batch of messages",
        description="All or nothing: if any message is invalid, none is stored. "
        "Ids come back in request order once the batch is committed.",
        openapi_extra=request_body(PostRequest),
    )
    async def post_messages(name: str, request: Request):
        messages = parse_post(await read_json_object(request))
        results = await engine.apost(name, messages)
        posted = [{"id": r.id, "deduplicated": r.deduplicated} for r in results]
        return json_response({"messages": posted}, 201)

    @router.get(
        "/queues/{name}/messages",
        response_model=MessageList,
        summary="Peek at messages without leasing them",
        description="Messages in post order; receipts are never included.",
    )
    async def peek_messages(
        name: str,
        limit: int = Query(10, ge=1, le=MAX_PEEK),
        offset: int = Query(0, ge=0),
        state: StateFilter | None = Query(None),
    ):
        messages = await run_in_threadpool(engine.peek, name, limit, offset, state)
        return json_response(
            {"messages": [message_to_wire(m, False) for m in messages]}
        )

    @router.get(
        "/messages/{message_id}",
        response_model=MessageModel,
        summary="Get one message by id, in any queue",
    )
    async def get_message(message_id: str):
        message = await run_in_threadpool(engine.get_message, message_id)
        return json_response(message_to_wire(message, False))

    @router.get(
        "/messages/{message_id}/result",
        response_model=TaskResultModel,
        summary="Get the stored result of a finished message",
        description="404 (type not-found) while the message has no result: it is "
        "not finished, was acked without a result, or its result expired.",
    )
    async def get_result(message_id: str):
        result = await run_in_threadpool(engine.get_result, message_id)
        if result is None:
            raise NotFound(
                f"no result is stored for message {message_id!r}: it is not finished, "
                "was acked without a result, or its result expired"
            )
        return json_response(result.to_wire())

    return router
