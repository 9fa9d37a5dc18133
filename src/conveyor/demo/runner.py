"""The demo from start to finish: start, enqueue, watch, report, stop."""

from __future__ import annotations

import importlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.markup import escape

from .files import find_python_files
from .processes import (
    WORKER_START_TIMEOUT_S,
    DemoCluster,
    DemoError,
    start_server,
    start_workers,
    wait_for_workers,
)
from .progress import DemoProgress
from .report import DeadFile, DemoOutcome, RunInfo, print_summary

logger = logging.getLogger(__name__)

TASKS_MODULE = "conveyor.demo.tasks"
APP_PATH = f"{TASKS_MODULE}:app"
ENQUEUE_BATCH = 500
PEEK_PAGE = 1000
POLL_INTERVAL_S = 0.1
KEEP_RUNNING_CHECK_S = 0.5
# Results are read one request each, so a few threads overlap the round trips.
RESULT_READERS = 4


@dataclass(frozen=True)
class DemoOptions:
    """The demo's settings, as the command line gives them."""

    root: Path
    data_dir: Path
    workers: int
    concurrency: int
    limit: int | None
    failure_rate: float
    stall_timeout_s: float
    keep_running: bool


@dataclass
class PostedFile:
    """A file whose task was enqueued, and when (Unix time in seconds)."""

    path: str
    enqueued_at: float


def run_demo(options: DemoOptions, console: Console) -> int:
    """Run the whole demo and return the process exit code.

    Returns 0 when every file either succeeded or was dead-lettered, and 1
    otherwise. Raises DemoError when a step cannot complete. The server and
    workers are stopped in every case.
    """
    started = time.monotonic()
    files = find_python_files(options.root, options.limit)
    if not files:
        raise DemoError(
            f"no .py files found under {options.root}; pass --root with a folder "
            "that contains some"
        )
    run_dir = create_run_folder(options.data_dir)
    console.print(
        f"Found {len(files)} Python files under {escape(str(options.root))}. "
        f"Store and logs go to {escape(str(run_dir))}",
        highlight=False,
    )

    cluster = DemoCluster()
    try:
        return _run_with_cluster(options, console, files, run_dir, cluster, started)
    finally:
        console.print("Stopping the workers and the server.")
        cluster.stop()


def _run_with_cluster(
    options: DemoOptions,
    console: Console,
    files: list[Path],
    run_dir: Path,
    cluster: DemoCluster,
    started: float,
) -> int:
    store_url = f"sqlite:///{run_dir / 'conveyor.db'}"
    url, tasks = _start_cluster(options, console, store_url, run_dir, cluster)
    startup_s = time.monotonic() - started
    try:
        outcome = _process_files(options, console, files, run_dir, cluster, tasks)
        outcome.startup_s = startup_s
        run = RunInfo(
            root=str(options.root),
            run_dir=str(run_dir),
            server_url=url,
            store_url=store_url,
            dlq=tasks.app.client.get_queue(tasks.QUEUE).settings["dead_letter_queue"],
            workers=options.workers,
            concurrency=options.concurrency,
            failure_rate=options.failure_rate,
            keep_running=options.keep_running,
        )
        print_summary(console, outcome, run)
        if options.keep_running:
            serve_until_interrupted(console, cluster, url)
    finally:
        tasks.app.close()
    return 0 if outcome.accounted_for else 1


def _start_cluster(
    options: DemoOptions, console: Console, store_url: str, run_dir: Path, cluster: DemoCluster
) -> tuple[str, ModuleType]:
    """Start the server and workers, create the queue, return the URL and tasks module."""
    cluster.server, url = start_server(store_url, run_dir)
    tasks = load_tasks_module(url)
    tasks.app.client.create_queue(tasks.QUEUE, tasks.QUEUE_SETTINGS, exist_ok=True)
    cluster.workers = start_workers(
        options.workers, options.concurrency, url, APP_PATH, tasks.QUEUE, run_dir
    )
    if not wait_for_workers(cluster.workers, WORKER_START_TIMEOUT_S):
        console.print(
            f"Not every worker reported its start within {WORKER_START_TIMEOUT_S:.0f} s; "
            "enqueueing anyway."
        )
    console.print(
        f"Server ready at {url} with {options.workers} workers "
        f"({options.concurrency} threads each).",
        highlight=False,
    )
    return url, tasks


def _process_files(
    options: DemoOptions,
    console: Console,
    files: list[Path],
    run_dir: Path,
    cluster: DemoCluster,
    tasks: ModuleType,
) -> DemoOutcome:
    """Enqueue the files, show progress until every task finished, read the outcome."""
    client = tasks.app.client
    marker_dir = run_dir / "failure-markers"
    processing_started = time.monotonic()
    posted = enqueue_files(tasks, files, options.failure_rate, marker_dir)
    with DemoProgress(console, len(posted)) as progress:
        wait_for_tasks(
            client, tasks.QUEUE, len(posted), cluster, progress, marker_dir,
            options.stall_timeout_s,
        )
    finished = time.monotonic()

    with console.status(f"Reading {len(posted)} task results"):
        outcome = collect_outcome(client, tasks.QUEUE, posted)
    outcome.processing_s = finished - processing_started
    return outcome


def create_run_folder(data_dir: Path) -> Path:
    """Create and return a new folder `demo-YYYYmmdd-HHMMSS` under data_dir.

    A numeric suffix keeps two runs started in the same second apart.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    base = f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    for suffix in range(1000):
        folder = data_dir / (base if suffix == 0 else f"{base}-{suffix}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder.resolve()
    raise DemoError(f"cannot create a new run folder {base}-N in {data_dir}; remove old runs")


def load_tasks_module(url: str) -> ModuleType:
    """Import the demo's tasks module and point its app at the server url."""
    tasks = importlib.import_module(TASKS_MODULE)
    tasks.app.configure(url=url)
    return tasks


def enqueue_files(
    tasks: ModuleType, files: list[Path], failure_rate: float, marker_dir: Path
) -> dict[str, PostedFile]:
    """Enqueue one analysis task per file in batches and return the files by message id."""
    posted: dict[str, PostedFile] = {}
    options = {"failure_rate": failure_rate, "marker_dir": str(marker_dir)}
    for start in range(0, len(files), ENQUEUE_BATCH):
        batch = [str(path) for path in files[start:start + ENQUEUE_BATCH]]
        enqueued_at = time.time()
        handles = tasks.analyze_python_file.enqueue_many([((path,), options) for path in batch])
        for handle, path in zip(handles, batch, strict=True):
            posted[handle.id] = PostedFile(path, enqueued_at)
    return posted


def wait_for_tasks(
    client: Any,
    queue: str,
    total: int,
    cluster: DemoCluster,
    progress: DemoProgress,
    marker_dir: Path,
    stall_timeout_s: float,
) -> None:
    """Update the progress bar from queue stats until no task is left.

    A task is left while its message is ready, delayed or reserved. Raises
    DemoError if the server or every worker exits, or if no task finishes
    for stall_timeout_s seconds (0 waits forever).
    """
    last_finished = -1
    last_change = time.monotonic()
    while True:
        stats = client.stats(queue)
        left = stats.ready + stats.delayed + stats.reserved
        finished = total - left
        progress.update(finished, count_injected_failures(marker_dir), stats.dead)
        if left == 0:
            return

        cluster.check_running()
        now = time.monotonic()
        if finished != last_finished:
            last_finished, last_change = finished, now
        elif stall_timeout_s and now - last_change > stall_timeout_s:
            raise DemoError(
                f"no task finished in the last {stall_timeout_s:.0f} s with {left} of "
                f"{total} left; see the worker logs next to the store file"
            )
        time.sleep(POLL_INTERVAL_S)


def count_injected_failures(marker_dir: Path) -> int:
    """Return how many first attempts failed on purpose so far."""
    try:
        return sum(1 for _ in os.scandir(marker_dir))
    except FileNotFoundError:
        return 0


def collect_outcome(client: Any, queue: str, posted: dict[str, PostedFile]) -> DemoOutcome:
    """Read each task's result or dead message and build the DemoOutcome."""
    outcome = DemoOutcome(total=len(posted))
    dead_ids = set()
    for message in list_dead_messages(client, client.get_queue(queue).settings["dead_letter_queue"]):
        if message.id in posted:
            dead_ids.add(message.id)
            outcome.dead.append(
                DeadFile(posted[message.id].path, message.last_error, message.receive_count)
            )
            if message.receive_count > 1:
                outcome.retried += 1

    finished_ids = [message_id for message_id in posted if message_id not in dead_ids]
    with ThreadPoolExecutor(RESULT_READERS, thread_name_prefix="demo-results") as pool:
        results = pool.map(client.get_result, finished_ids)
        for message_id, result in zip(finished_ids, results):
            _add_result(outcome, result, posted[message_id])
    outcome.dead.sort(key=lambda dead: dead.path)
    return outcome


def _add_result(outcome: DemoOutcome, result: Any, item: PostedFile) -> None:
    if result is None or result.status != "succeeded":
        outcome.missing.append(item.path)
        return
    value = result.value or {}
    outcome.succeeded += 1
    outcome.retried += bool(value.get("injected_failure"))
    outcome.latencies_s.append(result.finished_at - item.enqueued_at)
    outcome.run_times_ms.append(float(value.get("run_time_ms", 0.0)))
    outcome.totals.add(value)


def list_dead_messages(client: Any, dlq: str) -> list[Any]:
    """Return every dead message of a DLQ, page by page."""
    messages: list[Any] = []
    while True:
        page = client.peek(dlq, limit=PEEK_PAGE, offset=len(messages), state="dead")
        messages.extend(page)
        if len(page) < PEEK_PAGE:
            return messages


def serve_until_interrupted(console: Console, cluster: DemoCluster, url: str) -> None:
    """Keep the server and workers running until Ctrl-C.

    Raises DemoError if the server or every worker exits first.
    """
    # The try starts before the message, so a Ctrl-C right after the user
    # (or a test) reads it is still a normal stop.
    try:
        console.print()
        console.print(
            f"[bold]Serving at {url}[/bold] with {len(cluster.workers)} workers; "
            "press Ctrl-C to stop.",
            highlight=False,
        )
        while True:
            cluster.check_running()
            time.sleep(KEEP_RUNNING_CHECK_S)
    except KeyboardInterrupt:
        console.print()
