"""`conveyor demo`: a real server and workers analysing the standard library."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from ..errors import ConveyorError
from . import main

DEFAULT_WORKERS = os.cpu_count() or 2


@main.command()
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=DEFAULT_WORKERS,
    envvar="CONVEYOR_DEMO_WORKERS",
    show_envvar=True,
    show_default="the number of CPU cores",
    help="Number of worker processes to start.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=4,
    envvar="CONVEYOR_DEMO_CONCURRENCY",
    show_envvar=True,
    show_default=True,
    help="Number of tasks each worker process runs at once (threads).",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    envvar="CONVEYOR_DEMO_LIMIT",
    show_envvar=True,
    show_default="all files",
    help="Analyse only the first N files in path order.",
)
@click.option(
    "--failure-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.02,
    envvar="CONVEYOR_DEMO_FAILURE_RATE",
    show_envvar=True,
    show_default=True,
    help="Fraction of files (0 to 1) whose first attempt fails on purpose, to show "
    "retries. The same files are picked on every run.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    envvar="CONVEYOR_DEMO_DATA_DIR",
    show_envvar=True,
    show_default=True,
    help="Folder in which each run creates its own demo-<timestamp> folder with the "
    "SQLite store and the logs.",
)
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    envvar="CONVEYOR_DEMO_ROOT",
    show_envvar=True,
    show_default="the standard library of this Python",
    help="Folder whose .py files are analysed, recursively; site-packages folders "
    "are skipped.",
)
@click.option(
    "--stall-timeout-s",
    type=click.FloatRange(0.0),
    default=120.0,
    envvar="CONVEYOR_DEMO_STALL_TIMEOUT_S",
    show_envvar=True,
    show_default=True,
    help="Stop with an error when no task finishes for this many seconds; 0 waits "
    "forever.",
)
@click.option(
    "--keep-running",
    is_flag=True,
    envvar="CONVEYOR_DEMO_KEEP_RUNNING",
    show_envvar=True,
    show_default="stop after the summary",
    help="Keep the server and workers running after the summary, until Ctrl-C, so "
    "you can try the printed commands.",
)
def demo(
    workers: int,
    concurrency: int,
    limit: int | None,
    failure_rate: float,
    data_dir: Path,
    root: Path | None,
    stall_timeout_s: float,
    keep_running: bool,
) -> None:
    """Analyse every .py file of the standard library as Conveyor tasks.

    Starts a server on a new SQLite store and worker processes, enqueues one
    task per file, shows live progress, and prints throughput, latency and
    the dead-lettered files: those that do not compile on purpose. Exits
    with code 0 when every file succeeded or was dead-lettered.
    """
    # Imported here so that other commands do not pay for the demo's imports.
    from ..demo.files import stdlib_folder
    from ..demo.processes import DemoError
    from ..demo.runner import DemoOptions, run_demo

    options = DemoOptions(
        root=(root or stdlib_folder()).resolve(),
        data_dir=data_dir,
        workers=workers,
        concurrency=concurrency,
        limit=limit,
        failure_rate=failure_rate,
        stall_timeout_s=stall_timeout_s,
        keep_running=keep_running,
    )
    # One log line per HTTP request would scroll the progress bar away.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    console = Console()
    error_console = Console(stderr=True)
    received = _stop_on_sigterm()
    try:
        code = run_demo(options, console)
    except KeyboardInterrupt:
        console.print("Interrupted; the workers and the server were stopped.")
        sys.exit(128 + received.get("signal", signal.SIGINT))
    except (DemoError, ConveyorError, OSError) as exc:
        error_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
        sys.exit(1)
    if code != 0:
        error_console.print(
            "[bold red]error:[/bold red] some files neither succeeded nor reached the DLQ; "
            "the summary above lists them."
        )
    sys.exit(code)


def _stop_on_sigterm() -> dict[str, int]:
    """Make SIGTERM raise KeyboardInterrupt like Ctrl-C, so children get stopped.

    Returns a dict that gets the number of the signal under "signal" when
    SIGTERM arrives.
    """
    received: dict[str, int] = {}

    def interrupt(signum: int, _frame: object) -> None:
        received["signal"] = signum
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    return received
