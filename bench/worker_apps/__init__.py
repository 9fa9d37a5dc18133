"""Task modules that the benchmarked systems' worker processes import.

Each module defines the same two tasks for one system: ``noop(index)`` counts a
completion and ``record_latency(enqueued_at)`` stores the pickup latency, both
through ``probe.worker_probe()``. The systems that run W4 also define
``cpu_work(iterations)``, which runs ``cpu_work.burn_cpu`` before it counts a
completion. Conveyor's app adds the two tasks of the batch comparison. The
harness configures the modules with environment variables before it imports
them or starts a worker.
"""

import os

BROKER_URL_ENV = "BENCH_BROKER_URL"
CONVEYOR_URL_ENV = "BENCH_CONVEYOR_URL"
HUEY_STORAGE_ENV = "BENCH_HUEY_STORAGE"  # "sqlite" or "redis"
HUEY_SQLITE_PATH_ENV = "BENCH_HUEY_SQLITE_PATH"
# libpq URL of the PostgreSQL schema that the harness created for Procrastinate.
PROCRASTINATE_CONNINFO_ENV = "BENCH_PROCRASTINATE_CONNINFO"
QUEUE_NAME = "bench"
# The batch task of the batch comparison takes up to this many items per call
# and waits at most this many seconds for a batch to fill.
BATCH_TASK_SIZE = 100
BATCH_TASK_WAIT_S = 0.05


def broker_url() -> str:
    """Return the broker URL that the harness set for this system."""
    try:
        return os.environ[BROKER_URL_ENV]
    except KeyError:
        raise RuntimeError(
            f"environment variable {BROKER_URL_ENV} is missing; "
            "start workers through bench/run.py"
        ) from None
