"""Conveyor: the application object that registers tasks and owns the queue client."""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, overload

from ..client import connect
from ..errors import ValidationError
from ..settings import validate_queue_name
from ..validation import MAX_MESSAGE_ID_LENGTH
from .handle import TaskHandle
from .hooks import Hooks
from . import periodic as periodic_schedules
from .periodic import PeriodicSchedule
from .options import (
    DEFAULT_RESULT_TTL_S,
    check_option_names,
    build_backoff,
    check_batch_size,
    check_batch_wait_s,
    check_hard_timeout_s,
    check_max_attempts,
    check_permanent_errors,
    check_priority,
    check_result_ttl_s,
    check_timeout_s,
)
from .task import Task

if TYPE_CHECKING:
    from ..workflows.handle import WorkflowHandle

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_QUEUE = "default"

class Conveyor:
    """A task application: a registry of tasks and a connection to queues.

    `url` is the queue service (`http://host:port`) or a store file
    (`sqlite:///path.db`, used in-process); it defaults to the CONVEYOR_URL
    environment variable, then http://127.0.0.1:8080. `token` defaults to
    CONVEYOR_TOKEN. The client opens on first use.
    """

    def __init__(self, url: str | None = None, token: str | None = None) -> None:
        self.url = url or os.environ.get("CONVEYOR_URL") or DEFAULT_URL
        self.token = token if token is not None else os.environ.get("CONVEYOR_TOKEN")
        self.tasks: dict[str, Task] = {}
        self.hooks = Hooks()
        self._client: Any = None
        self._lock = threading.Lock()
        self._known_queues: set[str] = set()
        self.periodic_schedules: dict[str, PeriodicSchedule] = {}

    def __repr__(self) -> str:
        return f"<Conveyor {self.url} tasks={len(self.tasks)}>"

    # Client --------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The queue client (Engine or HTTP client), opened on first use."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = connect(self.url, self.token)
                client = self._client
        return client

    def configure(self, url: str | None = None, token: str | None = None) -> None:
        """Point the app at another queue service; closes an open client."""
        with self._lock:
            if url is not None:
                self.url = url
            if token is not None:
                self.token = token
            client, self._client = self._client, None
            self._known_queues.clear()
        if client is not None:
            client.close()

    def close(self) -> None:
        """Close the client; the next use opens a new one."""
        self.configure()

    def ensure_queue(self, queue: str) -> None:
        """Create the queue if it is missing, once per process and queue."""
        if queue in self._known_queues:
            return
        self.client.create_queue(queue, exist_ok=True)
        self._known_queues.add(queue)

    def handle(self, message_id: str) -> TaskHandle:
        """Return a handle for a task message id stored elsewhere.

        Raises ValidationError at once for a value that cannot be a
        message id, instead of at the handle's first call.
        """
        if not isinstance(message_id, str) or not 1 <= len(message_id) <= MAX_MESSAGE_ID_LENGTH:
            raise ValidationError(
                f"invalid message id {message_id!r}: expected a string of 1 to "
                f"{MAX_MESSAGE_ID_LENGTH} characters, such as a TaskHandle's id"
            )
        if "/" in message_id:
            raise ValidationError(
                f"invalid message id {message_id!r}: a message id never contains '/'"
            )
        return TaskHandle(self, message_id)

    def start_workflow(
        self, workflow: Any, name: str | None = None, idempotency_key: str | None = None
    ) -> WorkflowHandle:
        """Start a workflow built with chain, group and task.step; return its handle.

        Creates each step's queue if it is missing, then stores the workflow
        and posts its first steps in one transaction. A start with the
        idempotency key of a stored workflow returns that workflow's handle
        and starts nothing, so a start retried after a timeout is safe.
        """
        from ..workflows.handle import WorkflowHandle
        from ..workflows.spec import Chain, Group, Step

        if not isinstance(workflow, (Step, Chain, Group)):
            raise ValidationError(
                f"cannot start {workflow!r} as a workflow; pass chain(...), group(...) "
                "or task.step(...)"
            )
        spec = workflow.to_spec()
        for queue in sorted({step.queue for step in workflow.steps()}):
            self.ensure_queue(queue)
        started = self.client.start_workflow(spec, name, idempotency_key)
        return WorkflowHandle(self, started.id)

    def workflow(self, workflow_id: str) -> WorkflowHandle:
        """Return a handle for a workflow id stored elsewhere."""
        from ..workflows.handle import WorkflowHandle

        return WorkflowHandle(self, workflow_id)

    def queues(self) -> list[str]:
        """Return the queues of the registered tasks, sorted."""
        return sorted({task.queue for task in self.tasks.values()})

    # Task registration ----------------------------------------------------

    @overload
    def task(self, fn: Callable[..., Any], /) -> Task: ...

    @overload
    def task(self, /, **options: Any) -> Callable[[Callable[..., Any]], Task]: ...

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Register a function as a task: `@app.task` or `@app.task(...)`.

        Options and their defaults:
        - queue: "default".
        - name: `module.qualname`. A function in a script run as `__main__`
          gets `__main__.NAME`, which a worker that imports the module will
          not find, so name such tasks explicitly.
        - max_attempts: None, which uses the queue's.
        - backoff: a Backoff or a dict of base_s, factor and cap_s; None
          uses the queue's.
        - timeout_s: None, which means no limit. At the timeout the worker
          raises TaskTimeout inside the task, and the attempt fails.
        - hard_timeout_s: None. Longer than timeout_s; a worker with
          child processes kills the child that still runs the task then.
        - batch_size: None. With N, the function gets a list of up to N
          items, one per message, and returns one entry per item.
        - batch_wait_s: 1.0 second, how long a batch may wait to fill.
        - result_ttl_s: 86400 seconds; 0 keeps no result.
        - permanent_errors: exception classes that go to the DLQ without
          retries, besides Reject.
        - priority: 0, from -1000 to 1000.

        Invalid options raise ValidationError here, at decoration time.
        """
        check_option_names("@app.task", options, TASK_OPTION_NAMES)
        if fn is None:
            return lambda function: self._register(function, **options)
        return self._register(fn, **options)

    def _register(
        self,
        fn: Callable[..., Any],
        queue: str = DEFAULT_QUEUE,
        name: str | None = None,
        max_attempts: int | None = None,
        backoff: Any = None,
        timeout_s: float | None = None,
        result_ttl_s: float = DEFAULT_RESULT_TTL_S,
        permanent_errors: Any = (),
        priority: int = 0,
        hard_timeout_s: float | None = None,
        batch_size: int | None = None,
        batch_wait_s: float | None = None,
    ) -> Task:
        if isinstance(fn, Task):
            raise ValidationError(
                f"@app.task is applied to {fn.name!r}, which is a task already, "
                "e.g. because @app.task sits above @app.periodic; put @app.periodic "
                "on top of @app.task, or use @app.periodic alone with the task options"
            )
        name = name if name is not None else _default_name(fn)
        _check_function(fn, name)
        validate_queue_name(queue)
        timeout_s = check_timeout_s(name, timeout_s)
        batch_size = check_batch_size(name, batch_size)
        if batch_size is not None:
            _check_batch_function(fn, name)
        task = Task(
            app=self,
            fn=fn,
            name=name,
            queue=queue,
            max_attempts=check_max_attempts(name, max_attempts),
            backoff=build_backoff(name, backoff),
            timeout_s=timeout_s,
            result_ttl_s=check_result_ttl_s(name, result_ttl_s),
            permanent_errors=check_permanent_errors(name, permanent_errors),
            priority=check_priority(priority),
            hard_timeout_s=check_hard_timeout_s(name, hard_timeout_s, timeout_s),
            batch_size=batch_size,
            batch_wait_s=check_batch_wait_s(name, batch_wait_s, batch_size),
        )
        with self._lock:
            if name in self.tasks:
                raise ValidationError(
                    f"task name {name!r} is already registered; give one of the "
                    "functions another name with @app.task(name=...)"
                )
            self.tasks[name] = task
        return task

    # Schedules ------------------------------------------------------------

    def periodic(
        self,
        fn: Any = None,
        /,
        *,
        cron: str | None = None,
        timezone: str | None = None,
        every: timedelta | float | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        start: Any = None,
        end: Any = None,
        max_runs: int | None = None,
        catch_up: str = "skip",
        catch_up_limit: int | None = None,
        grace: timedelta | float | None = None,
        name: str | None = None,
        **task_options: Any,
    ) -> Any:
        """Declare a schedule that enqueues a task: `@app.periodic(cron=..., ...)`.

        Put it on top of `@app.task`, or use it alone and pass the task
        options as keyword arguments, with `task_name` for the task's name
        because `name` names the schedule.
        `cron` (five fields, read in `timezone`, default UTC) or `every`
        (timedelta or seconds) sets the ticks; `args` and `kwargs` are the
        call each tick enqueues. `start` and `end` (aware datetimes or Unix
        seconds), `max_runs`, `catch_up` (skip, once or all) and
        `catch_up_limit` are as in docs/schedules.md. `grace` (timedelta or
        seconds, default 60) is how late a tick may fire and still be on
        time. `name` names the
        schedule; the default is the task name. `app.sync_schedules()` or
        `conveyor worker` stores the declarations.
        """
        task_name = task_options.pop("task_name", None)
        if task_name is not None:
            task_options["name"] = task_name

        def decorate(target: Any) -> Task:
            task = target if isinstance(target, Task) else self._register(target, **task_options)
            if isinstance(target, Task) and task_options:
                raise ValidationError(
                    f"@app.periodic on task {task.name!r} got task options "
                    f"{sorted(task_options)}; set them on @app.task instead"
                )
            declared = periodic_schedules.declare(
                task, cron, timezone, every, args, kwargs, start, end, max_runs,
                catch_up, catch_up_limit, grace, name,
            )
            with self._lock:
                if declared.name in self.periodic_schedules:
                    raise ValidationError(
                        f"schedule name {declared.name!r} is declared twice; give "
                        "one @app.periodic another name=..."
                    )
                self.periodic_schedules[declared.name] = declared
            return task

        check_option_names(
            "@app.periodic", task_options,
            (*PERIODIC_OPTION_NAMES, "task_name", *(n for n in TASK_OPTION_NAMES if n != "name")),
        )
        return decorate if fn is None else decorate(fn)

    def sync_schedules(self, queues: Sequence[str] | None = None) -> list[Any]:
        """Store the declared schedules (of `queues`, default all) and return them.

        Idempotent: an unchanged declaration keeps its next tick and run
        count. Logs a WARNING for stored code schedules of those queues that
        the app no longer declares; they stay until deleted.
        """
        return periodic_schedules.sync(self, queues)

    # Hooks ----------------------------------------------------------------

    def add_hook(self, event: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Register fn for an event and return it; see conveyor.tasks.hooks for events.

        Raises ValidationError for an unknown event name.
        """
        self.hooks.add(event, fn)
        return fn

    def before_enqueue(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate a hook called with (task, message) before each message is posted."""
        return self.add_hook("before_enqueue", fn)

    def after_enqueue(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate a hook called with (task, message, handle) after each post."""
        return self.add_hook("after_enqueue", fn)

    def before_run(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate a hook called with (run) before a task function runs."""
        return self.add_hook("before_run", fn)

    def after_run(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate a hook called with (run, result, error) after a task attempt."""
        return self.add_hook("after_run", fn)

    def on_retry(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate a hook called with (run, error, delay_s) when a failed attempt is retried."""
        return self.add_hook("on_retry", fn)

    def on_dead_letter(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorate a hook called with (run, error) when a message moves to the DLQ."""
        return self.add_hook("on_dead_letter", fn)


TASK_OPTION_NAMES = tuple(
    name for name in inspect.signature(Conveyor._register).parameters if name not in ("self", "fn")
)
# The schedule options of @app.periodic; it also takes the task options,
# with task_name for the task's name.
PERIODIC_OPTION_NAMES = tuple(
    name for name in inspect.signature(Conveyor.periodic).parameters
    if name not in ("self", "fn", "task_options")
)


def _default_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "unknown"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


def _check_batch_function(fn: Callable[..., Any], name: str) -> None:
    try:
        inspect.signature(fn).bind([])
    except TypeError as exc:
        raise ValidationError(
            f"batch task {name!r} must take one argument, the list of items: {exc}"
        ) from exc


def _check_function(fn: Any, name: str) -> None:
    if not callable(fn):
        raise ValidationError(f"task {name!r} must decorate a function, not {fn!r}")
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        raise ValidationError(f"invalid task name {name!r}: use 1 to 200 characters")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise ValidationError(
            f"task {name!r} is a generator function; a task must return one "
            "JSON value, so return a list instead of yielding"
        )
