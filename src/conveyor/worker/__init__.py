"""The worker: runs an app's tasks from its queues; see worker.Worker."""

from .worker import Worker

__all__ = ["Worker"]
