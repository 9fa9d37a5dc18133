"""Workflows: chains, groups and joins of task steps (see docs/workflows.md)."""

from .handle import WorkflowHandle
from .spec import Chain, Group, Step, chain, group

__all__ = ["Chain", "Group", "Step", "WorkflowHandle", "chain", "group"]
