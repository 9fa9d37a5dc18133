"""Celery app for the benchmark, with a Redis broker and no result backend."""

from celery import Celery

from cpu_work import burn_cpu
from probe import worker_probe
from worker_apps import QUEUE_NAME, broker_url

app = Celery("bench", broker=broker_url())
app.conf.update(
    # No result backend and ignored results, because the other systems store no
    # results either.
    result_backend=None,
    task_ignore_result=True,
    # Acknowledge after the task body runs, which matches the at-least-once
    # delivery of Dramatiq and Conveyor.
    task_acks_late=True,
    task_default_queue=QUEUE_NAME,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(index: int) -> None:
    worker_probe().mark_done()


@app.task(name="bench.record_latency")
def record_latency(enqueued_at: float) -> None:
    worker_probe().record_latency(enqueued_at)


@app.task(name="bench.cpu_work")
def cpu_work(iterations: int) -> None:
    burn_cpu(iterations)
    worker_probe().mark_done()
