"""Limits and checks for what a consumer reports about an attempt.

Besides ack and nack, the consumer of a lease may report three things
about its attempt. Its progress is a fraction from 0 to 1 and a short
text. Its logs are the records it captured, stored per attempt. Its
completion record is the result, stored before the ack. The engine checks
these fields here before anything is written.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ValidationError

# Progress text longer than this is rejected. The task SDK cuts it first.
MAX_PROGRESS_TEXT = 1024
# The logs of one attempt are cut to this many bytes of UTF-8, note included.
MAX_LOG_BYTES = 64 * 1024
NOTE_RESERVE_BYTES = 100


def cut_note(dropped_bytes: int) -> str:
    """Return the line that replaces the middle of a log cut at MAX_LOG_BYTES."""
    return (
        f"[log cut at {MAX_LOG_BYTES // 1024} KiB: "
        f"{dropped_bytes} bytes were dropped here]\n"
    )


def cut_log(text: str) -> str:
    """Return text as valid UTF-8 of at most MAX_LOG_BYTES, with a note if it was cut.

    A cut keeps the first and the last half of the allowed bytes, because
    a log's end usually contains the final error and its traceback. Characters
    UTF-8 cannot encode (lone surrogates) become '?'.
    """
    raw = text.encode("utf-8", "replace")
    if len(raw) <= MAX_LOG_BYTES:
        return raw.decode()
    half = (MAX_LOG_BYTES - NOTE_RESERVE_BYTES) // 2
    head = raw[:half].decode("utf-8", "ignore")
    tail = raw[-half:].decode("utf-8", "ignore")
    dropped = len(raw) - len(head.encode()) - len(tail.encode())
    if not head.endswith("\n"):
        head += "\n"
    return head + cut_note(dropped) + tail


def check_progress(fraction: Any, text: Any, where: str) -> tuple[float, str | None]:
    """Return a valid (fraction, text) pair, or raise ValidationError naming the bad value."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ValidationError(
            f"invalid progress {fraction!r} in {where}: expected a number from 0 to 1"
        )
    if not math.isfinite(fraction) or not 0.0 <= fraction <= 1.0:
        raise ValidationError(
            f"invalid progress {fraction!r} in {where}: use a fraction from 0 to 1, "
            "such as 0.25 for a quarter done"
        )
    if text is None:
        return float(fraction), None
    if not isinstance(text, str):
        raise ValidationError(f"invalid progress_text in {where}: expected a string")
    if len(text) > MAX_PROGRESS_TEXT:
        raise ValidationError(
            f"progress_text in {where} has {len(text)} characters, more than the "
            f"limit of {MAX_PROGRESS_TEXT}; send a shorter text"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"invalid progress_text in {where}: {exc.reason}") from exc
    return float(fraction), text


def check_run_fields(entry: dict[str, Any], checked: dict[str, Any], index: int) -> None:
    """Check an entry's progress, logs and cancelled keys, and store the clean values in checked.

    Logs over MAX_LOG_BYTES are cut with a note rather than rejected: they
    are diagnostics, and losing their tail is better than losing the ack
    that carries them.
    """
    where = f"entry {index}"
    if entry.get("progress") is not None or entry.get("progress_text") is not None:
        if entry.get("progress") is None:
            raise ValidationError(
                f"{where} has progress_text but no progress; send both", index=index
            )
        fraction, text = _checked_progress(entry, where, index)
        checked["progress"], checked["progress_text"] = fraction, text

    logs = entry.get("logs")
    if logs is not None:
        if not isinstance(logs, str):
            raise ValidationError(f"{where} 'logs' must be a string", index=index)
        checked["logs"] = cut_log(logs)

    cancelled = entry.get("cancelled")
    if cancelled is not None and not isinstance(cancelled, bool):
        raise ValidationError(f"{where} 'cancelled' must be true or false", index=index)


def _checked_progress(entry: dict[str, Any], where: str, index: int) -> tuple[float, str | None]:
    try:
        return check_progress(entry.get("progress"), entry.get("progress_text"), where)
    except ValidationError as exc:
        raise ValidationError(exc.detail, index=index) from exc


def require_progress(entry: dict[str, Any], index: int) -> None:
    """Raise unless a progress entry carries a progress value."""
    if entry.get("progress") is None:
        raise ValidationError(
            f"entry {index} has no 'progress'; send a fraction from 0 to 1",
            index=index,
        )
