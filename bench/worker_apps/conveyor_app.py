"""Conveyor app for the benchmark, talking to the server at ``BENCH_CONVEYOR_URL``."""

import os

from conveyor import Conveyor

from cpu_work import burn_cpu
from probe import worker_probe
from worker_apps import BATCH_TASK_SIZE, BATCH_TASK_WAIT_S, CONVEYOR_URL_ENV, QUEUE_NAME

app = Conveyor(os.environ[CONVEYOR_URL_ENV])


# result_ttl_s=0 keeps no results, like the other systems here.
@app.task(queue=QUEUE_NAME, result_ttl_s=0)
def noop(index: int) -> None:
    worker_probe().mark_done()


@app.task(queue=QUEUE_NAME, result_ttl_s=0)
def record_latency(enqueued_at: float) -> None:
    worker_probe().record_latency(enqueued_at)


@app.task(queue=QUEUE_NAME, result_ttl_s=0)
def cpu_work(iterations: int) -> None:
    burn_cpu(iterations)
    worker_probe().mark_done()


# The two tasks of the batch comparison do the same work per item: add it to
# a sum that the probe stores, in one Redis round trip per call.
@app.task(queue=QUEUE_NAME, result_ttl_s=0)
def add_item(item: int) -> None:
    worker_probe().mark_done(items=1, value_sum=item)


@app.task(queue=QUEUE_NAME, result_ttl_s=0, batch_size=BATCH_TASK_SIZE,
          batch_wait_s=BATCH_TASK_WAIT_S)
def add_items(items: list[int]) -> None:
    # None succeeds every message of the batch without a result.
    worker_probe().mark_done(items=len(items), value_sum=sum(items))
