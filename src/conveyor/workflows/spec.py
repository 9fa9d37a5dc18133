"""Build workflows in Python: `task.step(...)`, `chain(...)` and `group(...)`.

```python
flow = chain(fetch.step(url), group(resize.step(200), resize.step(800)), publish.step())
handle = flow.start()          # or app.start_workflow(flow)
handle.result(timeout_s=60)    # publish's return value
```

A step whose node has an input (every step but the first ones) gets that
input as its first positional argument: the previous chain element's
result, or the list of a group's results. The builders check what they can
before anything is sent: empty chains and groups, arguments that are not
JSON, the step limit, the nesting depth, and each call against its task's
signature (with the input counted as the first argument).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

from ..errors import ValidationError
from ..tasks import serialization
from .compiler import MAX_NESTING_DEPTH, MAX_WORKFLOW_STEPS

if TYPE_CHECKING:
    from ..tasks.app import Conveyor
    from ..tasks.task import Task
    from .handle import WorkflowHandle

# Stands for the input in a signature check; any JSON value would do.
_INPUT_PLACEHOLDER = None
STEP_OPTION_NAMES = ("queue", "priority", "max_attempts", "headers", "delay_s", "pass_result")

Node = Union["Step", "Chain", "Group"]


class Step:
    """One call of a task inside a workflow; build it with `task.step(*args, **kwargs)`."""

    step_count = 1
    depth = 1

    def __init__(
        self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any],
        options: dict[str, Any] | None = None,
    ) -> None:
        serialization.check_arguments(task.name, {"args": list(args), "kwargs": kwargs})
        self.task = task
        self.args = list(args)
        self.kwargs = dict(kwargs)
        self.step_options = dict(options or {})

    def __repr__(self) -> str:
        return f"<Step {self.task.name} args={self.args!r} kwargs={self.kwargs!r}>"

    def options(self, **options: Any) -> Step:
        """Return a copy with other options.

        Message options are queue, priority, max_attempts, headers and
        delay_s (seconds the message waits once posted). pass_result=False
        makes the step wait for its parents without receiving their result,
        as Celery's immutable signatures (`.si()`) do.
        """
        unknown = sorted(set(options) - set(STEP_OPTION_NAMES))
        if unknown:
            raise ValidationError(
                f"unknown step option {unknown[0]!r}; use one of {', '.join(STEP_OPTION_NAMES)}"
            )
        return Step(self.task, tuple(self.args), self.kwargs, {**self.step_options, **options})

    @property
    def app(self) -> Conveyor:
        return self.task.app

    @property
    def queue(self) -> str:
        return self.step_options.get("queue") or self.task.queue

    def to_spec(self, has_input: bool = False) -> dict[str, Any]:
        """Return the wire form, after checking the call against the task's signature."""
        pass_result = self.step_options.get("pass_result", True)
        receives_input = has_input and pass_result is not False
        args = [_INPUT_PLACEHOLDER, *self.args] if receives_input else self.args
        self.task.check_call(args, self.kwargs)
        task = self.task
        priority = self.step_options.get("priority", task.priority)
        max_attempts = self.step_options.get("max_attempts", task.max_attempts)
        step: dict[str, Any] = {
            "queue": self.queue,
            "body": serialization.build_body(task.name, self.args, self.kwargs),
            "priority": priority,
        }
        if max_attempts is not None:
            step["max_attempts"] = max_attempts
        if self.step_options.get("headers"):
            step["headers"] = self.step_options["headers"]
        for name in ("delay_s", "pass_result"):
            if self.step_options.get(name) is not None:
                step[name] = self.step_options[name]
        return {"step": step}

    def steps(self) -> list[Step]:
        return [self]

    def start(
        self, name: str | None = None, idempotency_key: str | None = None
    ) -> WorkflowHandle:
        """Start a workflow of this one step on its task's app; see Conveyor.start_workflow."""
        return self.app.start_workflow(self, name=name, idempotency_key=idempotency_key)


class _Composite:
    kind = ""

    def __init__(self, *nodes: Node) -> None:
        if not nodes:
            raise ValidationError(f"a {self.kind} needs at least one step, chain or group")
        for position, node in enumerate(nodes):
            if not isinstance(node, (Step, Chain, Group)):
                raise ValidationError(
                    f"{self.kind} member {position} is {node!r}; pass task.step(...), "
                    "chain(...) or group(...)"
                )
        self.nodes = list(nodes)
        self.step_count = sum(node.step_count for node in nodes)
        self.depth = 1 + max(node.depth for node in nodes)
        if self.step_count > MAX_WORKFLOW_STEPS:
            raise ValidationError(
                f"the workflow has {self.step_count} steps, above the limit of "
                f"{MAX_WORKFLOW_STEPS}; split it into several workflows"
            )
        if self.depth > MAX_NESTING_DEPTH:
            raise ValidationError(
                f"the workflow is nested {self.depth} levels deep, above the limit "
                f"of {MAX_NESTING_DEPTH}; flatten the chains and groups"
            )

    def __repr__(self) -> str:
        return f"{self.kind}({', '.join(repr(node) for node in self.nodes)})"

    @property
    def app(self) -> Conveyor:
        return self.steps()[0].app

    def steps(self) -> list[Step]:
        return [step for node in self.nodes for step in node.steps()]

    def start(
        self, name: str | None = None, idempotency_key: str | None = None
    ) -> WorkflowHandle:
        """Start the workflow on the app of its first step's task; see Conveyor.start_workflow."""
        return self.app.start_workflow(self, name=name, idempotency_key=idempotency_key)


class Chain(_Composite):
    """Nodes that run one after another, each receiving the previous one's result."""

    kind = "chain"

    def to_spec(self, has_input: bool = False) -> dict[str, Any]:
        specs = []
        for position, node in enumerate(self.nodes):
            specs.append(node.to_spec(has_input or position > 0))
        return {"chain": specs}


class Group(_Composite):
    """Nodes that run in parallel; the group's result is the list of their results."""

    kind = "group"

    def to_spec(self, has_input: bool = False) -> dict[str, Any]:
        return {"group": [node.to_spec(has_input) for node in self.nodes]}


def chain(*nodes: Node) -> Chain:
    """Run the nodes in order: each starts after the previous one succeeded, with its result."""
    return Chain(*nodes)


def group(*nodes: Node) -> Group:
    """Run the nodes in parallel; the next chain element receives the list of their results."""
    return Group(*nodes)
