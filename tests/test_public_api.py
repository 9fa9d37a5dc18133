"""The public surface is a contract: pin the exported names."""

from __future__ import annotations

import conveyor
from conveyor import errors

EXPORTED = {
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
}


def test_exported_names():
    assert set(conveyor.__all__) == EXPORTED


def test_exported_names_resolve():
    missing = [name for name in conveyor.__all__ if not hasattr(conveyor, name)]
    assert missing == []


def test_error_classes_documented():
    undocumented = [
        cls.__name__ for cls in errors.ERROR_CLASSES.values() if not (cls.__doc__ or "").strip()
    ]
    assert undocumented == []


def test_error_codes_unique():
    codes = [cls.code for cls in errors.ERROR_CLASSES.values()]
    assert len(codes) == len(set(codes))


def test_problem_round_trip():
    original = errors.StaleReceipt("receipt 'r1' is stale", index=3)
    rebuilt = errors.error_from_problem(original.to_problem())
    assert type(rebuilt) is errors.StaleReceipt
    assert rebuilt.detail == original.detail
    assert rebuilt.extra == {"index": 3}
