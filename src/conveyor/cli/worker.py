"""`conveyor worker MODULE:APP`: run an app's tasks until SIGTERM or SIGINT."""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
from typing import Any

import click

from ..errors import ConveyorError, ValidationError
from ..tasks.app import Conveyor
from ..worker.worker import (
    DEFAULT_GRACE_PERIOD_S,
    DEFAULT_POLL_WAIT_S,
    DEFAULT_PREFETCH,
    MAX_PROCESSES,
    Worker,
)
from . import main

logger = logging.getLogger(__name__)


def _option(*param_decls: str, envvar: str, **attrs: Any) -> Any:
    attrs.setdefault("show_default", True)
    return click.option(*param_decls, envvar=envvar, show_envvar=True, **attrs)


@main.command()
@click.argument("app_path", metavar="MODULE:APP")
@_option(
    "--queues",
    envvar="CONVEYOR_QUEUES",
    default=None,
    show_default="the queues of the app's tasks",
    help="Comma-separated queues to serve.",
)
@_option(
    "--concurrency",
    envvar="CONVEYOR_CONCURRENCY",
    type=click.IntRange(1, 1024),
    default=None,
    show_default="8, or 1 per child process with --processes",
    help="Number of sync task threads, and the max number of async tasks "
    "running at once; with --processes, in each child process.",
)
@_option(
    "--processes",
    envvar="CONVEYOR_PROCESSES",
    type=click.IntRange(0, MAX_PROCESSES),
    default=0,
    help="Number of child processes that run the tasks, for CPU-bound work and "
    "for hard timeouts; 0 runs tasks in the worker process.",
)
@_option(
    "--max-tasks-per-child",
    envvar="CONVEYOR_MAX_TASKS_PER_CHILD",
    type=click.IntRange(1),
    default=None,
    show_default="no limit",
    help="Replace a child process after this many task calls (a batch call "
    "counts once). Needs --processes.",
)
@_option(
    "--max-memory-per-child-mib",
    envvar="CONVEYOR_MAX_MEMORY_PER_CHILD_MIB",
    type=click.IntRange(1),
    default=None,
    show_default="no limit",
    help="Replace a child process once its resident memory after a task is "
    "above this many MiB. Needs --processes.",
)
@_option(
    "--url",
    envvar="CONVEYOR_URL",
    default=None,
    show_default="the app's URL, which defaults to http://127.0.0.1:8080",
    help="Queue service URL (http://host:port), or sqlite:///path.db to use a "
    "store file in this process; overrides the app's URL.",
)
@_option(
    "--token",
    envvar="CONVEYOR_TOKEN",
    default=None,
    show_default="the app's token, if any",
    help="Bearer token sent to the queue service.",
)
@_option(
    "--prefetch",
    envvar="CONVEYOR_PREFETCH",
    type=click.IntRange(0, 10_000),
    default=DEFAULT_PREFETCH,
    help="Number of messages the worker may reserve beyond those running. "
    "Lower it for long tasks so that other workers get a share.",
)
@_option(
    "--grace-period-s",
    envvar="CONVEYOR_GRACE_PERIOD_S",
    type=click.FloatRange(0.0),
    default=DEFAULT_GRACE_PERIOD_S,
    help="Seconds a stop waits for running tasks before it releases them for redelivery.",
)
@_option(
    "--poll-wait-s",
    envvar="CONVEYOR_POLL_WAIT_S",
    type=click.FloatRange(0.0, 30.0),
    default=DEFAULT_POLL_WAIT_S,
    help="Seconds each reserve request waits for a message (long poll).",
)
def worker(
    app_path: str,
    queues: str | None,
    concurrency: int | None,
    processes: int,
    max_tasks_per_child: int | None,
    max_memory_per_child_mib: int | None,
    url: str | None,
    token: str | None,
    prefetch: int,
    grace_period_s: float,
    poll_wait_s: float,
) -> None:
    """Run the tasks of the app MODULE:APP (for example myproject.tasks:app).

    SIGTERM or SIGINT stops taking messages, lets running tasks finish within
    the grace period, releases the rest for immediate redelivery and exits
    with status 0. A second SIGTERM or SIGINT releases running tasks at once.
    With --processes, child processes run the tasks and this process leases
    and acknowledges them; a child that dies or passes a task's
    hard_timeout_s is replaced.
    """
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # httpx logs each request at INFO, which would be a line per reserve and ack.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    app = load_app(app_path)
    if url is not None or token is not None:
        app.configure(url=url, token=token)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    try:
        runner = Worker(
            app,
            queues=queue_list,
            concurrency=concurrency,
            prefetch=prefetch,
            grace_period_s=grace_period_s,
            poll_wait_s=poll_wait_s,
            processes=processes,
            max_tasks_per_child=max_tasks_per_child,
            max_memory_per_child_mib=max_memory_per_child_mib,
            app_path=app_path,
        )
        # The modules and the app loaded so far live as long as the process.
        # Moving them to the permanent generation keeps every later garbage
        # collection from scanning them again.
        gc.freeze()
        runner.run()
    except ConveyorError as exc:
        raise click.ClickException(exc.detail) from exc
    finally:
        app.close()
    if runner.busy_threads():
        # Task threads stuck past their timeout (in a C call, or catching
        # TaskTimeout) cannot be stopped; end the process without waiting.
        logging.shutdown()
        os._exit(0)


def load_app(app_path: str) -> Conveyor:
    """Import MODULE and return its Conveyor attribute APP (default `app`).

    The current directory is put on sys.path first, as `python -m` does.
    """
    module_name, _, attribute = app_path.partition(":")
    attribute = attribute or "app"
    if not module_name:
        raise click.BadParameter(
            f"{app_path!r} names no module; use MODULE:APP, for example myproject.tasks:app",
            param_hint="MODULE:APP",
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.BadParameter(
                f"module {module_name!r} not found; run the worker from the project "
                "directory or add it to PYTHONPATH",
                param_hint="MODULE:APP",
            ) from exc
        raise
    except ValidationError as exc:
        # A task or schedule declaration rejected at import: its message names
        # the declaration and the fix, so a traceback would only bury it.
        raise click.ClickException(
            f"module {module_name!r} declares an invalid task or schedule: {exc}"
        ) from exc
    app: Any = module
    for part in attribute.split("."):
        app = getattr(app, part, None)
        if app is None:
            raise click.BadParameter(
                f"module {module_name!r} has no attribute {attribute!r}",
                param_hint="MODULE:APP",
            )
    if not isinstance(app, Conveyor):
        raise click.BadParameter(
            f"{app_path!r} is a {type(app).__name__}, not a conveyor.Conveyor app",
            param_hint="MODULE:APP",
        )
    return app
