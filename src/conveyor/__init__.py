"""Conveyor: a persistent queue service and a Python task framework."""

from .errors import ConveyorError, Reject, TaskTimeout
from .models import Message, NewMessage

__version__ = "0.1.0"

__all__ = ["ConveyorError", "Message", "NewMessage", "Reject", "TaskTimeout", "__version__"]
