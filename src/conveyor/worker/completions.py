"""Completion records: a successful attempt of a task enqueued with an
idempotency key stores its result before the ack.

The record is written from the task's own thread (or event loop, or child
process) right after the function returns and before the after_run hooks,
with the attempt's receipt. If the worker dies before its ack reaches the
queue service, the message comes back with the record, and the next
worker acks it without calling the function again.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from ..tasks.hooks import TaskRun
from .execution import ItemResult

logger = logging.getLogger(__name__)

Recorder = Callable[[list[TaskRun], list[ItemResult]], None]


def make_recorder(client: Any, receipts: Sequence[str | None]) -> Recorder | None:
    """Return a recorder for a unit whose runs have these receipts, or None.

    A receipt is None for a run whose message has no idempotency key; a
    unit without any such run needs no recorder.
    """
    if not any(receipts):
        return None
    return lambda runs, results: record_completions(client, runs, results, receipts)


def record_completions(
    client: Any, runs: list[TaskRun], results: list[ItemResult], receipts: Sequence[str | None]
) -> None:
    """Store the completion record of each run that succeeded and has a receipt.

    A failure is logged and otherwise ignored: the ack still carries the
    result, and only a lost ack would then run the task again.
    """
    by_queue: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run, result, receipt in zip(runs, results, receipts):
        if receipt is None or result.error is not None or run.cancelled:
            continue
        by_queue[run.queue].append(
            {"id": run.message_id, "receipt": receipt, "result": result.value}
        )
    for queue, entries in by_queue.items():
        _send(client, queue, entries)


def _send(client: Any, queue: str, entries: list[dict[str, Any]]) -> None:
    try:
        outcomes = client.complete(queue, entries)
    except Exception as exc:  # noqa: BLE001 - the ack still follows
        logger.warning(
            "Could not record the completion of %d tasks on queue %s, so a lost "
            "ack would run them again: %s: %s",
            len(entries), queue, type(exc).__name__, exc,
        )
        return
    for entry, outcome in zip(entries, outcomes):
        if not outcome.ok:
            logger.warning(
                "Could not record the completion of message %s on queue %s: %s: %s",
                entry["id"], queue, outcome.error, outcome.detail,
            )
