"""The task message body and the JSON check on task arguments and results.

A task message body is `{"task": NAME, "args": [...], "kwargs": {...}}`.
Arguments and results must be plain JSON: dicts with string keys, lists,
tuples, strings, integers, finite floats, booleans and None. Tuples arrive
as lists, and subclasses of those types (IntEnum, StrEnum, named tuples)
arrive as their base JSON type. NaN and Infinity are rejected because JSON
has no form for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ValidationError

_SCALARS = (str, int, bool, type(None))


def find_non_json(value: Any, path: str) -> tuple[str, str] | None:
    """Return (path, reason) of the first part of value that is not JSON, or None.

    The path extends `path` with `[index]` and `['key']` steps, so an error
    can point at the exact nested value.
    """
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return path, f"{value!r} has no JSON form"
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = find_non_json(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if isinstance(value, dict):
        return _find_non_json_in_dict(value, path)
    return path, f"type {type(value).__name__} is not a JSON type"


def _find_non_json_in_dict(value: dict, path: str) -> tuple[str, str] | None:
    for key, item in value.items():
        if not isinstance(key, str):
            return path, f"key {key!r} of type {type(key).__name__} is not a string"
        found = find_non_json(item, f"{path}[{key!r}]")
        if found is not None:
            return found
    return None


def check_arguments(task_name: str, arguments: dict[str, Any]) -> None:
    """Raise ValidationError naming the first argument that is not JSON.

    `arguments` maps parameter names to the values bound to them.
    """
    for name, value in arguments.items():
        found = find_non_json(value, name)
        if found is not None:
            path, reason = found
            raise ValidationError(
                f"argument {path} of task {task_name!r} is not JSON: {reason}; "
                "pass dicts with string keys, lists, strings, numbers, booleans "
                "or None, and convert other values (for example a datetime to "
                "an ISO string) before enqueueing"
            )


def check_result(task_name: str, value: Any) -> None:
    """Raise TypeError if a task's return value is not JSON."""
    found = find_non_json(value, "result")
    if found is not None:
        path, reason = found
        raise TypeError(
            f"{path} of task {task_name!r} is not JSON: {reason}; return "
            "dicts with string keys, lists, strings, numbers, booleans or None"
        )


def build_body(task_name: str, args: tuple | list, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return the message body that runs task_name with these arguments."""
    return {"task": task_name, "args": list(args), "kwargs": kwargs}


@dataclass(slots=True)
class TaskBody:
    """A decoded task message body."""

    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]


def parse_body(body: Any) -> TaskBody:
    """Decode a task message body; raise ValueError if it is not one."""
    if not isinstance(body, dict):
        raise ValueError(
            f"body of type {type(body).__name__} is not a task call; expected "
            '{"task": NAME, "args": [...], "kwargs": {...}}'
        )
    name = body.get("task")
    args = body.get("args", [])
    kwargs = body.get("kwargs", {})
    if not isinstance(name, str) or not name:
        raise ValueError('body has no "task" string that names the task')
    if not isinstance(args, list):
        raise ValueError(f'"args" of task {name!r} must be a list')
    if not isinstance(kwargs, dict):
        raise ValueError(f'"kwargs" of task {name!r} must be an object')
    return TaskBody(name, args, kwargs)
