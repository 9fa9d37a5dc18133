"""Conveyor: a persistent queue service and a Python task framework."""

from .errors import (
    ConveyorError,
    Reject,
    ResultTimeout,
    RetryAfter,
    TaskCancelled,
    TaskError,
    TaskTimeout,
)
from .models import Message, NewMessage, Schedule
from .tasks import Backoff, Conveyor, Task, TaskHandle, TaskProgress, TaskRun, current_run
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "Conveyor",
    "ConveyorError",
    "Message",
    "NewMessage",
    "Reject",
    "ResultTimeout",
    "RetryAfter",
    "Schedule",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskHandle",
    "TaskProgress",
    "TaskRun",
    "TaskTimeout",
    "Worker",
    "__version__",
    "current_run",
]
