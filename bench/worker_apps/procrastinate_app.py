"""Procrastinate app for the benchmark, on the schema named by ``BENCH_PROCRASTINATE_CONNINFO``.

Procrastinate passes task arguments by keyword, so the harness defers
``noop(index=...)`` and ``record_latency(enqueued_at=...)``.
"""

import os

import procrastinate

from probe import worker_probe
from worker_apps import PROCRASTINATE_CONNINFO_ENV, QUEUE_NAME

# Up to 32 pooled connections, like the Conveyor SDK's HTTP pool, so W1's
# producer threads do not wait for one another's connection. The pool opens
# connections only as they are needed.
POOL_MAX_SIZE = 32

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ[PROCRASTINATE_CONNINFO_ENV], min_size=1, max_size=POOL_MAX_SIZE
    )
)


@app.task(name="bench.noop", queue=QUEUE_NAME)
def noop(index: int) -> None:
    worker_probe().mark_done()


@app.task(name="bench.record_latency", queue=QUEUE_NAME)
def record_latency(enqueued_at: float) -> None:
    worker_probe().record_latency(enqueued_at)
