"""The task framework: register functions as tasks, enqueue calls, read results."""

from .app import Conveyor
from .current import current_run
from .handle import TaskHandle, TaskProgress
from .hooks import TaskRun
from .options import Backoff, EnqueueOptions
from .task import Task, TaskWithOptions

__all__ = [
    "Backoff",
    "Conveyor",
    "EnqueueOptions",
    "Task",
    "TaskHandle",
    "TaskProgress",
    "TaskRun",
    "TaskWithOptions",
    "current_run",
]
