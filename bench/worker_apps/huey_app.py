"""Huey instance for the benchmark, on SQLite or Redis storage.

``BENCH_HUEY_STORAGE`` selects the storage: ``sqlite`` uses the file named by
``BENCH_HUEY_SQLITE_PATH`` and ``redis`` uses ``BENCH_BROKER_URL``.
"""

import os

from huey import RedisHuey, SqliteHuey

from probe import worker_probe
from worker_apps import HUEY_SQLITE_PATH_ENV, HUEY_STORAGE_ENV, QUEUE_NAME, broker_url


def _build_huey():
    storage = os.environ.get(HUEY_STORAGE_ENV)
    # results=False because the other systems store no results either.
    if storage == "sqlite":
        return SqliteHuey(QUEUE_NAME, filename=os.environ[HUEY_SQLITE_PATH_ENV], results=False)
    if storage == "redis":
        return RedisHuey(QUEUE_NAME, url=broker_url(), results=False)
    raise RuntimeError(f"invalid {HUEY_STORAGE_ENV}={storage!r}: expected 'sqlite' or 'redis'")


huey = _build_huey()


@huey.task(name="bench.noop")
def noop(index: int) -> None:
    worker_probe().mark_done()


@huey.task(name="bench.record_latency")
def record_latency(enqueued_at: float) -> None:
    worker_probe().record_latency(enqueued_at)
