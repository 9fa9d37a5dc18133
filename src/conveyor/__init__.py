"""Conveyor: a persistent queue service and a Python task framework."""

from .errors import ConveyorError, Reject, ResultTimeout, TaskError, TaskTimeout
from .models import Message, NewMessage
from .tasks import Backoff, Conveyor, Task, TaskHandle, TaskRun
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
    "Task",
    "TaskError",
    "TaskHandle",
    "TaskRun",
    "TaskTimeout",
    "Worker",
    "__version__",
]
