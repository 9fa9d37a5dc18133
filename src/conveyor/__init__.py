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
from .workflows import Chain, Group, Step, WorkflowHandle, chain, group

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "Chain",
    "Conveyor",
    "ConveyorError",
    "Group",
    "Message",
    "NewMessage",
    "Reject",
    "ResultTimeout",
    "RetryAfter",
    "Schedule",
    "Step",
    "Task",
    "TaskCancelled",
    "TaskError",
    "TaskHandle",
    "TaskProgress",
    "TaskRun",
    "TaskTimeout",
    "Worker",
    "WorkflowHandle",
    "__version__",
    "chain",
    "current_run",
    "group",
]
