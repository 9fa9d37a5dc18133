"""`conveyor workflows ...`: list, show, cancel and retry workflows."""

from __future__ import annotations

from datetime import datetime

import click

from ..engine import MAX_PEEK
from ..models import Workflow, WorkflowStep
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
    escape_control,
    shorten,
)
from .messages import ERROR_PREVIEW_CHARS

NAME_PREVIEW_CHARS = 40
PARENTS_PREVIEW_CHARS = 16
# An error printed on a line of its own: long enough to read, short enough
# that a stack trace stored as the error does not fill the screen.
ERROR_LINE_CHARS = 200


@main.group("workflows")
def workflows_group() -> None:
    """Inspect, cancel and retry workflows (chains, groups and joins of steps)."""


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
        ["ID", "State", "Done", "Created", "Name"],
        [
            (
                workflow.id,
                workflow.state,
                f"{workflow.step_count - workflow.steps_left}/{workflow.step_count}",
                format_short_time(workflow.created_at),
                escape_control(shorten(workflow.name, NAME_PREVIEW_CHARS)) or "-",
            )
            for workflow in workflows
        ],
        wrapped=("Name",),
        whole=("ID",),
    )
    failed = [workflow for workflow in workflows if workflow.error]
    if failed:
        print_line("Errors:")
    for workflow in failed:
        print_line(f"  {workflow.id}: {escape_control(shorten(workflow.error, ERROR_LINE_CHARS))}")
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
    """Cancel workflow WORKFLOW_ID: no further step runs.

    Queued steps and dead steps in a DLQ are removed, and running steps get
    a cancel request.
    """
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


@workflows_group.command("retry")
@click.argument("workflow_id")
@client_options
def retry_workflow(options: ClientOptions, workflow_id: str) -> None:
    """Post again the steps of WORKFLOW_ID whose post failed, after fixing the cause."""
    with open_client(options) as client:
        workflow = client.retry_workflow(workflow_id)

    if options.json_output:
        print_json(workflow.to_wire())
        return
    print_line(f"Posted the failed steps of workflow {workflow.id} again; it is {workflow.state}.")


def _print_workflow(workflow: Workflow) -> None:
    title = f"Workflow {workflow.id}"
    if workflow.name:
        title += f" ({escape_control(workflow.name)})"
    done = workflow.step_count - workflow.steps_left
    print_line(
        f"{title}: {workflow.state}, {done} of {workflow.step_count} steps succeeded, "
        f"started {format_time(workflow.created_at)}"
    )
    if workflow.error:
        print_line(f"Error: {escape_control(shorten(workflow.error, ERROR_LINE_CHARS))}")
    if workflow.state == "succeeded":
        print_line(f"Result: {shorten(repr(workflow.result), ERROR_PREVIEW_CHARS)}")
    steps = workflow.steps or []
    print_table(
        "Steps",
        ["#", "Task", "Queue", "State", "After", "Tries"],
        [
            (
                step.index,
                escape_control(step.task) or "-",
                step.queue,
                step.state,
                shorten(format_ranges(step.parents), PARENTS_PREVIEW_CHARS) or "-",
                "-" if step.attempts is None else step.attempts,
            )
            for step in steps
        ],
        whole=("#",),
    )
    _print_step_errors(steps)


def _print_step_errors(steps: list[WorkflowStep]) -> None:
    """Print each step error on a line of its own, with the step's message id."""
    errors = [step for step in steps if step.error]
    if errors:
        print_line("Step errors:")
    for step in errors:
        message = f" (message {step.message_id})" if step.message_id else ""
        error = escape_control(shorten(step.error, ERROR_LINE_CHARS))
        print_line(f"  step {step.index}{message}: {error}")


def format_short_time(timestamp: float) -> str:
    """Format a Unix time in local time without year and seconds: `05-01 14:03`."""
    return datetime.fromtimestamp(timestamp).strftime("%m-%d %H:%M")


def format_ranges(indexes: list[int]) -> str:
    """Return sorted step indexes with runs as ranges: `0-199`, `1,3-5`."""
    parts: list[str] = []
    values = sorted(indexes)
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and values[end + 1] == values[end] + 1:
            end += 1
        if end == start:
            parts.append(str(values[start]))
        else:
            parts.append(f"{values[start]}-{values[end]}")
        start = end + 1
    return ",".join(parts)
