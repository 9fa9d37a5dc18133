"""Conveyor: its HTTP server on a SQLite or PostgreSQL store and its worker CLI.

This adapter drives ``conveyor server --store URL --port P``, ``conveyor
worker MODULE:APP --queues Q --concurrency N`` (with ``--processes P`` for
the child-process variant), and the SDK's ``task.enqueue(*args)`` and
``task.enqueue_many([(args, kwargs), ...])``. Any failure to import or start
Conveyor raises SystemUnavailable, so the runner reports it and goes on with
the other systems.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator

from peers.base import Peer, SystemUnavailable, create_postgres_schema, venv_script
from procs import BENCH_DIR, ProcessGroup
from worker_apps import CONVEYOR_URL_ENV, QUEUE_NAME

# The planned client posts at most 1000 messages per request.
BATCH_SIZE = 1000
SERVER_START_TIMEOUT_SECONDS = 30.0
# The worker logs every task at INFO. The other systems' workers run at warning
# level, so Conveyor does too.
LOG_LEVEL = "warning"


class ConveyorPeer(Peer):
    """Conveyor with one worker process that runs as many task threads as the others have processes."""

    name = "conveyor"
    packages = ("conveyor",)
    batch_api = f"task.enqueue_many([(args, {{}}), ...]) in chunks of {BATCH_SIZE}"
    producer_client = (
        "one Conveyor(url) app per thread, so each thread has its own HTTP "
        "keep-alive connection"
    )
    uses_redis_broker = False
    supports_backlog = True
    supports_cpu_drain = True
    supports_batch_tasks = True
    store_name = "SQLite"
    store_option = "sqlite:///PATH"
    store_note = "store file in a fresh temporary directory"

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.server: ProcessGroup | None = None
        self.port: int | None = None
        self.store_number = 0
        self.store_path: str | None = None

    def versions(self) -> dict[str, str]:
        found = super().versions()
        found["conveyor commit"] = _git_commit()
        return found

    def settings(self) -> dict[str, object]:
        return {
            "server": f"conveyor --log-level {LOG_LEVEL} server --store {self.store_option} "
            "--port PORT",
            "worker": " ".join(["conveyor"] + self.worker_argv()[1:]),
            "pool": self.pool_description,
            "options": f"result_ttl_s=0 on both tasks, so no results are kept; "
            f"{self.store_note}; default server and worker settings "
            "(prefetch 100, long poll 2 s)",
        }

    @property
    def pool_description(self) -> str:
        return (f"one worker process with {_count(self.worker_concurrency, 'task thread')}, "
                "plus the server process")

    @property
    def worker_concurrency(self) -> int:
        return self.ctx.concurrency

    @property
    def label(self) -> str:
        return f"Conveyor ({self.store_name} store, {self.worker_concurrency} worker threads)"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_env(self) -> dict[str, str]:
        env = super().worker_env()
        env[CONVEYOR_URL_ENV] = self.url
        return env

    def setup(self) -> None:
        super().setup()
        try:
            import conveyor  # noqa: F401
        except ImportError as error:
            raise SystemUnavailable(f"cannot import conveyor: {error}") from error
        self._start_server()

    def create_store(self) -> str:
        """Return the URL of a new, empty store for the server."""
        self.store_number += 1
        self.store_path = str(self.ctx.work_dir / f"conveyor-{self.store_number}.db")
        return f"sqlite:///{self.store_path}"

    def _start_server(self) -> None:
        """Start a server on a new store and a free port, then load the app against it."""
        store_url = self.create_store()
        self.port = _free_loopback_port()
        argv = [
            venv_script("conveyor"), "--log-level", LOG_LEVEL, "server",
            "--store", store_url,
            "--port", str(self.port),
        ]
        log_path = self.ctx.log_dir / f"{self.name}-server.log"
        self.server = ProcessGroup(f"{self.name} server", argv, {}, log_path)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while not _port_open(self.port):
            try:
                self.server.check_running()
            except RuntimeError as error:
                raise SystemUnavailable(str(error)) from error
            if time.monotonic() > deadline:
                raise SystemUnavailable(
                    f"conveyor server did not listen on port {self.port} within "
                    f"{SERVER_START_TIMEOUT_SECONDS:.0f} s; log {self.server.log_path}:\n"
                    f"{self.server.log_tail()}"
                )
            time.sleep(0.1)
        try:
            module = self.import_app("worker_apps.conveyor_app")
        except Exception as error:
            raise SystemUnavailable(f"cannot load the Conveyor app: {error!r}") from error
        self.app = module.app
        self.tasks = {
            name: getattr(module, name)
            for name in ("noop", "record_latency", "cpu_work", "add_item", "add_items")
        }
        # The first post would create the queue, but a workload may read its
        # stats before any post, for example W4 when it runs without W1 and W2.
        self.app.ensure_queue(QUEUE_NAME)

    def _stop_server(self) -> None:
        app = getattr(self, "app", None)
        if app is not None:
            app.close()
        if self.server is not None:
            server, self.server = self.server, None
            server.stop()

    def post_one(self, task: str, args: tuple) -> None:
        self.tasks[task].enqueue(*args)

    @contextlib.contextmanager
    def open_producer(self) -> Iterator[Callable[[str, tuple], None]]:
        # One shared app would be thread-safe too, but its HTTP client keeps at
        # most 32 connections (conveyor.client.http.MAX_CONNECTIONS), so more
        # producers than that would wait for a connection.
        from conveyor import Conveyor

        app = Conveyor(self.url)
        tasks = {name: _register_copy(app, task) for name, task in self.tasks.items()}
        try:
            # Opens the connection before the clock starts. The queue exists already.
            app.ensure_queue(QUEUE_NAME)
            yield lambda task, args: tasks[task].enqueue(*args)
        finally:
            app.close()

    def post_batch(self, task: str, args_list: list[tuple]) -> None:
        task_object = self.tasks[task]
        for start in range(0, len(args_list), BATCH_SIZE):
            chunk = args_list[start:start + BATCH_SIZE]
            task_object.enqueue_many([(args, {}) for args in chunk])

    def purge(self) -> None:
        self.app.client.purge_queue(QUEUE_NAME)

    def outstanding_messages(self) -> int:
        stats = self.app.client.stats(QUEUE_NAME)
        return stats.ready + stats.delayed + stats.reserved

    def restart_on_new_store(self) -> None:
        self.stop_workers()
        self._stop_server()
        self._start_server()

    def reserve_and_ack(self, max_messages: int) -> int:
        client = self.app.client
        messages = client.reserve(QUEUE_NAME, max_messages=max_messages)
        if not messages:
            return 0
        results = client.ack(
            QUEUE_NAME, [{"id": message.id, "receipt": message.receipt} for message in messages]
        )
        failed = [result for result in results if not result.ok]
        if failed:
            raise RuntimeError(
                f"{len(failed)} of {len(results)} acks failed; the first failed with "
                f"{failed[0].error}: {failed[0].detail}"
            )
        return len(messages)

    def storage_sizes(self) -> dict:
        """Return the bytes of the messages table and its indexes, from SQLite's dbstat table.

        Reads the store file through a read-only connection of its own, which
        WAL mode allows while the server runs.
        """
        uri = f"file:{self.store_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            indexes = [row[0] for row in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'index' "
                "AND tbl_name = 'messages' ORDER BY name"
            )]
            sizes = dict(conn.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"
            ).fetchall())
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
            rows = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        index_bytes = {name: sizes.get(name, 0) for name in indexes}
        return {
            "total_bytes": sizes.get("messages", 0) + sum(index_bytes.values()),
            "table_bytes": sizes.get("messages", 0),
            "indexes_bytes": sum(index_bytes.values()),
            "index_bytes": index_bytes,
            "live_rows": rows,
            # Pages that deleted rows freed and SQLite may reuse, in the whole file.
            "free_bytes": free_pages * page_size,
        }

    def worker_argv(self) -> list[str]:
        return [
            venv_script("conveyor"), "--log-level", LOG_LEVEL, "worker",
            "worker_apps.conveyor_app:app",
            "--queues", QUEUE_NAME,
            "--concurrency", str(self.worker_concurrency),
        ]

    def check_workers(self) -> None:
        super().check_workers()
        if self.server is not None:
            self.server.check_running()

    def cleanup(self) -> None:
        self.stop_workers()
        self._stop_server()
        super().cleanup()


class ConveyorDefaultConcurrencyPeer(ConveyorPeer):
    """Conveyor with the worker CLI's default of 8 task threads."""

    name = "conveyor-8threads"
    # The backlog test does not run a worker, so it would repeat the
    # "conveyor" system's. W4 and the batch comparison compare the worker's
    # modes, which the "conveyor" and "conveyor-processes" systems cover.
    supports_backlog = False
    supports_cpu_drain = False
    supports_batch_tasks = False

    @property
    def worker_concurrency(self) -> int:
        return 8


class ConveyorProcessesPeer(ConveyorPeer):
    """Conveyor whose worker runs the tasks in child processes (``--processes``).

    It gets the same number of task slots as the other systems
    (``--concurrency``), split evenly over one child per CPU. So
    ``--processes`` is the smaller of the slots and the CPUs, and each
    child's ``--concurrency`` is the quotient, rounded down. On 2 CPUs with 2
    slots the worker runs 2 children of 1 task thread each, like Celery's
    prefork pool with 2 processes.
    """

    name = "conveyor-processes"
    # The backlog test does not run a worker, so it would repeat the
    # "conveyor" system's.
    supports_backlog = False

    @property
    def processes(self) -> int:
        return max(1, min(self.ctx.concurrency, len(os.sched_getaffinity(0))))

    @property
    def worker_concurrency(self) -> int:
        return max(1, self.ctx.concurrency // self.processes)

    @property
    def label(self) -> str:
        return (f"Conveyor ({self.store_name} store, "
                f"{_count(self.processes, 'child process')} "
                f"x {_count(self.worker_concurrency, 'task thread')})")

    @property
    def pool_description(self) -> str:
        return (f"one worker process that reserves and acks, "
                f"{_count(self.processes, 'child process')} with "
                f"{_count(self.worker_concurrency, 'task thread')} each, plus the "
                "server process")

    def worker_argv(self) -> list[str]:
        return super().worker_argv() + ["--processes", str(self.processes)]


class ConveyorPostgresPeer(ConveyorPeer):
    """Conveyor with its server on a PostgreSQL schema of its own, and N task threads."""

    name = "conveyor-postgres"
    packages = ("conveyor", "psycopg", "psycopg-pool")
    store_name = "PostgreSQL"
    store_note = "a fresh schema with a random name, dropped after the run"
    # The store does not change how the worker runs tasks, which W4 and the
    # batch comparison measure on the SQLite systems.
    supports_cpu_drain = False
    supports_batch_tasks = False

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.schema = None

    @property
    def store_option(self) -> str:
        separator = "&" if "?" in (self.ctx.postgres_url or "") else "?"
        return f"{self.ctx.postgres_url}{separator}options=-csearch_path%3DSCHEMA"

    def create_store(self) -> str:
        if self.schema is not None:
            self.schema.drop()
        self.schema = create_postgres_schema(self.ctx, "bench_conveyor")
        return self.schema.url

    def storage_sizes(self) -> dict:
        return self.schema.table_sizes("messages")

    def after_bulk_post(self) -> None:
        if self.ctx.postgres_analyze:
            self.schema.analyze()

    def vacuum(self) -> bool:
        self.schema.vacuum("messages")
        return True

    def cleanup(self) -> None:
        try:
            super().cleanup()
        finally:
            # Stop the server first, because its connections use the schema.
            if self.schema is not None:
                self.schema.drop()


def _register_copy(app, task):
    """Register ``task``'s function on ``app`` with the same name, queue and batch options."""
    batch_options = {}
    if task.is_batch:
        batch_options = {"batch_size": task.batch_size, "batch_wait_s": task.batch_wait_s}
    return app.task(queue=task.queue, name=task.name, result_ttl_s=task.result_ttl_s,
                    **batch_options)(task.fn)


def _count(number: int, noun: str) -> str:
    """Return "1 task thread" or "2 task threads"."""
    if number == 1:
        return f"1 {noun}"
    suffix = "es" if noun.endswith("s") else "s"
    return f"{number} {noun}{suffix}"


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _git_commit() -> str:
    """Return the repository's short commit id, flagging uncommitted changes under src/."""
    git = shutil.which("git")
    if git is None:
        return "unknown (git not found)"
    repo = BENCH_DIR.parent
    commit = subprocess.run(
        [git, "rev-parse", "--short", "HEAD"],
        cwd=repo, capture_output=True, text=True, check=False,
    ).stdout.strip()
    if not commit:
        return "unknown"
    changes = subprocess.run(
        [git, "status", "--porcelain", "--", "src"],
        cwd=repo, capture_output=True, text=True, check=False,
    ).stdout.strip()
    return f"{commit} with uncommitted changes in src/" if changes else commit
