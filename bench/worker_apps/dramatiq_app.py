"""Dramatiq actors for the benchmark, with a Redis broker and default middleware."""

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from probe import worker_probe
from worker_apps import QUEUE_NAME, broker_url

broker = RedisBroker(url=broker_url(), namespace="bench-dramatiq")
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE_NAME, actor_name="bench_noop")
def noop(index: int) -> None:
    worker_probe().mark_done()


@dramatiq.actor(queue_name=QUEUE_NAME, actor_name="bench_record_latency")
def record_latency(enqueued_at: float) -> None:
    worker_probe().record_latency(enqueued_at)
