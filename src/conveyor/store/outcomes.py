"""Decisions and results that every store shares for ack, nack and lease expiry.

The stores run the SQL; these functions decide what a failed attempt does
and build the per-entry results and log lines, so both stores behave and
report alike.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import policy
from ..models import EntryResult
from ..settings import QueueSettings

logger = logging.getLogger(__name__)

RELEASED = "released"
DEAD = "dead"
RETRIED = "retried"
CANCELLED = "cancelled"


def nack_action(
    settings: QueueSettings, max_attempts: int | None, count: int, entry: dict[str, Any]
) -> tuple[str, float]:
    """Decide a nack: (CANCELLED, 0), (RELEASED, 0), (DEAD, 0) or (RETRIED, delay in seconds).

    `cancelled` finishes the message as cancelled: no retry, no DLQ. A
    release gives the attempt back. `dead`, or no attempts left, moves the
    message to the DLQ. Otherwise it retries after the entry's `delay_s` or
    the queue's backoff.
    """
    if entry.get("cancelled"):
        return CANCELLED, 0.0
    if entry.get("release"):
        return RELEASED, 0.0
    if entry.get("dead") or not policy.attempts_left(settings, max_attempts, count):
        return DEAD, 0.0
    delay_s = entry.get("delay_s")
    if delay_s is None:
        delay_s = policy.retry_delay_s(settings, count)
    return RETRIED, delay_s


def expiry_action(
    settings: QueueSettings, max_attempts: int | None, count: int
) -> tuple[str, float]:
    """Decide an expired lease, which is a failed attempt: retry or dead-letter."""
    return nack_action(settings, max_attempts, count, {})


def can_ack_set_wise(entries: list[dict[str, Any]]) -> bool:
    """Tell whether a batch of acks can run as one statement.

    A repeated id must be acked entry by entry, so that the second entry sees
    the first one's delete. A NUL is kept out of set-wise statements, since
    PostgreSQL text cannot hold it and SQLite's JSON functions would cut it.
    Logs are stored under the attempt number that only the lease lookup of
    an entry-by-entry ack reads.
    """
    ids = {entry["id"] for entry in entries}
    if len(ids) != len(entries):
        return False
    if any(entry.get("logs") is not None for entry in entries):
        return False
    return not any("\0" in entry["id"] or "\0" in entry["receipt"] for entry in entries)


def acked_results(
    queue: str, entries: list[dict[str, Any]], acked: set[str], find_queue
) -> list[EntryResult]:
    """Build one result per entry of a set-wise ack.

    `find_queue(message_id)` returns the (queue, source_queue) of an entry
    that was not acked, to explain why.
    """
    results = []
    for entry in entries:
        message_id = entry["id"]
        if message_id in acked:
            results.append(EntryResult(message_id, True, outcome="acked"))
        else:
            results.append(missing_lease_result(message_id, queue, find_queue(message_id)))
    return results


def missing_lease_result(
    message_id: str, queue: str, found: tuple[str, str | None] | None
) -> EntryResult:
    """Explain why an entry's lease was not found.

    `found` is the message's (queue, source_queue), or None when no message
    has the id. A message that moved on to its DLQ is still the caller's
    old lease, so its receipt is stale rather than unknown.
    """
    if found is None or queue not in found:
        detail = f"no message with id {message_id!r} is in queue {queue!r}"
        return EntryResult(message_id, False, "message-not-found", detail)
    detail = (
        f"receipt for message {message_id!r} is stale: its lease expired or "
        "it was acked, nacked or reserved again; nothing was changed"
    )
    return EntryResult(message_id, False, "stale-receipt", detail)


def nack_result(message_id: str, action: str, delay_s: float) -> EntryResult:
    """Build the successful result of a nack entry."""
    if action == RETRIED:
        return EntryResult(message_id, True, outcome=RETRIED, detail=f"retry in {delay_s:.3f}s")
    return EntryResult(message_id, True, outcome=action)


def log_nack_dead_letter(
    message_id: str, queue: str, dlq: str, count: int, reason: str | None
) -> None:
    logger.warning(
        "Message %s on queue %s moved to DLQ %s after %d attempt(s): %s",
        message_id, queue, dlq, count, reason,
    )


def log_expiry(message_id: str, queue: str, count: int, action: str, dlq: str | None) -> None:
    if action == RETRIED:
        logger.info(
            "Lease of message %s on queue %s expired; retrying (attempt %d)",
            message_id, queue, count,
        )
        return
    logger.warning(
        "Message %s on queue %s moved to DLQ %s: lease expired after its last attempt (%d)",
        message_id, queue, dlq, count,
    )
