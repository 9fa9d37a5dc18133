"""Workflows: start, list, show, cancel and retry them.

See docs/workflows.md for chains, groups, joins and how a step's input and
result are passed.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from ...engine import MAX_PEEK, Engine
from ..openapi import PROBLEM_RESPONSES, request_body
from ..schemas import WorkflowList, WorkflowModel, WorkflowStartRequest, WorkflowState
from ..wire import json_response, read_model


def workflow_routes(engine: Engine) -> APIRouter:
    router = APIRouter(prefix="/workflows", tags=["workflows"], responses=PROBLEM_RESPONSES)

    @router.post(
        "",
        response_model=WorkflowModel,
        status_code=201,
        summary="Start a workflow",
        description="Stores the workflow and posts its first steps in one transaction; "
        "an invalid spec or an unknown or fifo queue stores nothing. A task-call "
        "body (`task`, `args`, `kwargs`) gets the step's input prepended to its "
        "args; any other body is posted unchanged and its consumer reads the input "
        "from GET /v1/workflows/{id}. Every step message carries the headers "
        "`conveyor-workflow` (the workflow id) and `conveyor-workflow-step` (its index).",
        openapi_extra=request_body(WorkflowStartRequest),
    )
    async def start_workflow(http_request: Request):
        request = await read_model(http_request, WorkflowStartRequest)
        workflow, created = await run_in_threadpool(
            engine.start_workflow_once, request.spec, request.name, request.idempotency_key
        )
        return json_response(workflow.to_wire(), 201 if created else 200)

    @router.get("", response_model=WorkflowList, summary="List workflows, newest first")
    async def list_workflows(
        state: WorkflowState | None = Query(None, description="Only workflows in this state"),
        cursor: str | None = Query(None, description="The next_cursor of the previous page"),
        limit: int = Query(100, ge=1, le=MAX_PEEK),
    ):
        workflows, next_cursor = await run_in_threadpool(
            engine.list_workflows, state, cursor, limit
        )
        return json_response({
            "workflows": [workflow.to_wire() for workflow in workflows],
            "next_cursor": next_cursor,
        })

    @router.get(
        "/{workflow_id}", response_model=WorkflowModel, summary="Show a workflow and its steps"
    )
    async def get_workflow(workflow_id: str):
        workflow = await run_in_threadpool(engine.get_workflow, workflow_id)
        return json_response(workflow.to_wire())

    @router.post(
        "/{workflow_id}/cancel",
        response_model=WorkflowModel,
        summary="Cancel a workflow",
        description="No further step is posted. Queued step messages are removed, "
        "running ones get a cancel request, dead ones are removed from their DLQ. A finished "
        "workflow is returned unchanged.",
    )
    async def cancel_workflow(workflow_id: str):
        workflow = await run_in_threadpool(engine.cancel_workflow, workflow_id)
        return json_response(workflow.to_wire())

    @router.post(
        "/{workflow_id}/retry",
        response_model=WorkflowModel,
        summary="Post again the steps whose post failed",
        description="A step whose post failed (its queue was deleted, or its input "
        "made its message larger than the queue's max_message_size) fails the "
        "workflow. After fixing the cause, this posts every such step again in one "
        "transaction, or none, and the workflow reads as running. 409 when the "
        "workflow finished or has no such step; a dead step resumes by redrive instead.",
    )
    async def retry_workflow(workflow_id: str):
        workflow = await run_in_threadpool(engine.retry_workflow, workflow_id)
        return json_response(workflow.to_wire())

    return router
