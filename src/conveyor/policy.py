"""Queue rules that every store applies inside its transactions.

The functions here are pure: they take the queue's settings and the time and
return a decision, so SQLite and any later store decide the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .errors import PayloadTooLarge, ValidationError
from .settings import QueueSettings


@dataclass(slots=True)
class PreparedMessage:
    """A validated message whose body is already encoded for storage."""

    id: str
    body: bytes
    is_binary: bool
    headers: str | None
    priority: int
    delay_s: float | None
    not_before: float | None
    group: str | None
    # Bytes for an idempotency key; see idempotency.py.
    dedup_id: str | bytes | None
    retention_s: float | None
    max_attempts: int | None

    @property
    def size(self) -> int:
        """Return the stored size in bytes: the body plus the headers' UTF-8 JSON."""
        headers = self.headers or ""
        header_bytes = len(headers) if headers.isascii() else len(headers.encode())
        return len(self.body) + header_bytes


def retry_delay_s(settings: QueueSettings, attempt: int) -> float:
    """Return the delay before retry number `attempt` (1 for the first).

    Exponential backoff capped at `backoff_cap_s`; with full jitter the delay
    is drawn uniformly between 0 and that cap, which spreads retries of many
    messages that failed together.
    """
    exponent = max(attempt - 1, 0)
    try:
        delay = settings.backoff_base_s * settings.backoff_factor**exponent
    except OverflowError:
        delay = settings.backoff_cap_s
    delay = min(delay, settings.backoff_cap_s)
    if settings.backoff_jitter == "full":
        delay = random.uniform(0.0, delay)
    return delay


def attempts_left(settings: QueueSettings, max_attempts: int | None, count: int) -> bool:
    """Tell whether a message received `count` times may be tried again."""
    limit = max_attempts if max_attempts is not None else settings.max_attempts
    return count < limit


def due_at(settings: QueueSettings, message: PreparedMessage, now: float) -> float:
    """Return when a new message becomes ready for delivery."""
    if message.not_before is not None:
        return message.not_before
    delay = message.delay_s
    if delay is None:
        delay = settings.default_delay_s
    return now + delay


def expires_at(settings: QueueSettings, message: PreparedMessage, now: float) -> float:
    """Return when retention removes a new message."""
    retention = message.retention_s
    if retention is None or retention > settings.retention_s:
        retention = settings.retention_s
    return now + retention


def check_for_queue(
    queue: str, settings: QueueSettings, messages: list[PreparedMessage]
) -> None:
    """Raise if any message breaks a rule of the queue it is posted to.

    The whole batch is checked before anything is written.
    """
    for index, message in enumerate(messages):
        if message.size > settings.max_message_size:
            raise PayloadTooLarge(
                f"message {index} is {message.size} bytes, above the "
                f"max_message_size of {settings.max_message_size} bytes on "
                f"queue {queue!r}; shrink it or raise the queue's limit",
                index=index,
            )
        _check_group(queue, settings, index, message)


def _check_group(
    queue: str, settings: QueueSettings, index: int, message: PreparedMessage
) -> None:
    if settings.is_fifo and message.group is None:
        raise ValidationError(
            f"message {index} has no group, but queue {queue!r} is a fifo "
            "queue; give every message a group",
            index=index,
        )
    if not settings.is_fifo and message.group is not None:
        raise ValidationError(
            f"message {index} has group {message.group!r}, but queue "
            f"{queue!r} is a standard queue; groups need a fifo queue",
            index=index,
        )


def describe_settings_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Return 'key: old -> new' for each changed setting, for logs."""
    changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v]
    return ", ".join(changed) or "no change"
