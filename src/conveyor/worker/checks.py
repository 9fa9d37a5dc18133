"""Checks of the worker's options, made before it starts.

Each raises ValidationError naming the bad value and the fix, so a worker
with an impossible configuration stops before it leases anything.
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any

from ..errors import ValidationError
from ..settings import validate_queue_name
from ..tasks.app import Conveyor
from ..tasks.task import Task

logger = logging.getLogger(__name__)


def check_queues(app: Conveyor, queues: list[str] | None) -> list[str]:
    chosen = list(dict.fromkeys(queues)) if queues else app.queues()
    if not chosen:
        raise ValidationError(
            "the app has no tasks, so the worker has no queues to serve; "
            "register tasks with @app.task or name queues explicitly"
        )
    used = set(app.queues())
    for queue in chosen:
        validate_queue_name(queue)
        if queue not in used:
            logger.warning(
                "Queue %s has no task of this app; its messages will fail as "
                "unknown tasks. Check the --queues list for a typo",
                queue,
            )
    return chosen


def check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"invalid {name} {value!r}: use an integer from {low} to {high}")
    return value


def check_seconds(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValidationError(f"invalid {name} {value!r}: expected a number of seconds")
    if not low <= value <= high:
        raise ValidationError(f"invalid {name} {value!r}: use {low:g} to {high:g} seconds")
    return float(value)


def check_child_limit(name: str, value: Any, high: int, processes: int) -> int | None:
    """Check a per-child limit, which only a worker with child processes can apply."""
    if value is None:
        return None
    if not processes:
        raise ValidationError(
            f"{name} {value!r} applies to child processes, but the worker runs "
            "tasks in its own process; set processes (--processes N) or drop it"
        )
    return check_int(name, value, 1, high)


def check_no_hard_timeouts(tasks: list[Task]) -> None:
    """Reject hard timeouts in a worker without child processes, which cannot kill a thread."""
    names = sorted(task.name for task in tasks if task.hard_timeout_s is not None)
    if names:
        raise ValidationError(
            f"task {names[0]} has hard_timeout_s, which only a worker with child "
            "processes can enforce; start the worker with --processes N, or serve "
            "this task's queue from a worker that has them"
        )


def resolve_app_path(app: Conveyor, app_path: str | None) -> str:
    """Return MODULE:APP for child processes to import, found among loaded modules if not given."""
    if app_path:
        return app_path
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name in ("__main__", "__mp_main__"):
            continue
        for attribute, value in list(getattr(module, "__dict__", {}).items()):
            if value is app:
                return f"{module_name}:{attribute}"
    raise ValidationError(
        "child processes must import the app, but it is not an attribute of an "
        "importable module; define it in a module and pass app_path='module:app'"
    )


def warn_about_large_batches(tasks: list[Task], held_limit: int) -> None:
    for task in tasks:
        if task.batch_size is not None and task.batch_size > held_limit:
            logger.warning(
                "Batch task %s has batch_size %d, but this worker leases at most %d "
                "messages at once (concurrency + prefetch), so its batches stay "
                "smaller; raise --prefetch to fill them",
                task.name, task.batch_size, held_limit,
            )
