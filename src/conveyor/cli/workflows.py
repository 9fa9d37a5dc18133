"""`conveyor workflows ...`: list, show and cancel workflows."""

from __future__ import annotations

import click

from ..engine import MAX_PEEK
from ..models import Workflow
from ..store.workflows import WORKFLOW_STATES
from . import main
from .common import (
    ClientOptions,
    client_options,
    format_time,
    open_client,
    option,
    print_json,
    print_line,
    print_table,
    shorten,
)
from .messages import ERROR_PREVIEW_CHARS


@main.group("workflows")
def workflows_group() -> None:
    """Inspect and cancel workflows (chains, groups and joins of steps)."""


@workflows_group.command("list")
@option(
    "--state",
    envvar="CONVEYOR_WORKFLOWS_STATE",
    type=click.Choice(WORKFLOW_STATES),
    default=None,
    show_default="every state",
    help="List only the workflows in this state.",
)
@option(
    "--limit",
    envvar="CONVEYOR_WORKFLOWS_LIMIT",
    type=click.IntRange(1, MAX_PEEK),
    default=20,
    help=f"Number of workflows to list, newest first, at most {MAX_PEEK}.",
)
@option(
    "--cursor",
    envvar="CONVEYOR_WORKFLOWS_CURSOR",
    default=None,
    show_default="the newest",
    help="Start after this cursor, which the previous page printed.",
)
@client_options
def list_workflows(
    options: ClientOptions, state: str | None, limit: int, cursor: str | None
) -> None:
    """List workflows, newest first, with their state and progress."""
    with open_client(options) as client:
        workflows, next_cursor = client.list_workflows(state=state, cursor=cursor, limit=limit)

    if options.json_output:
        print_json({
            "workflows": [workflow.to_wire() for workflow in workflows],
            "next_cursor": next_cursor,
        })
        return
    if not workflows:
        print_line("No workflows.")
        return
    print_table(
        "Workflows",
        ["ID", "Name", "State", "Done", "Created", "Finished", "Error"],
        [
            (
                workflow.id,
                workflow.name,
                workflow.state,
                f"{workflow.step_count - workflow.steps_left}/{workflow.step_count}",
                format_time(workflow.created_at),
                format_time(workflow.finished_at),
                shorten(workflow.error, ERROR_PREVIEW_CHARS),
            )
            for workflow in workflows
        ],
        wrapped=("Error",),
    )
    if next_cursor is not None:
        print_line(f"More workflows: --cursor {next_cursor}")


@workflows_group.command("show")
@click.argument("workflow_id")
@client_options
def show_workflow(options: ClientOptions, workflow_id: str) -> None:
    """Show workflow WORKFLOW_ID with one line per step."""
    with open_client(options) as client:
        workflow = client.get_workflow(workflow_id)

    if options.json_output:
        print_json(workflow.to_wire())
        return
    _print_workflow(workflow)


@workflows_group.command("cancel")
@click.argument("workflow_id")
@client_options
def cancel_workflow(options: ClientOptions, workflow_id: str) -> None:
    """Cancel workflow WORKFLOW_ID: no further step runs and queued steps are removed."""
    with open_client(options) as client:
        was_running = client.get_workflow(workflow_id).state in ("running", "failed")
        workflow = client.cancel_workflow(workflow_id)

    if options.json_output:
        print_json(workflow.to_wire())
        return
    if was_running and workflow.state == "cancelled":
        print_line(f"Cancelled workflow {workflow.id}.")
    else:
        print_line(
            f"Workflow {workflow.id} had already finished ({workflow.state}); nothing changed."
        )


def _print_workflow(workflow: Workflow) -> None:
    title = f"Workflow {workflow.id}"
    if workflow.name:
        title += f" ({workflow.name})"
    done = workflow.step_count - workflow.steps_left
    print_line(
        f"{title}: {workflow.state}, {done} of {workflow.step_count} steps succeeded, "
        f"started {format_time(workflow.created_at)}"
    )
    if workflow.error:
        print_line(f"Error: {workflow.error}")
    if workflow.state == "succeeded":
        print_line(f"Result: {shorten(repr(workflow.result), ERROR_PREVIEW_CHARS)}")
    print_table(
        "Steps",
        ["#", "Task", "Queue", "State", "After", "Message", "Attempts", "Error"],
        [
            (
                step.index,
                step.task or "-",
                step.queue,
                step.state,
                ",".join(str(parent) for parent in step.parents) or "-",
                step.message_id or "-",
                "-" if step.attempts is None else step.attempts,
                shorten(step.error, ERROR_PREVIEW_CHARS),
            )
            for step in workflow.steps or []
        ],
        wrapped=("Error",),
    )
