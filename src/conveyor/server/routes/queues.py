"""Queue management: create, list, show, change, delete, purge, stats.

These are rare calls, so pydantic models validate their bodies. The
engine's queue writes block until commit, so they run in the thread pool.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from ...engine import DEFAULT_BREAKER_EVENTS, MAX_BREAKER_EVENTS, Engine
from ...engine_schedules import MAX_SCHEDULES_LISTED
from ...errors import QueueNotFound
from ..openapi import PROBLEM_RESPONSES, request_body
from ..schemas import (
    BreakerReportModel,
    CreateQueueRequest,
    ForceBreakerRequest,
    MessagesDeleted,
    QueueDeleted,
    QueueInfoModel,
    QueueList,
    QueueSettingsChanges,
    QueueStatsModel,
    UpdateQueueRequest,
)
from ..wire import json_response, read_model


def queue_routes(engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/queues", tags=["queues"], responses=PROBLEM_RESPONSES)

    @router.get("", response_model=QueueList, summary="List queues")
    async def list_queues():
        queues = await run_in_threadpool(engine.list_queues)
        return json_response({"queues": [q.to_wire() for q in queues]})

    @router.post(
        "",
        status_code=201,
        response_model=QueueInfoModel,
        summary="Create a queue and its DLQ",
        openapi_extra=request_body(CreateQueueRequest),
        description="Returns 409 if the queue exists, unless `exist_ok` is true "
        "(then 200 with the existing queue, settings unchanged).",
    )
    async def create_queue(http_request: Request):
        request = await read_model(http_request, CreateQueueRequest)
        settings = _settings_dict(request.settings)
        existed = request.exist_ok and await _queue_exists(engine, request.name)
        info = await run_in_threadpool(
            engine.create_queue, request.name, settings, request.exist_ok
        )
        return json_response(info.to_wire(), 200 if existed else 201)

    @router.get(
        "/{name}", response_model=QueueInfoModel, summary="Show a queue's settings"
    )
    async def get_queue(name: str):
        info = await run_in_threadpool(engine.get_queue, name)
        return json_response(info.to_wire())

    @router.patch(
        "/{name}",
        response_model=QueueInfoModel,
        summary="Change a queue's settings",
        description="Only the settings given change; the others keep their values.",
        openapi_extra=request_body(UpdateQueueRequest),
    )
    async def update_queue(name: str, http_request: Request):
        request = await read_model(http_request, UpdateQueueRequest)
        changes = _settings_dict(request.settings) or {}
        info = await run_in_threadpool(engine.update_queue, name, changes)
        return json_response(info.to_wire())

    @router.delete(
        "/{name}",
        response_model=QueueDeleted,
        summary="Delete a queue and its messages",
        description="The response names the schedules that still post to the queue.",
    )
    async def delete_queue(name: str):
        removed = await run_in_threadpool(engine.delete_queue, name)
        schedules = await run_in_threadpool(
            lambda: engine.list_schedules(queue=name, limit=MAX_SCHEDULES_LISTED)
        )
        return json_response({
            "queue": name,
            "messages_deleted": removed,
            "schedules": [s.name for s in schedules],
        })

    @router.post(
        "/{name}/purge",
        response_model=MessagesDeleted,
        summary="Delete every message of a queue",
    )
    async def purge_queue(name: str):
        removed = await run_in_threadpool(engine.purge_queue, name)
        return json_response({"queue": name, "messages_deleted": removed})

    @router.post(
        "/{name}/pause",
        response_model=QueueInfoModel,
        summary="Stop delivering a queue's messages",
        description="Posts are still accepted; reserves return no messages until "
        "the queue is resumed. Sets the `paused` setting.",
    )
    async def pause_queue(name: str):
        info = await run_in_threadpool(engine.pause_queue, name)
        return json_response(info.to_wire())

    @router.post(
        "/{name}/resume",
        response_model=QueueInfoModel,
        summary="Deliver a paused queue's messages again",
    )
    async def resume_queue(name: str):
        info = await run_in_threadpool(engine.resume_queue, name)
        return json_response(info.to_wire())

    @router.get(
        "/{name}/breaker",
        response_model=BreakerReportModel,
        summary="Show a queue's circuit breaker and its latest changes",
        description="`status` is null when the queue has no breaker. Events are "
        "newest first.",
    )
    async def get_breaker(
        name: str,
        limit: int = Query(DEFAULT_BREAKER_EVENTS, ge=1, le=MAX_BREAKER_EVENTS),
    ):
        report = await run_in_threadpool(engine.breaker, name, limit)
        return json_response(report.to_wire())

    @router.post(
        "/{name}/breaker",
        response_model=BreakerReportModel,
        summary="Force a queue's circuit breaker open or closed, or back to auto",
        description="A forced state stays until `auto` hands control back; a "
        "breaker forced open then probes after its cool-down. 422 when the queue "
        "has no breaker.",
        openapi_extra=request_body(ForceBreakerRequest),
    )
    async def force_breaker(name: str, http_request: Request):
        request = await read_model(http_request, ForceBreakerRequest)
        report = await run_in_threadpool(engine.force_breaker, name, request.state)
        return json_response(report.to_wire())

    @router.get(
        "/{name}/stats",
        response_model=QueueStatsModel,
        summary="Count messages per state",
    )
    async def queue_stats(name: str):
        stats = await run_in_threadpool(engine.stats, name)
        return json_response(stats.to_wire())

    return router


def _settings_dict(settings: QueueSettingsChanges | None) -> dict[str, Any] | None:
    """Return only the settings the request set, explicit nulls included."""
    if settings is None:
        return None
    return settings.model_dump(exclude_unset=True)


async def _queue_exists(engine: Engine, name: str) -> bool:
    try:
        await run_in_threadpool(engine.get_queue, name)
    except QueueNotFound:
        return False
    return True
