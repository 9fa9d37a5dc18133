"""Schedules: create, replace, list, show, change, pause, resume and delete them.

Every server of the store fires due schedules in the background
(scheduler.py); these endpoints only change what is stored.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from ...engine import Engine
from ...engine_schedules import MAX_SCHEDULES_LISTED, MAX_TICKS_LISTED
from ..openapi import PROBLEM_RESPONSES, request_body
from ..schedule_schemas import (
    CreateScheduleRequest,
    PutScheduleRequest,
    ScheduleDeleted,
    ScheduleList,
    ScheduleModel,
    ScheduleTickList,
    Source,
    UpdateScheduleRequest,
)
from ..wire import json_response, read_model


def schedule_routes(engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/schedules", tags=["schedules"], responses=PROBLEM_RESPONSES)

    @router.get("", response_model=ScheduleList, summary="List schedules by name")
    async def list_schedules(
        queue: str | None = Query(None, description="Only the schedules of this queue"),
        source: Source | None = Query(None, description="Only schedules from this source"),
        limit: int = Query(100, ge=1, le=MAX_SCHEDULES_LISTED),
        after: str | None = Query(
            None, description="Only schedules whose names sort after this one: the "
            "next_cursor of the previous page"
        ),
    ):
        schedules = await run_in_threadpool(
            engine.list_schedules, queue, source, limit, after
        )
        next_cursor = schedules[-1].name if len(schedules) == limit else None
        return json_response({
            "schedules": [s.to_wire() for s in schedules],
            "next_cursor": next_cursor,
        })

    @router.post(
        "",
        status_code=201,
        response_model=ScheduleModel,
        summary="Create a schedule",
        description="Returns 409 if a schedule of that name exists. Give `cron` "
        "(with `timezone`) or `interval_s`.",
        openapi_extra=request_body(CreateScheduleRequest),
    )
    async def create_schedule(http_request: Request):
        request = await read_model(http_request, CreateScheduleRequest)
        fields = request.model_dump(exclude_unset=True)
        name, queue = fields.pop("name"), fields.pop("queue")
        schedule = await run_in_threadpool(
            lambda: engine.create_schedule(name, queue, **fields)
        )
        return json_response(schedule.to_wire(), 201)

    @router.get("/{name}", response_model=ScheduleModel, summary="Show a schedule")
    async def get_schedule(name: str):
        schedule = await run_in_threadpool(engine.get_schedule, name)
        return json_response(schedule.to_wire())

    @router.put(
        "/{name}",
        response_model=ScheduleModel,
        summary="Create a schedule or replace its definition",
        description="Idempotent: an unchanged definition keeps its next tick and "
        "run count. A changed one keeps its run count and pause state, and its "
        "next tick is computed from now. Without start_at, an existing schedule "
        "keeps its start.",
        openapi_extra=request_body(PutScheduleRequest),
    )
    async def put_schedule(name: str, http_request: Request):
        request = await read_model(http_request, PutScheduleRequest)
        fields = request.model_dump(exclude_unset=True)
        queue = fields.pop("queue")
        schedule = await run_in_threadpool(
            lambda: engine.put_schedule(name, queue, **fields)
        )
        return json_response(schedule.to_wire())

    @router.patch(
        "/{name}",
        response_model=ScheduleModel,
        summary="Change some of a schedule's fields",
        description="Only the fields given change; null clears an optional one. "
        "Setting cron clears interval_s and the other way round. The next tick "
        "is computed from now; the run count stays.",
        openapi_extra=request_body(UpdateScheduleRequest),
    )
    async def update_schedule(name: str, http_request: Request):
        request = await read_model(http_request, UpdateScheduleRequest)
        changes = request.model_dump(exclude_unset=True)
        schedule = await run_in_threadpool(lambda: engine.update_schedule(name, **changes))
        return json_response(schedule.to_wire())

    @router.delete(
        "/{name}",
        response_model=ScheduleDeleted,
        summary="Delete a schedule",
        description="Its recorded ticks go too; messages it posted stay.",
    )
    async def delete_schedule(name: str):
        await run_in_threadpool(engine.delete_schedule, name)
        return json_response({"name": name, "deleted": True})

    @router.post("/{name}/pause", response_model=ScheduleModel, summary="Pause a schedule")
    async def pause_schedule(name: str):
        schedule = await run_in_threadpool(engine.pause_schedule, name)
        return json_response(schedule.to_wire())

    @router.post(
        "/{name}/resume",
        response_model=ScheduleModel,
        summary="Resume a paused schedule",
        description="Ticks that passed while it was paused follow its catch-up policy.",
    )
    async def resume_schedule(name: str):
        schedule = await run_in_threadpool(engine.resume_schedule, name)
        return json_response(schedule.to_wire())

    @router.get(
        "/{name}/ticks",
        response_model=ScheduleTickList,
        summary="List a schedule's recorded ticks, newest first",
        description="Ticks are kept for 7 days; each schedule's latest stays.",
    )
    async def list_ticks(name: str, limit: int = Query(100, ge=1, le=MAX_TICKS_LISTED)):
        ticks = await run_in_threadpool(engine.list_schedule_ticks, name, limit)
        return json_response({"ticks": ticks})

    return router
