"""`conveyor dlq ...`: list dead messages and redrive them to their source queues."""

from __future__ import annotations

from typing import Any

import click

from ..engine import MAX_PEEK
from ..models import DEAD, Message, RedriveJob
from ..store.redrive_jobs import JOB_STATES
from ..validation import MAX_ENTRY_BATCH
from ..text import plural
from . import main
from .common import (
    ClientOptions,
    age_s,
    client_options,
    format_duration_s,
    format_time,
    open_client,
    option,
    preview_body,
    print_json,
    print_line,
    print_table,
    shorten,
)
from .messages import ERROR_PREVIEW_CHARS, message_document, workflow_step_label


@main.group("dlq")
def dlq_group() -> None:
    """Inspect dead-letter queues and redrive their messages.

    Each command takes either the DLQ's name or the name of a queue that
    sends its failed messages there.
    """


def resolve_dlq(client: Any, name: str) -> str:
    """Return the DLQ that NAME means: NAME itself or its dead_letter_queue.

    NAME is taken as a DLQ when it is its own dead-letter queue (as every
    automatically created DLQ is) or when it contains dead messages. Otherwise
    the queue's `dead_letter_queue` setting names the DLQ.
    """
    info = client.get_queue(name)
    dlq = info.settings.get("dead_letter_queue")
    if dlq is None or dlq == name:
        return name
    if client.peek(name, limit=1, offset=0, state=DEAD):
        return name
    return dlq


def _title(dlq: str, name: str) -> str:
    return f"DLQ {dlq}" if dlq == name else f"DLQ {dlq} (of queue {name})"


@dlq_group.command("list")
@click.argument("queue_or_dlq")
@option(
    "--limit",
    envvar="CONVEYOR_DLQ_LIMIT",
    type=click.IntRange(1, MAX_PEEK),
    default=20,
    help=f"Number of dead messages to show, oldest first, at most {MAX_PEEK}.",
)
@option(
    "--offset",
    envvar="CONVEYOR_DLQ_OFFSET",
    type=click.IntRange(0),
    default=0,
    help="Number of dead messages to skip, oldest first.",
)
@client_options
def list_dead(
    options: ClientOptions, queue_or_dlq: str, limit: int, offset: int
) -> None:
    """Show the dead messages of a DLQ without leasing them."""
    with open_client(options) as client:
        dlq = resolve_dlq(client, queue_or_dlq)
        messages = client.peek(dlq, limit=limit, offset=offset, state=DEAD)

    if options.json_output:
        print_json({"dlq": dlq, "messages": [message_document(m) for m in messages]})
        return
    if not messages:
        print_line(f"No dead messages in DLQ {dlq}.")
        return
    print_table(
        _title(dlq, queue_or_dlq),
        ["ID", "Source queue", "Receives", "Age", "Last error", "Body"],
        [
            (
                m.id,
                m.source_queue,
                m.receive_count,
                format_duration_s(age_s(m.posted_at)),
                shorten(m.last_error, ERROR_PREVIEW_CHARS),
                preview_body(m.body),
            )
            for m in messages
        ],
        wrapped=("Last error", "Body"),
    )
    _print_workflow_steps(messages)


def _print_workflow_steps(messages: list[Message]) -> None:
    """Name the workflow of each dead message that is a workflow step.

    Redriving such a message resumes its workflow; cancelling the workflow
    removes it from the DLQ instead.
    """
    steps = [(m.id, workflow_step_label(m)) for m in messages]
    steps = [(message_id, label) for message_id, label in steps if label is not None]
    if steps:
        print_line("Workflow steps:")
    for message_id, label in steps:
        print_line(f"  {message_id}: {label}")


@dlq_group.command("redrive")
@click.argument("queue_or_dlq")
@option(
    "--id",
    "message_ids",
    envvar="CONVEYOR_REDRIVE_ID",
    multiple=True,
    show_default="every dead message",
    help=f"Id of a dead message to redrive; repeat for more, up to {MAX_ENTRY_BATCH}. "
    "All of them move or none. The environment twin takes space-separated ids.",
)
@option(
    "--limit",
    envvar="CONVEYOR_REDRIVE_LIMIT",
    type=click.IntRange(1),
    default=None,
    show_default="no limit",
    help="Redrive at most this many dead messages, oldest first; not with --id.",
)
@option(
    "--background",
    envvar="CONVEYOR_REDRIVE_BACKGROUND",
    is_flag=True,
    default=False,
    help="Start a redrive job that the server runs in chunks, and return at once; "
    "not with --id. Follow it with 'conveyor dlq jobs'.",
)
@option(
    "--rate",
    "rate_per_s",
    envvar="CONVEYOR_REDRIVE_RATE",
    type=click.FLOAT,
    default=None,
    show_default="no rate of its own",
    help="Messages per second a background job moves; needs --background.",
)
@option(
    "--source-queue",
    envvar="CONVEYOR_REDRIVE_SOURCE_QUEUE",
    default=None,
    show_default="every source queue",
    help="Move only the messages that came from this queue; needs --background.",
)
@client_options
def redrive(
    options: ClientOptions,
    queue_or_dlq: str,
    message_ids: tuple[str, ...],
    limit: int | None,
    background: bool,
    rate_per_s: float | None,
    source_queue: str | None,
) -> None:
    """Move dead messages back to the queues they came from, ready at once."""
    if message_ids and limit is not None:
        raise click.UsageError("give either --id or --limit, not both")
    if background:
        _start_job(options, queue_or_dlq, message_ids, limit, rate_per_s, source_queue)
        return
    if rate_per_s is not None or source_queue is not None:
        raise click.UsageError("--rate and --source-queue need --background")
    with open_client(options) as client:
        dlq = resolve_dlq(client, queue_or_dlq)
        moved = client.redrive(dlq, message_ids=list(message_ids) or None, limit=limit)

    if options.json_output:
        print_json({"dlq": dlq, "redriven": moved})
        return
    print_line(f"Redrove {plural(moved, 'message')} from DLQ {dlq}.")
    stayed = len(message_ids) - moved
    if message_ids and stayed > 0:
        print_line(
            f"{plural(stayed, 'message')} stayed in {dlq} because their source queue no "
            "longer exists; recreate it and redrive again."
        )


def _start_job(
    options: ClientOptions,
    queue_or_dlq: str,
    message_ids: tuple[str, ...],
    limit: int | None,
    rate_per_s: float | None,
    source_queue: str | None,
) -> None:
    if message_ids:
        raise click.UsageError("--id cannot be combined with --background")
    with open_client(options) as client:
        dlq = resolve_dlq(client, queue_or_dlq)
        job = client.start_redrive_job(
            dlq, rate_per_s=rate_per_s, limit=limit, source_queue=source_queue
        )

    if options.json_output:
        print_json(job.to_wire())
        return
    rate = "no rate limit" if job.rate_per_s is None else f"{job.rate_per_s:g} messages per second"
    print_line(
        f"Started redrive job {job.id} of DLQ {dlq} ({rate}). A running "
        "'conveyor server' moves the messages; follow it with 'conveyor dlq jobs'."
    )


@dlq_group.command("jobs")
@click.argument("queue_or_dlq", required=False)
@option(
    "--state",
    envvar="CONVEYOR_JOBS_STATE",
    type=click.Choice(JOB_STATES),
    default=None,
    show_default="every state",
    help="List only the jobs in this state.",
)
@option(
    "--limit",
    envvar="CONVEYOR_JOBS_LIMIT",
    type=click.IntRange(1, MAX_PEEK),
    default=20,
    help=f"Number of jobs to list, newest first, at most {MAX_PEEK}.",
)
@client_options
def list_jobs(
    options: ClientOptions, queue_or_dlq: str | None, state: str | None, limit: int
) -> None:
    """List redrive jobs, newest first; give a DLQ or its queue for its jobs only."""
    with open_client(options) as client:
        dlq = None if queue_or_dlq is None else resolve_dlq(client, queue_or_dlq)
        jobs = client.list_redrive_jobs(dlq=dlq, state=state, limit=limit)

    if options.json_output:
        print_json({"jobs": [job.to_wire() for job in jobs]})
        return
    if not jobs:
        print_line("No redrive jobs.")
        return
    print_table(
        "Redrive jobs",
        [
            "ID", "DLQ", "State", "Moved", "Rate", "Source", "Dead after",
            "Cursor", "Created", "Updated", "Error",
        ],
        [_job_row(job) for job in jobs],
        wrapped=("Error",),
    )


def _job_row(job: RedriveJob) -> tuple:
    """Return a job's table cells; Moved shows the limit as `moved/limit`."""
    moved = str(job.moved) if job.limit is None else f"{job.moved}/{job.limit}"
    return (
        job.id,
        job.dlq,
        job.state,
        moved,
        "-" if job.rate_per_s is None else f"{job.rate_per_s:g}/s",
        job.source_queue or "any",
        "-" if job.dead_after is None else format_time(job.dead_after),
        job.cursor_seq,
        format_time(job.created_at),
        format_time(job.updated_at),
        job.error,
    )


@dlq_group.command("cancel")
@click.argument("job_id")
@client_options
def cancel_job(options: ClientOptions, job_id: str) -> None:
    """Cancel redrive job JOB_ID; messages it moved already stay moved."""
    with open_client(options) as client:
        was_active = client.get_redrive_job(job_id).state == "active"
        job = client.cancel_redrive_job(job_id)

    if options.json_output:
        print_json(job.to_wire())
        return
    if was_active:
        print_line(f"Cancelled redrive job {job.id} after {plural(job.moved, 'message')} moved.")
    else:
        print_line(f"Redrive job {job.id} had already finished ({job.state}); nothing changed.")
