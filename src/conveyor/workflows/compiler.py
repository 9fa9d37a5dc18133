"""Validate a workflow's nested spec and compile it into a graph of steps.

A spec is a tree of three node kinds, in their wire form:

- `{"step": {"queue": Q, "body": B, "headers": {...}, "priority": P,
  "max_attempts": N}}`: one message to post (only `queue` and `body` are
  required).
- `{"chain": [node, ...]}`: each node runs after the previous one
  succeeded and receives its result. A chain's result is its last node's.
- `{"group": [node, ...]}`: the nodes run in parallel, each receiving the
  group's input. A group's result is the list of its nodes' results, in
  group order.

Compiling numbers the steps depth first and gives each one an input
expression: None (no input: a first step), an int (that step's result), or
a list of expressions (a list built from those results). The steps named
in a step's expression are its parents; it is posted once all of them
succeeded.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any, Union

import orjson

from ..errors import ValidationError
from ..validation import (
    MAX_HEADERS,
    MAX_PRIORITY,
    check_int,
    check_key,
    check_optional_duration,
)
from ..settings import MAX_ATTEMPTS_LIMIT, MAX_DELAY_S, validate_queue_name

# Steps in one workflow, counting every step of every nested chain and group.
MAX_WORKFLOW_STEPS = 1000
# Chains and groups inside each other, the outermost node counting as 1.
MAX_NESTING_DEPTH = 32
# Stored result of one step, as UTF-8 JSON. A larger result fails its step.
MAX_STEP_RESULT_BYTES = 1024 * 1024
# Input of one step, as UTF-8 JSON. A larger input fails the step unposted.
MAX_STEP_INPUT_BYTES = 8 * 1024 * 1024
# The spec as JSON, before compiling.
MAX_SPEC_BYTES = 16 * 1024 * 1024
MAX_NAME_LENGTH = 200
# Unicode categories a workflow name may not contain (see is_control_character).
CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
# Every step message carries these two headers, so a step's own headers
# may use at most MAX_HEADERS minus two.
WORKFLOW_HEADER = "conveyor-workflow"
STEP_HEADER = "conveyor-workflow-step"
STEP_KEYS = (
    "queue", "body", "headers", "priority", "max_attempts", "delay_s", "pass_result"
)

InputExpression = Union[None, int, list]


@dataclass
class CompiledStep:
    """One step of a compiled workflow: its message template and its place in the graph."""

    index: int
    queue: str
    body: Any
    headers: dict[str, str]
    priority: int
    max_attempts: int | None
    input_expression: InputExpression
    parents: list[int]
    children: list[int] = field(default_factory=list)
    # Where the step sits in the spec, such as `spec.chain[1].step`; empty
    # for a step rebuilt from its stored row.
    path: str = ""
    # Seconds the step's message waits in its queue before it is ready.
    delay_s: float | None = None

    @property
    def label(self) -> str:
        """Return the name errors use for the step: its spec path, else `step N`."""
        return self.path or f"step {self.index}"

    @property
    def task(self) -> str | None:
        """Return the task name when the body is a task call, else None."""
        return task_name(self.body)


@dataclass
class CompiledWorkflow:
    """The steps of a workflow in index order and the expression of its result."""

    name: str | None
    steps: list[CompiledStep]
    result_expression: InputExpression
    # A start with a key that a stored workflow has returns that workflow.
    idempotency_key: str | None = None

    @property
    def first_steps(self) -> list[CompiledStep]:
        return [step for step in self.steps if not step.parents]


def compile_workflow(
    spec: Any, name: Any = None, idempotency_key: Any = None
) -> CompiledWorkflow:
    """Validate `spec` (the wire form above) and compile it.

    Raises ValidationError naming the node's path (for example
    `spec.chain[1].group[0]`) for an invalid node, and for more than
    MAX_WORKFLOW_STEPS steps or nesting deeper than MAX_NESTING_DEPTH.
    """
    _check_name(name)
    key = _check_idempotency_key(idempotency_key)
    _check_spec_size(spec)
    steps: list[CompiledStep] = []
    result = _compile_node(spec, None, steps, "spec", 1)
    for step in steps:
        for parent in step.parents:
            steps[parent].children.append(step.index)
    return CompiledWorkflow(name, steps, result, key)


def task_name(body: Any) -> str | None:
    """Return the task name of a task-call body `{"task", "args", "kwargs"}`, else None."""
    if isinstance(body, dict) and isinstance(body.get("task"), str):
        if isinstance(body.get("args", []), list):
            return body["task"]
    return None


def parents_of(expression: InputExpression) -> list[int]:
    """Return the step indexes an input expression names, sorted and unique."""
    found: set[int] = set()
    pending = [expression]
    while pending:
        item = pending.pop()
        if isinstance(item, int):
            found.add(item)
        elif isinstance(item, list):
            pending.extend(item)
    return sorted(found)


def evaluate(expression: InputExpression, results: dict[int, Any]) -> Any:
    """Build the value of an input expression from the steps' results."""
    if isinstance(expression, int):
        return results[expression]
    if isinstance(expression, list):
        return [evaluate(item, results) for item in expression]
    return None


def step_body(body: Any, expression: InputExpression, value: Any) -> Any:
    """Return the body to post: a task call gets the input prepended to its args.

    Any other body is posted unchanged. Its consumer reads the input from
    the workflow's step (GET /v1/workflows/{id}), named by the step headers.
    """
    if expression is None or task_name(body) is None:
        return body
    return {**body, "args": [value, *body.get("args", [])]}


# Validation ----------------------------------------------------------------


def _check_name(name: Any) -> None:
    if name is None:
        return
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ValidationError(
            f"invalid workflow name {name!r}: use a string of 1 to {MAX_NAME_LENGTH} "
            "characters, or leave it out"
        )
    control = next((char for char in name if is_control_character(char)), None)
    if control is not None:
        raise ValidationError(
            f"invalid workflow name {name!r}: it contains the control character "
            f"{control!r}; use printable characters only"
        )


def _check_idempotency_key(key: Any) -> str | None:
    checked = check_key("idempotency_key", key)
    if checked is not None and any(is_control_character(char) for char in checked):
        raise ValidationError(
            f"invalid idempotency_key {checked!r}: it contains a control character; "
            "use printable characters only"
        )
    return checked


def is_control_character(char: str) -> bool:
    """Return True for a control character or a line or paragraph separator.

    These are the Unicode categories Cc (C0, DEL and C1, ESC and newline
    included), Zl and Zp, which a terminal would act on instead of showing.
    """
    return unicodedata.category(char) in CONTROL_CATEGORIES


def _check_spec_size(spec: Any) -> None:
    try:
        size = len(orjson.dumps(spec))
    except TypeError as exc:
        raise ValidationError(
            f"the workflow spec is not JSON ({exc}); step bodies, args and "
            "kwargs must be JSON values"
        ) from exc
    if size > MAX_SPEC_BYTES:
        raise ValidationError(
            f"the workflow spec is {size} bytes as JSON, above the limit of "
            f"{MAX_SPEC_BYTES}; pass large data by reference"
        )


def _compile_node(
    node: Any, incoming: InputExpression, steps: list[CompiledStep], path: str, depth: int
) -> InputExpression:
    """Append the node's steps and return the expression of its result."""
    if depth > MAX_NESTING_DEPTH:
        raise ValidationError(
            f"{path} is nested {depth} levels deep, above the limit of "
            f"{MAX_NESTING_DEPTH}; flatten the chains and groups"
        )
    if not isinstance(node, dict) or len(node) != 1:
        raise ValidationError(
            f"{path} must be an object with exactly one key: 'step', 'chain' or 'group'"
        )
    kind, content = next(iter(node.items()))
    if kind == "step":
        return _compile_step(content, incoming, steps, path)
    if kind not in ("chain", "group"):
        raise ValidationError(
            f"{path} has unknown kind {kind!r}; use 'step', 'chain' or 'group'"
        )
    if not isinstance(content, list) or not content:
        raise ValidationError(f"{path}.{kind} must be a non-empty list of nodes")
    if kind == "chain":
        current = incoming
        for position, child in enumerate(content):
            current = _compile_node(child, current, steps, f"{path}.chain[{position}]", depth + 1)
        return current
    return [
        _compile_node(child, incoming, steps, f"{path}.group[{position}]", depth + 1)
        for position, child in enumerate(content)
    ]


def _compile_step(
    content: Any, incoming: InputExpression, steps: list[CompiledStep], path: str
) -> int:
    if len(steps) >= MAX_WORKFLOW_STEPS:
        raise ValidationError(
            f"the workflow has more than {MAX_WORKFLOW_STEPS} steps; split it into "
            "several workflows"
        )
    if not isinstance(content, dict):
        raise ValidationError(f"{path}.step must be an object with 'queue' and 'body'")

    unknown = sorted(str(key) for key in content if key not in STEP_KEYS)
    if unknown:
        raise ValidationError(
            f"{path}.step has unknown key {unknown[0]!r}; known keys are: "
            f"{', '.join(STEP_KEYS)}"
        )
    if "body" not in content:
        raise ValidationError(f"{path}.step has no 'body'; give the message body (JSON)")

    try:
        queue = validate_queue_name(content.get("queue"))
        delay_s = check_optional_duration("delay_s", content.get("delay_s"), 0.0, MAX_DELAY_S)
    except ValidationError as exc:
        raise ValidationError(f"{path}.step: {exc.detail}") from exc
    _check_task_body(content["body"], path)
    # A step that does not receive its parents' result still waits for them:
    # its parents stay, and its input expression is empty.
    expression = incoming if _check_pass_result(content.get("pass_result"), path) else None

    index = len(steps)
    steps.append(
        CompiledStep(
            index=index,
            queue=queue,
            body=content["body"],
            headers=_check_headers(content.get("headers"), path),
            priority=check_int(
                f"{path}.step.priority", content.get("priority", 0), -MAX_PRIORITY, MAX_PRIORITY
            ),
            max_attempts=_check_attempts(content.get("max_attempts"), path),
            input_expression=expression,
            parents=parents_of(incoming),
            path=f"{path}.step",
            delay_s=delay_s,
        )
    )
    return index


def _check_task_body(body: Any, path: str) -> None:
    """Reject a task-call body whose args is not a list or kwargs not an object.

    Such a body would be posted as a plain body without the step's input.
    """
    if not isinstance(body, dict) or not isinstance(body.get("task"), str):
        return
    if not isinstance(body.get("args", []), list):
        raise ValidationError(
            f"{path}.step.body.args must be a list of positional arguments, got "
            f"{type(body['args']).__name__}"
        )
    if not isinstance(body.get("kwargs", {}), dict):
        raise ValidationError(
            f"{path}.step.body.kwargs must be an object of keyword arguments, got "
            f"{type(body['kwargs']).__name__}"
        )


def _check_pass_result(value: Any, path: str) -> bool:
    if value is None:
        return True
    if not isinstance(value, bool):
        raise ValidationError(f"{path}.step.pass_result must be true or false, got {value!r}")
    return value


def _check_headers(headers: Any, path: str) -> dict[str, str]:
    if headers is None:
        return {}
    limit = MAX_HEADERS - 2
    if not isinstance(headers, dict) or len(headers) > limit:
        raise ValidationError(
            f"{path}.step.headers must be an object of at most {limit} string entries"
        )
    reserved = {WORKFLOW_HEADER, STEP_HEADER} & {str(key).lower() for key in headers}
    if reserved:
        raise ValidationError(
            f"{path}.step.headers sets {sorted(reserved)[0]!r}, which the workflow "
            "sets itself; remove it"
        )
    return headers


def _check_attempts(value: Any, path: str) -> int | None:
    if value is None:
        return None
    return check_int(f"{path}.step.max_attempts", value, 1, MAX_ATTEMPTS_LIMIT)
