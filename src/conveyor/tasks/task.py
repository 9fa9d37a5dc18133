"""A task: a decorated function that can run here or be enqueued for a worker.

`task(*args)` calls the function directly. `task.enqueue(*args)` posts a
message `{"task": name, "args": [...], "kwargs": {...}}` to the task's queue
and returns a TaskHandle. Arguments are bound to the function's signature and
checked for JSON at enqueue time, so a call that could never run fails in the
caller, with nothing posted.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..models import NewMessage
from ..validation import MAX_POST_BATCH
from . import serialization
from .handle import TaskHandle
from .options import (
    ENQUEUE_OPTION_NAMES,
    Backoff,
    EnqueueOptions,
    check_option_names,
    to_delay_s,
    to_timestamp,
)

if TYPE_CHECKING:
    from .app import Conveyor
    from ..workflows.spec import Step

_NO_OPTIONS = EnqueueOptions()


class Task:
    """A registered task function and its definition options.

    Attributes: `name`, `queue`, `max_attempts` (None: the queue's),
    `backoff` (None: the queue's), `timeout_s` (None: no limit),
    `result_ttl_s` (0: keep no result), `permanent_errors`, `priority`,
    `hard_timeout_s` (None: no limit), `batch_size` (None: not a batch
    task), `batch_wait_s`, `is_async`, `is_batch`.
    """

    def __init__(
        self,
        app: Conveyor,
        fn: Callable[..., Any],
        name: str,
        queue: str,
        max_attempts: int | None,
        backoff: Backoff | None,
        timeout_s: float | None,
        result_ttl_s: float,
        permanent_errors: tuple[type[BaseException], ...],
        priority: int,
        hard_timeout_s: float | None = None,
        batch_size: int | None = None,
        batch_wait_s: float = 0.0,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout_s = timeout_s
        self.result_ttl_s = result_ttl_s
        self.permanent_errors = permanent_errors
        self.priority = priority
        self.hard_timeout_s = hard_timeout_s
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.is_batch = batch_size is not None
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly, in this process, without a queue."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    # Enqueue -------------------------------------------------------------

    def options(self, **options: Any) -> TaskWithOptions:
        """Return an enqueuer with per-call message options.

        Keys: priority, dedup_id, idempotency_key, delay_s, not_before,
        group, headers, max_attempts, retention_s; see EnqueueOptions.
        """
        check_option_names("options()", options, ENQUEUE_OPTION_NAMES)
        return TaskWithOptions(self, EnqueueOptions(**options))

    def enqueue(
        self, /, *args: Any, idempotency_key: str | None = None, **kwargs: Any
    ) -> TaskHandle:
        """Post one call of this task and return its handle.

        Arguments must be JSON values; tuples arrive in the task as lists.
        `idempotency_key` is a message option, never a function argument:
        within the queue's dedup window a repeated key returns the first
        call's handle, and a worker that finished the call records its
        result before the ack, so a lost ack does not run it twice.
        """
        options = _NO_OPTIONS
        if idempotency_key is not None:
            options = EnqueueOptions(idempotency_key=idempotency_key)
        return TaskWithOptions(self, options).enqueue(*args, **kwargs)

    def enqueue_at(self, when: Any, /, *args: Any, **kwargs: Any) -> TaskHandle:
        """Post a call that becomes ready at `when` (aware datetime or Unix seconds)."""
        return TaskWithOptions(self, _NO_OPTIONS).enqueue_at(when, *args, **kwargs)

    def enqueue_in(self, delay: Any, /, *args: Any, **kwargs: Any) -> TaskHandle:
        """Post a call that becomes ready after `delay` (timedelta or seconds)."""
        return TaskWithOptions(self, _NO_OPTIONS).enqueue_in(delay, *args, **kwargs)

    def enqueue_many(
        self, calls: Iterable[tuple[Sequence[Any], dict[str, Any] | None]]
    ) -> list[TaskHandle]:
        """Post many calls given as (args, kwargs) pairs; see TaskWithOptions.enqueue_many."""
        return TaskWithOptions(self, _NO_OPTIONS).enqueue_many(calls)

    def step(self, /, *args: Any, **kwargs: Any) -> Step:
        """Return a workflow step that calls this task; see conveyor.chain and group.

        A step after the first in its chain receives the previous result as
        an extra first positional argument.
        """
        from ..workflows.spec import Step

        return Step(self, args, kwargs)

    # Building messages ---------------------------------------------------

    def build_message(
        self, args: Sequence[Any], kwargs: dict[str, Any], options: EnqueueOptions
    ) -> NewMessage:
        """Check one call against the signature and JSON rules and build its message."""
        self.check_call(args, kwargs)
        max_attempts = options.max_attempts or self.max_attempts
        priority = self.priority if options.priority is None else options.priority
        return NewMessage(
            body=serialization.build_body(self.name, args, kwargs),
            headers=options.headers,
            priority=priority,
            delay_s=options.delay_s,
            not_before=options.not_before,
            group=options.group,
            dedup_id=options.dedup_id,
            retention_s=options.retention_s,
            max_attempts=max_attempts,
            idempotency_key=options.idempotency_key,
        )

    def check_call(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Raise ValidationError unless the arguments fit the signature and are JSON.

        A batch task takes exactly one item per message.
        """
        if self.is_batch:
            self._check_batch_item(args, kwargs)
            return
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ValidationError(
                f"arguments do not match task {self.name!r}{self.signature}: {exc}"
            ) from exc
        serialization.check_arguments(self.name, bound.arguments)


    def _check_batch_item(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        if len(args) != 1 or kwargs:
            raise ValidationError(
                f"batch task {self.name!r} takes one item per message, got "
                f"{len(args)} positional and {len(kwargs)} keyword arguments; "
                "call enqueue(item), with a dict or list as the item if it has "
                "several fields"
            )
        serialization.check_arguments(self.name, {"item": args[0]})


class TaskWithOptions:
    """A task with per-call options, ready to enqueue; see Task.options."""

    def __init__(self, task: Task, options: EnqueueOptions) -> None:
        self.task = task
        self.call_options = options

    def enqueue(
        self, /, *args: Any, idempotency_key: str | None = None, **kwargs: Any
    ) -> TaskHandle:
        """Post one call and return its handle; see Task.enqueue for idempotency_key."""
        options = self.call_options
        if idempotency_key is not None:
            options = options.replace(idempotency_key=idempotency_key)
        return self._post([self.task.build_message(args, kwargs, options)])[0]

    def enqueue_at(self, when: Any, /, *args: Any, **kwargs: Any) -> TaskHandle:
        """Post one call that becomes ready at `when` (aware datetime or Unix seconds).

        A time in the past makes the message ready at once.
        """
        options = self.call_options.replace(not_before=to_timestamp(when), delay_s=None)
        return self._post([self.task.build_message(args, kwargs, options)])[0]

    def enqueue_in(self, delay: Any, /, *args: Any, **kwargs: Any) -> TaskHandle:
        """Post one call that becomes ready after `delay` (timedelta or seconds)."""
        options = self.call_options.replace(delay_s=to_delay_s(delay), not_before=None)
        return self._post([self.task.build_message(args, kwargs, options)])[0]

    def enqueue_many(
        self, calls: Iterable[tuple[Sequence[Any], dict[str, Any] | None]]
    ) -> list[TaskHandle]:
        """Post many calls given as (args, kwargs) pairs; return handles in order.

        Every call is checked before anything is posted. Calls go out in
        batches of up to 1000 messages, and each batch is stored all or
        nothing. If a later batch fails, the earlier ones stay posted.
        """
        for name in ("dedup_id", "idempotency_key"):
            key = getattr(self.call_options, name)
            if key is not None:
                raise ValidationError(
                    f"{name} {key!r} would merge every call of enqueue_many into "
                    "one message; enqueue such calls one at a time"
                )
        messages = [
            self.task.build_message(*_split_call(self.task.name, index, call), self.call_options)
            for index, call in enumerate(calls)
        ]
        handles: list[TaskHandle] = []
        for start in range(0, len(messages), MAX_POST_BATCH):
            handles.extend(self._post(messages[start : start + MAX_POST_BATCH]))
        return handles

    def _post(self, messages: list[NewMessage]) -> list[TaskHandle]:
        task = self.task
        hooks = task.app.hooks
        if hooks.before_enqueue:
            for message in messages:
                hooks.fire("before_enqueue", task, message)
        task.app.ensure_queue(task.queue)
        results = task.app.client.post(task.queue, messages)
        handles = [
            TaskHandle(task.app, result.id, task.queue, task.name, result.deduplicated)
            for result in results
        ]
        if hooks.after_enqueue:
            for message, handle in zip(messages, handles):
                hooks.fire("after_enqueue", task, message, handle)
        return handles


def _split_call(task_name: str, index: int, call: Any) -> tuple[Sequence[Any], dict[str, Any]]:
    if not isinstance(call, (tuple, list)) or len(call) != 2:
        raise ValidationError(
            f"call {index} of enqueue_many for task {task_name!r} is {call!r}; "
            "pass (args, kwargs) pairs such as ((1, 2), {}) "
        )
    args, kwargs = call
    if not isinstance(args, (tuple, list)):
        raise ValidationError(
            f"call {index} of enqueue_many for task {task_name!r} has args "
            f"{args!r}; pass a tuple or list"
        )
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, dict):
        raise ValidationError(
            f"call {index} of enqueue_many for task {task_name!r} has kwargs "
            f"{kwargs!r}; pass a dict or None"
        )
    return args, kwargs
