"""RetryAfter in the SDK and the worker: the exception, its nack entry, and
its trip through a worker child process's result pipe."""

from __future__ import annotations

from datetime import timedelta

import pytest

from conveyor import RetryAfter
from conveyor.models import Message
from conveyor.settings import QueueSettings
from conveyor.worker import jobs
from conveyor.worker.child import _wire_item
from conveyor.worker.execution import ItemResult
from conveyor.worker.processes import _item_result


def leased_message() -> Message:
    return Message(
        id="m1", queue="api", state="reserved", body={}, headers={}, priority=0,
        group=None, dedup_id=None, posted_at=0.0, due_at=0.0, receive_count=2,
        max_attempts=None, last_error=None, source_queue=None, expires_at=1e12,
        reserved_until=1e12, receipt="r1",
    )


def make_job() -> jobs.Job:
    return jobs.Job(leased_message(), None, None, "no task", 5, 0.0, 0.0)


def test_retry_after_seconds_and_timedelta():
    assert RetryAfter(2.5).seconds == 2.5
    assert RetryAfter(timedelta(minutes=2)).seconds == 120.0
    assert str(RetryAfter(3)) == "retry after 3 s"
    assert str(RetryAfter(3, "rate limited")) == "rate limited"


@pytest.mark.parametrize("seconds", [0, -1, 86_401, float("nan"), float("inf")])
def test_retry_after_rejects_bad_delay(seconds):
    with pytest.raises(ValueError) as caught:
        RetryAfter(seconds)
    assert "invalid RetryAfter delay" in str(caught.value)


@pytest.mark.parametrize("seconds", ["5", None, True])
def test_retry_after_rejects_non_numbers(seconds):
    with pytest.raises(TypeError):
        RetryAfter(seconds)


def test_failure_nack_carries_retry_after():
    outcome = jobs.failure(make_job(), RetryAfter(7), 1.0, QueueSettings())
    assert outcome.kind == jobs.NACK
    assert outcome.entry["retry_after_s"] == 7.0
    assert "delay_s" not in outcome.entry
    assert "dead" not in outcome.entry
    assert outcome.delay_s == 7.0
    assert outcome.entry["error"] == "RetryAfter: retry after 7 s"


def test_failure_of_other_errors_has_no_retry_after():
    outcome = jobs.failure(make_job(), RuntimeError("boom"), 1.0, QueueSettings())
    assert "retry_after_s" not in outcome.entry
    assert "delay_s" in outcome.entry


def test_retry_after_crosses_child_pipe():
    item = _wire_item(None, ItemResult(error=RetryAfter(4)))
    error = _item_result(item).error
    assert isinstance(error, jobs.RemoteTaskError)
    assert error.retry_after_s == 4.0
    assert error.traceback_text == ""
    outcome = jobs.failure(make_job(), error, 1.0, QueueSettings())
    assert outcome.entry["retry_after_s"] == 4.0


def test_other_errors_cross_child_pipe_without_delay():
    item = _wire_item(None, ItemResult(error=RuntimeError("boom")))
    error = _item_result(item).error
    assert error.retry_after_s is None
    assert "RuntimeError: boom" in error.description
