"""An app whose hooks record every call, for test_task_hooks.py."""

from __future__ import annotations

from typing import Any

from task_record import first_time, record

from conveyor import Conveyor, Reject, Task, TaskHandle, TaskRun
from conveyor.models import NewMessage

app = Conveyor()


@app.before_enqueue
def before_enqueue(task: Task, message: NewMessage) -> None:
    args = message.body["args"]
    # A hook may add headers; the runs below see them.
    message.headers = {**(message.headers or {}), "trace-id": f"trace-{args[0]}"}
    record("before_enqueue", task=task.name, args=args)


@app.after_enqueue
def after_enqueue(task: Task, message: NewMessage, handle: TaskHandle) -> None:
    record("after_enqueue", task=task.name, args=message.body["args"], id=handle.id)


@app.before_run
def before_run(run: TaskRun) -> None:
    record(
        "before_run", task=run.task_name, args=run.args, id=run.message_id,
        attempt=run.attempt, max_attempts=run.max_attempts, trace=run.headers.get("trace-id"),
    )


@app.before_run
def broken_before_run(run: TaskRun) -> None:
    if run.task_name == "hooks.with_broken_hook":
        raise RuntimeError("this hook is broken on purpose")


@app.after_run
def after_run(run: TaskRun, result: Any, error: BaseException | None) -> None:
    record(
        "after_run", task=run.task_name, args=run.args, id=run.message_id,
        result=result, error=None if error is None else type(error).__name__,
    )


@app.on_retry
def on_retry(run: TaskRun, error: str, delay_s: float) -> None:
    record("on_retry", task=run.task_name, args=run.args, id=run.message_id,
           error=error, delay_s=delay_s)


def on_dead_letter(run: TaskRun, error: str) -> None:
    record("on_dead_letter", task=run.task_name, args=run.args, id=run.message_id, error=error)


app.add_hook("on_dead_letter", on_dead_letter)


@app.task(queue="hooks", name="hooks.flaky", backoff={"base_s": 0.5, "jitter": False})
def flaky(value: int) -> int:
    if first_time(f"flaky-{value}"):
        raise ValueError(f"first attempt with {value} fails")
    return value * 10


@app.task(queue="hooks", name="hooks.doomed")
def doomed(value: int) -> None:
    raise Reject(f"{value} can never work")


@app.task(queue="hooks", name="hooks.with_broken_hook")
def with_broken_hook(value: int) -> int:
    return value + 1
