"""Calling task functions: one call per unit of runs, hooks around it, and a
result per run.

A unit is one message of a plain task, or up to batch_size messages of a
batch task, which the function gets as one list of items. The same code
runs in the worker's threads, on its event loop and in child processes.

Around the call, from before_run to after_run, the unit's log records are
captured and, for a one-message unit, `conveyor.current_run()` returns its
run. Between the call and after_run, `on_success` may store completion
records (see completions.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..tasks.current import running
from ..tasks.hooks import Hooks, TaskRun
from ..tasks.serialization import check_result
from ..tasks.task import Task
from .interrupt import CallSlot
from .jobs import ResultNotJSON, timeout_error
from .run_control import capturing


@dataclass(slots=True)
class ItemResult:
    """The result of one run: its value, or the exception that failed it."""

    value: Any = None
    error: BaseException | None = None


class BatchResultError(TypeError):
    """A batch task returned something other than one entry per item."""


OnSuccess = Callable[[list[TaskRun], list[ItemResult]], None]


def run_sync_unit(
    task: Task, runs: list[TaskRun], slot: CallSlot, on_success: OnSuccess | None = None
) -> tuple[list[ItemResult], float]:
    """Call a sync task once for the runs in this thread; return their results and the ms taken.

    After an interrupt at the soft timeout every run fails with
    TaskTimeout, whatever the function did next.
    """
    hooks = task.app.hooks
    with capturing(runs), running(current_of(task, runs)):
        _fire_before(hooks, runs)
        started = time.perf_counter()
        try:
            if task.timeout_s is None:
                # Nothing can interrupt this call, so it skips the slot's locks.
                returned = call_function(task, runs)
            else:
                returned = slot.call(call_function, task, runs)
            results = split_results(task, runs, returned)
        except BaseException as exc:  # noqa: BLE001 - any failure of task code is reported
            results = [ItemResult(error=exc) for _ in runs]
        if slot.interrupted:
            results = [ItemResult(error=timeout_error(task)) for _ in runs]
        duration_ms = _elapsed_ms(started)
        if on_success is not None:
            on_success(runs, results)
        _fire_after(hooks, runs, results)
    return results, duration_ms


async def run_async_unit(
    task: Task, runs: list[TaskRun], on_success: OnSuccess | None = None
) -> tuple[list[ItemResult], float]:
    """Await an async task once for the runs, cancelling it after timeout_s.

    While the coroutine runs, each run's control has `in_call` set, so a
    cancel request may cancel the asyncio task then and only then.
    """
    hooks = task.app.hooks
    with capturing(runs), running(current_of(task, runs)):
        _fire_before(hooks, runs)
        started = time.perf_counter()
        _set_in_call(runs, True)
        try:
            returned = await _await_with_timeout(task, call_function(task, runs))
            results = split_results(task, runs, returned)
        except BaseException as exc:  # noqa: BLE001 - includes CancelledError, reported as a failure
            results = [ItemResult(error=exc) for _ in runs]
        finally:
            _set_in_call(runs, False)
        duration_ms = _elapsed_ms(started)
        if on_success is not None:
            await asyncio.to_thread(on_success, runs, results)
        _fire_after(hooks, runs, results)
    return results, duration_ms


def current_of(task: Task, runs: list[TaskRun]) -> TaskRun | None:
    """Return the run that `conveyor.current_run()` gives: None for a batch call."""
    return None if task.is_batch else runs[0]


def _set_in_call(runs: list[TaskRun], in_call: bool) -> None:
    for run in runs:
        if run.control is not None:
            run.control.in_call = in_call


def call_function(task: Task, runs: list[TaskRun]) -> Any:
    """Call the function: with the list of items for a batch task, else with the one call."""
    if task.is_batch:
        return task.fn([run.args[0] for run in runs])
    run = runs[0]
    return task.fn(*run.args, **run.kwargs)


def split_results(task: Task, runs: list[TaskRun], returned: Any) -> list[ItemResult]:
    """Turn a return value into one result per run.

    A batch task returns None (every item succeeded with no value) or a
    list with one entry per item: a value, or an exception instance that
    fails that item alone.
    """
    if not task.is_batch:
        return [_checked(task, returned)]
    if returned is None:
        return [ItemResult() for _ in runs]
    if not isinstance(returned, (list, tuple)) or len(returned) != len(runs):
        error = BatchResultError(_describe_bad_batch(task, runs, returned))
        return [ItemResult(error=error) for _ in runs]
    return [
        ItemResult(error=entry) if isinstance(entry, BaseException) else _checked(task, entry)
        for entry in returned
    ]


def _describe_bad_batch(task: Task, runs: list[TaskRun], returned: Any) -> str:
    if isinstance(returned, (list, tuple)):
        got = f"{len(returned)} entries"
    else:
        got = f"a {type(returned).__name__}"
    return (
        f"batch task {task.name} returned {got} for {len(runs)} items; return a "
        "list with one entry per item (a value or an exception), or None"
    )


def _checked(task: Task, value: Any) -> ItemResult:
    if value is None:
        return ItemResult()
    try:
        check_result(task.name, value)
    except TypeError as exc:
        return ItemResult(error=ResultNotJSON(str(exc)))
    return ItemResult(value=value)


async def _await_with_timeout(task: Task, coroutine: Any) -> Any:
    if task.timeout_s is None:
        return await coroutine
    deadline = asyncio.timeout(task.timeout_s)
    try:
        async with deadline:
            return await coroutine
    except TimeoutError:
        # A TimeoutError that the task raised itself is its own failure.
        if deadline.expired():
            raise timeout_error(task) from None
        raise


def _fire_before(hooks: Hooks, runs: list[TaskRun]) -> None:
    if hooks.before_run:
        for run in runs:
            hooks.fire("before_run", run)


def _fire_after(hooks: Hooks, runs: list[TaskRun], results: list[ItemResult]) -> None:
    if hooks.after_run:
        for run, result in zip(runs, results):
            hooks.fire("after_run", run, result.value, result.error)


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
