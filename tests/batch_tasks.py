"""Batch tasks for test_batch_tasks.py, one queue per mode of running them."""

from __future__ import annotations

from task_record import first_time, record

from conveyor import Conveyor

app = Conveyor()

FAST_RETRY = {"base_s": 0.1, "jitter": False}
# These items fail on their first attempt only.
FAIL_ONCE = {7, 42, 77}


def double_items(items: list[int]) -> list[object]:
    record("call", items=items)
    return [
        ValueError(f"item {item} failed") if item in FAIL_ONCE and first_time(f"item-{item}")
        else item * 2
        for item in items
    ]


@app.task(queue="batch-sync", name="batch.double", batch_size=25, batch_wait_s=1.0,
          backoff=FAST_RETRY)
def double(items: list[int]) -> list[object]:
    return double_items(items)


@app.task(queue="batch-async", name="batch.double_async", batch_size=25, batch_wait_s=1.0,
          backoff=FAST_RETRY)
async def double_async(items: list[int]) -> list[object]:
    return double_items(items)


@app.task(queue="batch-raise", name="batch.explode", batch_size=5, batch_wait_s=2.0,
          max_attempts=1)
def explode(items: list[str]) -> None:
    record("call", items=items)
    raise RuntimeError("the whole batch failed")


@app.task(queue="batch-raise", name="batch.short", batch_size=5, batch_wait_s=2.0,
          max_attempts=1)
def short(items: list[str]) -> list[str]:
    return items[:-1]
