"""Interface that the runner uses to drive every benchmarked system alike."""

from __future__ import annotations

import abc
import contextlib
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import redis

from probe import PROBE_PREFIX_ENV, PROBE_URL_ENV
from procs import ProcessGroup
from worker_apps import BROKER_URL_ENV

# Marks a Redis database as created by this harness, so that setup may flush it
# again on a later run. Setup rejects a non-empty database without this key.
OWNER_KEY = "conveyor-bench:owner"


class SystemUnavailable(Exception):
    """The system cannot be benchmarked here, for example because it is not installed."""


@dataclass
class BenchContext:
    """Settings and shared resources that the runner hands to each peer."""

    redis_url: str  # Redis server URL without a database number
    broker_db: int  # Redis database reserved for this peer's broker
    probe_url: str
    probe_prefix: str
    concurrency: int  # worker processes (or slots) that each system runs
    work_dir: Path  # private directory for SQLite files and other state
    log_dir: Path
    # PostgreSQL database URL on a loopback host, without options. Each
    # PostgreSQL-based system creates a schema of its own in it.
    postgres_url: str | None = None
    # Whether PostgreSQL-based systems run ANALYZE after each bulk post, in
    # place of the auto-analyze of a server whose autovacuum is on.
    postgres_analyze: bool = True

    @property
    def broker_url(self) -> str:
        return f"{self.redis_url.rstrip('/')}/{self.broker_db}"


class Peer(abc.ABC):
    """One benchmarked system.

    The runner calls ``setup`` once, then the post methods and
    ``open_producer`` with the workers stopped, ``purge``, ``start_workers``,
    ``stop_workers`` and finally ``cleanup``, which must run even after an
    error. Task names are ``noop`` (argument: an integer index) and
    ``record_latency`` (argument: the enqueue time from ``time.time()``).
    Peers with ``supports_cpu_drain`` also post ``cpu_work`` (argument: loop
    iterations), and peers with ``supports_batch_tasks`` post ``add_item``
    and the batch task ``add_items`` (argument: an integer item).
    """

    name: str  # identifier used on the command line and in the results
    label: str  # name shown in the report
    packages: tuple[str, ...]  # distributions whose versions the report lists
    batch_api: str  # the API that post_batch uses, for the report
    # How each W1 producer thread reaches the system, for the report.
    producer_client = (
        "one client shared by all threads; redis-py's connection pool gives "
        "each call in flight its own connection"
    )
    uses_redis_broker = True
    # Whether W4 (CPU-bound drain) runs for this system.
    supports_cpu_drain = False
    # Whether the batch comparison runs for this system.
    supports_batch_tasks = False

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx
        self.workers: ProcessGroup | None = None

    # Description for the report.

    def versions(self) -> dict[str, str]:
        found = {}
        for package in self.packages:
            try:
                found[package] = importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                found[package] = "not installed"
        return found

    @abc.abstractmethod
    def settings(self) -> dict[str, object]:
        """Return the worker command and options that affect the numbers."""

    # Lifecycle.

    def setup(self) -> None:
        if self.uses_redis_broker:
            claim_redis_db(self.ctx.broker_url)

    @abc.abstractmethod
    def post_one(self, task: str, args: tuple) -> None:
        """Enqueue one message with the system's single-message call."""

    @contextlib.contextmanager
    def open_producer(self) -> Iterator[Callable[[str, tuple], None]]:
        """Yield a function that posts like ``post_one``, for use by one producer thread.

        W1's concurrent mode calls this once in each of its threads. This
        default shares the peer's client, which must be safe to use from many
        threads at once, as redis-py's is. Subclasses override it where each
        producer should have a client or connection of its own, and close that
        on exit.
        """
        yield self.post_one

    @abc.abstractmethod
    def post_batch(self, task: str, args_list: list[tuple]) -> None:
        """Enqueue all messages with the system's batch API, or its closest equivalent."""

    def after_bulk_post(self) -> None:
        """Prepare the store for reads after many messages were posted at once.

        The runner calls this once W2's tasks are posted and before the
        workers start, and before each measurement of the backlog test.
        """

    @abc.abstractmethod
    def purge(self) -> None:
        """Remove every queued message. Called only while the workers are stopped."""

    @abc.abstractmethod
    def outstanding_messages(self) -> int:
        """Return the number of messages that are queued, or taken but not yet acknowledged."""

    # The backlog test, for systems that support it (``supports_backlog``).

    supports_backlog = False

    def restart_on_new_store(self) -> None:
        """Stop the workers and move the system onto a new, empty store."""
        raise NotImplementedError(f"{self.name} does not support the backlog test")

    def reserve_and_ack(self, max_messages: int) -> int:
        """Reserve up to ``max_messages`` ready messages, ack them and return how many there were."""
        raise NotImplementedError(f"{self.name} does not support the backlog test")

    def storage_sizes(self) -> dict:
        """Return the bytes on disk of the message table and its indexes."""
        raise NotImplementedError(f"{self.name} does not support the backlog test")

    def vacuum(self) -> bool:
        """Vacuum the message table if the store needs that to reuse space; return whether it did."""
        return False

    @abc.abstractmethod
    def worker_argv(self) -> list[str]:
        """Return the command line that starts the system's worker processes."""

    def worker_env(self) -> dict[str, str]:
        env = {
            PROBE_URL_ENV: self.ctx.probe_url,
            PROBE_PREFIX_ENV: self.ctx.probe_prefix,
        }
        if self.uses_redis_broker:
            env[BROKER_URL_ENV] = self.ctx.broker_url
        return env

    def start_workers(self) -> None:
        self.workers = ProcessGroup(
            f"{self.name} workers",
            self.worker_argv(),
            self.worker_env(),
            self.ctx.log_dir / f"{self.name}-workers.log",
        )

    def check_workers(self) -> None:
        """Raise RuntimeError if the worker processes have exited."""
        if self.workers is not None:
            self.workers.check_running()

    def stop_workers(self) -> None:
        if self.workers is not None:
            workers, self.workers = self.workers, None
            workers.stop()

    def cleanup(self) -> None:
        """Stop workers and delete the system's state. Safe to call more than once."""
        self.stop_workers()
        if self.uses_redis_broker:
            release_redis_db(self.ctx.broker_url)

    # Helpers for subclasses.

    def import_app(self, module_name: str) -> ModuleType:
        """Import a worker_apps module after exporting this peer's worker environment.

        The modules read their configuration at import time, so a module already
        imported for another peer is reloaded.
        """
        os.environ.update(self.worker_env())
        if module_name in sys.modules:
            return importlib.reload(sys.modules[module_name])
        return importlib.import_module(module_name)


def venv_script(name: str) -> str:
    """Return the path of a console script installed next to the running Python."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemUnavailable(f"command {name!r} not found in {path.parent}")
    return str(path)


def claim_redis_db(url: str) -> None:
    """Flush a Redis database and mark it as the harness's own.

    Raises RuntimeError if the database contains keys that the harness did not create.
    """
    client = redis.Redis.from_url(url)
    try:
        size = client.dbsize()
        if size and not client.exists(OWNER_KEY):
            raise RuntimeError(
                f"Redis database {url} contains {size} keys that this benchmark did "
                "not create; choose free databases with --redis-db-base"
            )
        client.flushdb()
        client.set(OWNER_KEY, "bench/run.py")
    finally:
        client.close()


def release_redis_db(url: str) -> None:
    """Flush a Redis database that ``claim_redis_db`` marked as the harness's own."""
    client = redis.Redis.from_url(url)
    try:
        if client.exists(OWNER_KEY):
            client.flushdb()
    finally:
        client.close()



def create_postgres_schema(ctx: BenchContext, prefix: str):
    """Create a schema for one system in the benchmark's PostgreSQL database.

    Returns a ``postgres.Schema``. Raises SystemUnavailable when no database
    is configured or the server cannot be reached, so the runner goes on with
    the other systems.
    """
    if ctx.postgres_url is None:
        raise SystemUnavailable("no PostgreSQL database configured; pass --postgres-url")
    try:
        import psycopg

        from postgres import Schema
    except ImportError as error:
        raise SystemUnavailable(f"cannot import psycopg: {error}") from error
    try:
        return Schema(ctx.postgres_url, prefix)
    except psycopg.OperationalError as error:
        raise SystemUnavailable(
            f"cannot create a schema in PostgreSQL at {ctx.postgres_url}: {error}"
        ) from error
