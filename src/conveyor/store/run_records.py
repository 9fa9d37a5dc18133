"""Rules that every store shares for task runs: cancellation, completion
records and attempt logs.

The stores run the SQL, and these functions decide three things: what a
cancel does to a message in each state, what a nack or an expired lease
does once a cancel was requested or a completion record exists, and how
long logs are kept.

- A cancel removes a delayed or ready message at once and stores a result
  with status `cancelled`. A reserved message only gets `cancel_requested`,
  which its consumer learns from its next touch or progress update.
- Once a cancel is requested, the message never runs again: a nack (retry,
  release or dead), or the end of its lease, finishes it as cancelled. An
  ack still finishes it as succeeded, because it did.
- A completion record means the consumer finished the work but may not
  have acked it. If its lease ends, the message is delivered again at once,
  even after its last attempt, so that a consumer can ack it without
  running it again.
- An attempt's logs are kept while the message is stored. When the message
  finishes with a result, every attempt's logs expire with that result;
  when it finishes without one, they are deleted.
"""

from __future__ import annotations

import logging

from ..errors import MessageFinished, MessageNotFound
from ..models import DEAD, RESERVED, EntryResult
from ..validation import DEFAULT_RESULT_TTL_S
from . import outcomes

logger = logging.getLogger(__name__)

CANCELLED = outcomes.CANCELLED
CANCEL_REQUESTED = "cancel-requested"
COMPLETED = "completed"
UPDATED = "updated"
CANCELLED_ERROR = "cancelled by request"


def nack_action_after_cancel(action: str, cancel_requested: bool) -> str:
    """Return what a nack does: CANCELLED once a cancel was requested, else `action`."""
    if cancel_requested:
        return CANCELLED
    return action


def expiry_action(
    action: str, delay_s: float, cancel_requested: bool, completed: bool
) -> tuple[str, float]:
    """Adjust the usual decision for an expired lease.

    A completion record sends it back at once, even after its last attempt,
    so a consumer acks it. It wins over a cancel request, because the task
    already ran: calling it cancelled would hide a side effect that happened.
    Otherwise a cancel request finishes the message as cancelled.
    """
    if completed:
        return outcomes.RETRIED, 0.0
    if cancel_requested:
        return CANCELLED, 0.0
    return action, delay_s


def cancel_is_immediate(state: str, reserved_until: float | None, now: float) -> bool:
    """Tell whether a cancel removes the message now rather than flag it.

    A reserved message whose lease ended already is no longer running: the
    next reserve or sweep would send it back, so it is removed at once too.
    """
    if state != RESERVED:
        return True
    return reserved_until is None or reserved_until <= now


def check_cancellable(message_id: str, queue: str, state: str) -> None:
    """Raise MessageFinished for a dead message: it failed and is finished."""
    if state == DEAD:
        raise MessageFinished(
            f"message {message_id!r} is dead in DLQ {queue!r}: it failed and is "
            "finished, so it cannot be cancelled; redrive or leave it"
        )


def missing_message_error(message_id: str, result_status: str | None) -> Exception:
    """Return the error for a cancel of a message that is not stored.

    `result_status` is the status of its stored result, or None when there
    is none either.
    """
    if result_status is None:
        return MessageNotFound(
            f"no message with id {message_id!r} is stored and no result either; "
            "check the id"
        )
    return MessageFinished(
        f"message {message_id!r} finished already with status {result_status!r}, "
        "so it cannot be cancelled"
    )


def cancel_result_ttl_s(result_ttl_s: float | None) -> float:
    """Return how long a cancelled result is kept: as asked, else the default day."""
    return DEFAULT_RESULT_TTL_S if result_ttl_s is None else result_ttl_s


def cancelled_entry(message_id: str, result_ttl_s: float | None) -> dict:
    """Return the result entry stored for a message cancelled by the store itself."""
    return {
        "id": message_id,
        "status": CANCELLED,
        "error": CANCELLED_ERROR,
        "result_ttl_s": cancel_result_ttl_s(result_ttl_s),
    }


def cancelled_nack_entry(entry: dict) -> dict:
    """Return the result entry of a nack that finishes its message as cancelled.

    A nack that asked to retry, release or dead-letter a message whose
    cancel was requested keeps its error text after the cancel note.
    """
    error = entry.get("error")
    if not entry.get("cancelled"):
        error = f"{CANCELLED_ERROR}; the attempt ended with: {error}" if error else None
    return {
        **entry,
        "status": CANCELLED,
        "error": error or CANCELLED_ERROR,
        "result": None,
        "result_ttl_s": cancel_result_ttl_s(entry.get("result_ttl_s")),
    }


def logs_expiry(result_ttl_s: float | None, now: float) -> float | None:
    """Return when a finished message's logs expire: with its result, or None to delete them."""
    if not result_ttl_s:
        return None
    return now + result_ttl_s


def cancel_result(message_id: str, outcome: str) -> EntryResult:
    return EntryResult(message_id, True, outcome=outcome)


def log_cancelled(message_id: str, queue: str, circumstance: str) -> None:
    logger.info("Message %s on queue %s cancelled %s", message_id, queue, circumstance)


def log_cancel_requested(message_id: str, queue: str) -> None:
    logger.info(
        "Cancel requested for reserved message %s on queue %s; its consumer "
        "learns of it at its next lease renewal",
        message_id, queue,
    )


def log_completed_expiry(message_id: str, queue: str, count: int) -> None:
    logger.info(
        "Lease of message %s on queue %s expired after its attempt %d recorded a "
        "completion; delivering it again so that a consumer acks it",
        message_id, queue, count,
    )
