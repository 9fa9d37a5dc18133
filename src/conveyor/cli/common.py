"""Options and output helpers shared by the management commands.

Every management command takes --url, --token and --json through
`client_options`, opens its client with `open_client`, and prints either one
JSON document (`print_json`) or rich tables for people (`print_table`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Callable, Iterator, Sequence

import click
import orjson
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..client import connect
from ..errors import ConveyorError, Unauthorized

DEFAULT_URL = "http://127.0.0.1:8080"
PREVIEW_CHARS = 60
# Width of tables written to a pipe or a file, where nothing needs to fit a
# screen: wide enough that ids and queue names are never cut.
PIPE_WIDTH = 240
WRAPPED_MIN_WIDTH = 10
# Unicode categories escape_control escapes: control characters (C0, DEL
# and C1), format characters such as bidi overrides, line and paragraph
# separators.
ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


class CommandError(click.ClickException):
    """An expected failure, printed as one `error: ...` line with exit code 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@dataclass(frozen=True)
class ClientOptions:
    """The target URL, bearer token and output format of one command."""

    url: str
    token: str | None
    json_output: bool


def option(*param_decls: str, envvar: str, **attrs: Any) -> Callable:
    """Build a click option that shows its default and its environment twin."""
    attrs.setdefault("show_default", True)
    return click.option(*param_decls, envvar=envvar, show_envvar=True, **attrs)


def client_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add --url, --token and --json to a command and pass ClientOptions first.

    A ConveyorError raised by the command is printed as `error: <detail>`
    with exit code 1 instead of a traceback.
    """

    @option(
        "--url",
        envvar="CONVEYOR_URL",
        default=DEFAULT_URL,
        help="Conveyor server URL, or sqlite:///path/to/file.db to work on a "
        "store file directly without a server.",
    )
    @option(
        "--token",
        envvar="CONVEYOR_TOKEN",
        default=None,
        show_default="none",
        help="Bearer token sent to the server; not used with sqlite:/// URLs.",
    )
    @option(
        "--json",
        "json_output",
        envvar="CONVEYOR_JSON",
        is_flag=True,
        default=False,
        help="Print one JSON document for scripts instead of tables.",
    )
    @functools.wraps(command)
    def wrapper(url: str, token: str | None, json_output: bool, **kwargs: Any) -> Any:
        options = ClientOptions(url=url, token=token, json_output=json_output)
        try:
            return command(options, **kwargs)
        except Unauthorized as exc:
            raise CommandError(
                f"{exc.detail}. Pass the token with --token or CONVEYOR_TOKEN"
            ) from exc
        except ConveyorError as exc:
            raise CommandError(exc.detail) from exc

    return wrapper


@contextlib.contextmanager
def open_client(options: ClientOptions) -> Iterator[Any]:
    """Yield an Engine (sqlite:/// URL) or an HTTP client, closed on exit.

    Both have the same synchronous methods, so commands do not care which.
    """
    client = _connect(options.url, options.token)
    try:
        yield client
    finally:
        client.close()


def _connect(url: str, token: str | None) -> Any:
    try:
        return connect(url, token)
    except ConveyorError as exc:
        raise CommandError(exc.detail) from exc


# Output ------------------------------------------------------------------


def confirm_or_fail(question: str) -> None:
    """Ask a yes/no question on a terminal; without one, change nothing.

    Piped input is not taken as an answer, because a line meant for another
    program could confirm a deletion. Scripts pass --yes instead.
    """
    if not sys.stdin.isatty():
        raise CommandError(
            "stdin is not a terminal, so nothing was changed; pass --yes to confirm"
        )
    try:
        click.confirm(question, abort=True, err=True)
    except click.Abort:
        raise CommandError(
            "not confirmed, so nothing was changed; pass --yes to skip the question"
        ) from None


def print_json(document: Any) -> None:
    """Print one JSON document on stdout."""
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    wrapped: Sequence[str] = (),
    whole: Sequence[str] = (),
) -> None:
    """Print a rich table on stdout.

    When the terminal is narrow, the columns named in `wrapped` (free text
    such as bodies and errors) fold onto more lines, the columns named in
    `whole` (ids) ask for the width of their longest cell, and the other
    columns are cut with a visible `…`. Cells are plain text, so brackets
    in a body or an error are not read as rich markup.

    NOTE: rich still narrows a `whole` column when the other columns cannot
    shrink enough, so a caller keeps the rest of the table narrow; the
    workflow tables are pinned at 80 columns in tests/test_cli_workflows.py.
    """
    table = Table(
        title=None if title is None else Text(title),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
    )
    for position, column in enumerate(columns):
        if column in wrapped:
            table.add_column(column, overflow="fold", min_width=WRAPPED_MIN_WIDTH)
        elif column in whole:
            width = max([len(column), *(len(str(row[position])) for row in rows)])
            table.add_column(column, no_wrap=True, overflow="fold", min_width=width)
        else:
            table.add_column(column, no_wrap=True, overflow="ellipsis")
    for row in rows:
        table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
    _console().print(table)


def _console() -> Console:
    """Return a console for stdout that is only as narrow as a real terminal.

    Rich assumes 80 columns when stdout is not a terminal; COLUMNS still
    sets the width when given.
    """
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=PIPE_WIDTH)
    return console


def print_line(text: str) -> None:
    """Print one line for people on stdout, with no rich markup applied."""
    click.echo(text)


def format_duration_s(seconds: float | None) -> str:
    """Format a duration for people: `45s`, `3m 20s`, `2h 5m`, `4d 3h`."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def format_time(timestamp: float | None) -> str:
    """Format a Unix time for people, in local time: `2024-05-01 14:03:07`."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def age_s(timestamp: float) -> float:
    """Return the seconds elapsed since a Unix timestamp."""
    return time.time() - timestamp


def preview_body(body: Any, max_chars: int = PREVIEW_CHARS) -> str:
    """Return the start of a body as compact JSON, or a byte count and the first bytes."""
    if isinstance(body, (bytes, bytearray)):
        text = f"{len(body)} bytes: {bytes(body)!r}"
    else:
        text = orjson.dumps(body).decode()
    return shorten(text, max_chars)


def escape_control(text: str | None) -> str | None:
    """Return stored text with control characters escaped (`\\x1b`, `\\n`).

    Text that a client stored (names, errors) must not move the cursor or
    change the terminal's colours when a table prints it.
    """
    if text is None:
        return None
    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) in ESCAPED_CATEGORIES else char
        for char in text
    )


def shorten(text: str | None, max_chars: int) -> str | None:
    """Cut text to max_chars characters, ending with `…` when it was cut."""
    if text is None or len(text) <= max_chars:
        return text
    return text[: max_chars - 1] + "…"
