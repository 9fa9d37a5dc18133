"""`conveyor message ...`: show one message by id, cancel it, read its logs."""

from __future__ import annotations

from typing import Any

import click

from ..errors import NotFound
from ..models import AttemptLog, Message, TaskResult
from ..validation import MAX_ATTEMPT_NUMBER, MAX_RESULT_TTL_S
from . import main
from .common import (
    ClientOptions,
    CommandError,
    client_options,
    format_time,
    open_client,
    option,
    preview_body,
    print_json,
    print_line,
    print_table,
)
from .messages import message_document, workflow_step_label


@main.group("message")
def message_group() -> None:
    """Show, cancel and read the logs of one message by id, in any queue."""


# show ----------------------------------------------------------------------


@message_group.command("show")
@click.argument("message_id")
@client_options
def show_message(options: ClientOptions, message_id: str) -> None:
    """Show message MESSAGE_ID: its state and progress, or its result once it finished."""
    with open_client(options) as client:
        message = _get_message(client, message_id)
        result = client.get_result(message_id) if message is None else None
    if message is None and result is None:
        raise CommandError(
            f"no message or result with id {message_id!r} is stored: the id is wrong, "
            "the result expired, or the message finished without one"
        )

    if options.json_output:
        document = {"message": None if message is None else message_document(message),
                    "result": None if result is None else result.to_wire()}
        print_json(document)
        return
    rows = _message_rows(message) if message is not None else _result_rows(result)
    print_table(f"Message {message_id}", ["Field", "Value"], rows, wrapped=("Value",))


def _get_message(client: Any, message_id: str) -> Message | None:
    try:
        return client.get_message(message_id)
    except NotFound:
        return None


def _message_rows(message: Message) -> list[tuple[str, str]]:
    rows = [
        ("queue", message.queue),
        ("state", message.state),
        ("attempts", f"{message.receive_count} of {message.max_attempts or 'the queue max'}"),
        ("posted", format_time(message.posted_at)),
        ("progress", _format_progress(message.progress, message.progress_text)),
        ("cancel requested", "yes" if message.cancel_requested else "no"),
        ("completed", format_time(message.completed_at)),
        ("last error", message.last_error or "-"),
        ("body", preview_body(message.body)),
    ]
    # Headers sort by name, one row each; scheduled and workflow messages
    # carry their schedule, tick and step there.
    rows.extend((f"header {name}", value) for name, value in sorted(message.headers.items()))
    if message.idempotency_key is not None:
        rows.insert(2, ("idempotency key", message.idempotency_key))
    step = workflow_step_label(message)
    if step is not None:
        rows.insert(1, ("workflow", step))
    return rows


def _result_rows(result: TaskResult) -> list[tuple[str, str]]:
    return [
        ("queue", result.queue),
        ("status", result.status),
        ("finished", format_time(result.finished_at)),
        ("progress", _format_progress(result.progress, result.progress_text)),
        ("error", result.error or "-"),
        ("result", preview_body(result.value)),
        ("kept until", format_time(result.expires_at)),
    ]


def _format_progress(fraction: float | None, text: str | None) -> str:
    if fraction is None:
        return "-"
    percent = f"{fraction * 100:.0f}%"
    return f"{percent} {text}" if text else percent


# cancel --------------------------------------------------------------------


@message_group.command("cancel")
@click.argument("message_id")
@option(
    "--result-ttl-s",
    envvar="CONVEYOR_CANCEL_RESULT_TTL_S",
    type=click.FloatRange(0, MAX_RESULT_TTL_S),
    default=None,
    show_default="one day",
    help="Seconds to keep the `cancelled` result of a message that had not "
    "started; 0 keeps none.",
)
@client_options
def cancel_message(options: ClientOptions, message_id: str, result_ttl_s: float | None) -> None:
    """Cancel message MESSAGE_ID.

    A message that waits (ready or delayed) is removed at once and never
    runs. A running one is flagged, and its worker stops it within about a
    second. A finished or dead message cannot be cancelled.
    """
    with open_client(options) as client:
        result = client.cancel(message_id, result_ttl_s)

    if options.json_output:
        print_json(result.to_wire())
    elif result.outcome == "cancelled":
        print_line(f"Message {message_id} cancelled; it will not run.")
    else:
        print_line(
            f"Message {message_id} is running; cancel requested, and its worker "
            "stops it at its next lease renewal."
        )


# logs ----------------------------------------------------------------------


@message_group.command("logs")
@click.argument("message_id")
@option(
    "--attempt",
    envvar="CONVEYOR_LOGS_ATTEMPT",
    type=click.IntRange(1, MAX_ATTEMPT_NUMBER),
    default=None,
    show_default="every attempt",
    help="Show the logs of this attempt only, counting deliveries from 1.",
)
@client_options
def message_logs(options: ClientOptions, message_id: str, attempt: int | None) -> None:
    """Print the log records that the attempts of message MESSAGE_ID captured."""
    with open_client(options) as client:
        logs = client.get_logs(message_id, attempt)

    if options.json_output:
        print_json({"id": message_id, "logs": [log.to_wire() for log in logs]})
        return
    if not logs:
        which = f"attempt {attempt} of message" if attempt else "message"
        print_line(f"No logs are stored for {which} {message_id}.")
        return
    for log in logs:
        _print_attempt(log)


def _print_attempt(log: AttemptLog) -> None:
    stored = format_time(log.created_at)
    print_line(f"--- attempt {log.attempt} (queue {log.queue}, stored {stored})")
    click.echo(log.text, nl=not log.text.endswith("\n"))
