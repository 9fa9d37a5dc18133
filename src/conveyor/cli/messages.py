"""`conveyor post` and `conveyor peek`: send messages and look at stored ones."""

from __future__ import annotations

import dataclasses
from typing import IO, Any, Iterator

import click
import orjson

from ..engine import MAX_PEEK
from ..errors import ConveyorError
from ..models import STATES, Message, NewMessage, PostResult
from ..validation import MAX_POST_BATCH
from ..workflows.compiler import STEP_HEADER, WORKFLOW_HEADER
from . import main
from .common import (
    ClientOptions,
    CommandError,
    age_s,
    client_options,
    format_duration_s,
    open_client,
    option,
    preview_body,
    print_json,
    print_line,
    print_table,
    shorten,
)

ERROR_PREVIEW_CHARS = 40


def workflow_step_label(message: Message) -> str | None:
    """Return `step N of workflow ID` for a workflow step's message, else None.

    The workflow sets the two headers on every step message it posts.
    """
    headers = message.headers or {}
    workflow_id = headers.get(WORKFLOW_HEADER)
    if workflow_id is None:
        return None
    return f"step {headers.get(STEP_HEADER, '?')} of workflow {workflow_id}"


# post --------------------------------------------------------------------


@main.command("post")
@click.argument("queue")
@click.argument("body_json", required=False)
@option(
    "--file",
    "body_file",
    envvar="CONVEYOR_POST_FILE",
    type=click.File("rb"),
    default=None,
    show_default="none",
    help="Read bodies from this file, one JSON value per line; '-' reads stdin.",
)
@option(
    "--stdin",
    "from_stdin",
    envvar="CONVEYOR_POST_STDIN",
    is_flag=True,
    default=False,
    help="Read bodies from stdin, one JSON value per line.",
)
@option(
    "--bytes",
    "as_bytes",
    envvar="CONVEYOR_POST_BYTES",
    is_flag=True,
    default=False,
    help="Send binary data instead of JSON: the UTF-8 bytes of BODY_JSON, or "
    "the whole --file or stdin input as one message.",
)
@option(
    "--priority",
    envvar="CONVEYOR_POST_PRIORITY",
    type=int,
    default=0,
    help="Priority from -1000 to 1000; higher priorities are delivered first.",
)
@option(
    "--delay-s",
    envvar="CONVEYOR_POST_DELAY_S",
    type=float,
    default=None,
    show_default="the queue's default_delay_s",
    help="Seconds before the message becomes ready for delivery.",
)
@option(
    "--group",
    envvar="CONVEYOR_POST_GROUP",
    default=None,
    show_default="none",
    help="Message group: required on fifo queues, which deliver each group in "
    "order; rejected on standard queues.",
)
@option(
    "--dedup-id",
    envvar="CONVEYOR_POST_DEDUP_ID",
    default=None,
    show_default="none",
    help="Deduplication id: posting it again within the queue's dedup_window_s "
    "returns the first message's id. Only for a single message.",
)
@option(
    "--header",
    "headers",
    envvar="CONVEYOR_POST_HEADER",
    multiple=True,
    metavar="KEY=VALUE",
    show_default="none",
    help="Header attached to every message; repeat the flag for more headers. "
    "The environment twin takes space-separated KEY=VALUE pairs.",
)
@client_options
def post(
    options: ClientOptions,
    queue: str,
    body_json: str | None,
    body_file: IO[bytes] | None,
    from_stdin: bool,
    as_bytes: bool,
    priority: int,
    delay_s: float | None,
    group: str | None,
    dedup_id: str | None,
    headers: tuple[str, ...],
) -> None:
    """Post messages to QUEUE and print their ids, one per line.

    The body comes from BODY_JSON (one JSON value), from --file or from
    --stdin (one JSON value per line, posted in batches of 1000).
    """
    bodies = _read_bodies(body_json, body_file, from_stdin, as_bytes)
    if dedup_id is not None and len(bodies) > 1:
        raise click.UsageError(
            f"--dedup-id applies to one message, but the input has {len(bodies)}; "
            "post them one by one to give each its own dedup id"
        )
    template = NewMessage(
        body=None,
        headers=_parse_headers(headers),
        priority=priority,
        delay_s=delay_s,
        group=group,
        dedup_id=dedup_id,
    )
    messages = [dataclasses.replace(template, body=body) for body in bodies]
    with open_client(options) as client:
        results, failure = _post_in_batches(client, queue, messages)

    _print_post_results(options, queue, results)
    if failure is not None:
        raise failure


def _read_bodies(
    body_json: str | None, body_file: IO[bytes] | None, from_stdin: bool, as_bytes: bool
) -> list[Any]:
    """Return every body to post, checked before anything is sent."""
    sources = [body_json is not None, body_file is not None, from_stdin]
    if sum(sources) != 1:
        raise click.UsageError(
            "give exactly one body source: BODY_JSON, --file F or --stdin"
        )
    if body_json is not None:
        return [body_json.encode() if as_bytes else _parse_argument(body_json)]

    stream = body_file if body_file is not None else click.get_binary_stream("stdin")
    source_name = body_file.name if body_file is not None else "stdin"
    if as_bytes:
        return [stream.read()]
    return list(_parse_lines(stream, source_name))


def _parse_argument(body_json: str) -> Any:
    try:
        return orjson.loads(body_json)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{shorten(body_json, 40)!r} is not valid JSON: {exc}. Quote strings "
            "as JSON, for example '\"hello\"', or pass --bytes",
            param_hint="BODY_JSON",
        ) from exc


def _parse_lines(stream: IO[bytes], source_name: str) -> Iterator[Any]:
    """Yield one JSON body per non-blank line."""
    for line_number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CommandError(
                f"line {line_number} of {source_name} is not valid JSON: {exc}. "
                "Write one JSON value per line. Nothing was posted."
            ) from exc


def _parse_headers(pairs: tuple[str, ...]) -> dict[str, str] | None:
    headers: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"{pair!r} is not KEY=VALUE; write for example --header trace=abc123",
                param_hint="--header",
            )
        headers[key] = value
    return headers or None


def _post_in_batches(
    client: Any, queue: str, messages: list[NewMessage]
) -> tuple[list[PostResult], CommandError | None]:
    """Post up to MAX_POST_BATCH messages per call, stopping at the first failure.

    Each batch is all or nothing, so on failure the returned results are
    exactly the messages that were stored.
    """
    results: list[PostResult] = []
    for start in range(0, len(messages), MAX_POST_BATCH):
        batch = messages[start : start + MAX_POST_BATCH]
        try:
            results.extend(client.post(queue, batch))
        except ConveyorError as exc:
            return results, _batch_failure(exc, start)
    return results, None


def _batch_failure(exc: ConveyorError, start: int) -> CommandError:
    if start == 0:
        return CommandError(f"{exc.detail}; nothing was posted")
    return CommandError(
        f"{exc.detail}. Message numbers count from message {start} of the input, "
        f"where the failed batch starts; the {start} messages before it were posted"
    )


def _print_post_results(
    options: ClientOptions, queue: str, results: list[PostResult]
) -> None:
    if options.json_output:
        print_json(
            {
                "queue": queue,
                "messages": [
                    {"id": r.id, "deduplicated": r.deduplicated} for r in results
                ],
            }
        )
        return
    for result in results:
        print_line(result.id)
        if result.deduplicated:
            click.echo(
                f"note: message {result.id} was posted before with this dedup id; "
                "no new message was stored",
                err=True,
            )


# peek --------------------------------------------------------------------


@main.command("peek")
@click.argument("queue")
@option(
    "--limit",
    envvar="CONVEYOR_PEEK_LIMIT",
    type=click.IntRange(1, MAX_PEEK),
    default=10,
    help=f"Number of messages to show, at most {MAX_PEEK}.",
)
@option(
    "--offset",
    envvar="CONVEYOR_PEEK_OFFSET",
    type=click.IntRange(0),
    default=0,
    help="Number of messages to skip, in post order.",
)
@option(
    "--state",
    envvar="CONVEYOR_PEEK_STATE",
    type=click.Choice(STATES),
    default=None,
    show_default="any state",
    help="Show only messages in this state.",
)
@client_options
def peek(
    options: ClientOptions, queue: str, limit: int, offset: int, state: str | None
) -> None:
    """Show messages of QUEUE in post order without leasing them."""
    with open_client(options) as client:
        messages = client.peek(queue, limit=limit, offset=offset, state=state)

    if options.json_output:
        print_json({"queue": queue, "messages": [message_document(m) for m in messages]})
        return
    print_table(
        f"Queue {queue}",
        ["ID", "State", "Receives", "Age", "Last error", "Body"],
        [
            (
                m.id,
                m.state,
                m.receive_count,
                format_duration_s(age_s(m.posted_at)),
                shorten(m.last_error, ERROR_PREVIEW_CHARS),
                preview_body(m.body),
            )
            for m in messages
        ],
        wrapped=("Last error", "Body"),
    )


def message_document(message: Message) -> dict[str, Any]:
    """Return a message's wire form without its receipt.

    A receipt lets its holder ack or nack the lease, so a read-only listing
    does not print it.
    """
    document = message.to_wire()
    document.pop("receipt", None)
    return document
