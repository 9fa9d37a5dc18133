"""Background redrive jobs: list, show and cancel them.

POST /v1/queues/{dlq}/redrive with `background: true` starts one (see
dlq.py); every server of the store runs active jobs (redrive_runner.py).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from ...engine import MAX_PEEK, Engine
from ..openapi import PROBLEM_RESPONSES
from ..schemas import RedriveJobList, RedriveJobModel
from ..wire import json_response

JobState = Literal["active", "done", "cancelled", "failed"]


def redrive_job_routes(engine: Engine) -> APIRouter:
    router = APIRouter(
        prefix="/redrive-jobs", tags=["dlq"], responses=PROBLEM_RESPONSES
    )

    @router.get("", response_model=RedriveJobList, summary="List redrive jobs, newest first")
    async def list_jobs(
        dlq: str | None = Query(None, description="Only the jobs of this DLQ"),
        state: JobState | None = Query(None, description="Only jobs in this state"),
        limit: int = Query(100, ge=1, le=MAX_PEEK),
    ):
        jobs = await run_in_threadpool(engine.list_redrive_jobs, dlq, state, limit)
        return json_response({"jobs": [job.to_wire() for job in jobs]})

    @router.get("/{job_id}", response_model=RedriveJobModel, summary="Show a redrive job")
    async def get_job(job_id: str):
        job = await run_in_threadpool(engine.get_redrive_job, job_id)
        return json_response(job.to_wire())

    @router.post(
        "/{job_id}/cancel",
        response_model=RedriveJobModel,
        summary="Cancel a redrive job",
        description="The job stops after its current chunk; messages it moved stay "
        "moved. A finished job is returned unchanged.",
    )
    async def cancel_job(job_id: str):
        job = await run_in_threadpool(engine.cancel_redrive_job, job_id)
        return json_response(job.to_wire())

    return router
