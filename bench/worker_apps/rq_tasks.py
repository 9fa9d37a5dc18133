"""RQ job functions for the benchmark.

RQ stores the dotted path of each function in the job, so the worker imports this
module by that path.
"""

from probe import worker_probe


def noop(index: int) -> None:
    worker_probe().mark_done()


def record_latency(enqueued_at: float) -> None:
    worker_probe().record_latency(enqueued_at)
