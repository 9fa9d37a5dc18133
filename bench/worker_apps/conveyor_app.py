"""Conveyor app for the benchmark, talking to the server at ``BENCH_CONVEYOR_URL``."""

import os

from conveyor import Conveyor

from probe import worker_probe
from worker_apps import CONVEYOR_URL_ENV, QUEUE_NAME

app = Conveyor(os.environ[CONVEYOR_URL_ENV])


# result_ttl_s=0 keeps no results, like the other systems here.
@app.task(queue=QUEUE_NAME, result_ttl_s=0)
def noop(index: int) -> None:
    worker_probe().mark_done()


@app.task(queue=QUEUE_NAME, result_ttl_s=0)
def record_latency(enqueued_at: float) -> None:
    worker_probe().record_latency(enqueued_at)
