"""Checks on message and batch inputs, shared by the engine and the server.

Each check raises ValidationError quoting the bad value, before anything is
written, so bad input never changes stored data.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import orjson

from .errors import MAX_RETRY_AFTER_S, ValidationError
from .idempotency import stored_key
from .models import NewMessage
from .policy import PreparedMessage
from .reports import check_run_fields, require_progress
from .settings import (
    MAX_ATTEMPTS_LIMIT,
    MAX_DELAY_S,
    MAX_RETENTION_S,
    MAX_VISIBILITY_TIMEOUT_S,
    format_seconds,
)

MAX_POST_BATCH = 1000
MAX_RESERVE_BATCH = 100
MAX_ENTRY_BATCH = 1000
MAX_WAIT_S = 30.0
MAX_PRIORITY = 1000
MAX_KEY_LENGTH = 128
MAX_MESSAGE_ID_LENGTH = 128
MAX_HEADERS = 64
MAX_HEADER_VALUE = 4096
MAX_ERROR_TEXT = 8192
MAX_RESULT_TTL_S = 30 * 86_400.0
# A result sent without result_ttl_s is kept this long.
DEFAULT_RESULT_TTL_S = 86_400.0
RESULT_STATUSES = ("succeeded", "failed")
# Attempt numbers count deliveries; a redriven message starts again at 1.
MAX_ATTEMPT_NUMBER = 1_000_000

# The keys each kind of receipt entry may carry. An ack or nack may bring
# the attempt's captured logs and its last progress (see reports.py).
_FINAL_KEYS = frozenset({"logs", "progress", "progress_text"})
ENTRY_KEYS = {
    "ack": frozenset({"id", "receipt", "result", "result_ttl_s", "status", "error"})
    | _FINAL_KEYS,
    "nack": frozenset(
        {"id", "receipt", "delay_s", "retry_after_s", "error", "dead", "release", "cancelled",
         "result", "result_ttl_s"}
    )
    | _FINAL_KEYS,
    "touch": frozenset({"id", "receipt", "visibility_timeout_s"}),
    "complete": frozenset({"id", "receipt", "result"}),
    "progress": frozenset({"id", "receipt", "progress", "progress_text"}),
}


def new_message_id() -> str:
    """Return a new id: milliseconds since the epoch, then 64 random bits.

    The hex time prefix makes ids sort roughly by creation time.
    """
    return f"{int(time.time() * 1000):012x}{os.urandom(8).hex()}"


def prepare(message: NewMessage, index: int) -> PreparedMessage:
    """Validate one message and encode its body for storage.

    Every ValidationError names the message's position in its batch.
    """
    try:
        return _prepare(message, index)
    except ValidationError as exc:
        if "index" in exc.extra:
            raise
        raise ValidationError(f"message {index}: {exc.detail}", index=index) from exc


def _prepare(message: NewMessage, index: int) -> PreparedMessage:
    body, is_binary = encode_body(message.body, index)
    if message.delay_s is not None and message.not_before is not None:
        raise ValidationError(
            f"message {index} sets both delay_s and not_before; keep one", index=index
        )
    dedup_id = check_key("dedup_id", message.dedup_id)
    idempotency_key = check_key("idempotency_key", message.idempotency_key)
    if dedup_id is not None and idempotency_key is not None:
        raise ValidationError(
            f"message {index} sets both dedup_id and idempotency_key; keep one",
            index=index,
        )
    return PreparedMessage(
        id=new_message_id(),
        body=body,
        is_binary=is_binary,
        headers=_encode_headers(message.headers, index),
        priority=check_int("priority", message.priority, -MAX_PRIORITY, MAX_PRIORITY),
        delay_s=check_optional_duration("delay_s", message.delay_s, 0.0, MAX_DELAY_S),
        not_before=_check_timestamp("not_before", message.not_before),
        group=check_key("group", message.group),
        dedup_id=stored_key(dedup_id, idempotency_key),
        retention_s=check_optional_duration(
            "retention_s", message.retention_s, 60.0, MAX_RETENTION_S
        ),
        max_attempts=_check_optional_int(
            "max_attempts", message.max_attempts, 1, MAX_ATTEMPTS_LIMIT
        ),
    )


def encode_body(body: Any, index: int = 0) -> tuple[bytes, bool]:
    """Return the stored form of a body and whether it is binary."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body), True
    try:
        return orjson.dumps(body), False
    except TypeError as exc:
        raise ValidationError(
            f"message {index} body is not JSON-serialisable ({exc}); send JSON "
            "values (objects, arrays, strings, numbers, booleans, null) or bytes",
            index=index,
        ) from exc


def check_batch(name: str, entries: Any, limit: int) -> list:
    if not isinstance(entries, list):
        raise ValidationError(f"{name} must be a list, got {type(entries).__name__}")
    if not 1 <= len(entries) <= limit:
        raise ValidationError(
            f"{name} has {len(entries)} entries; send from 1 to {limit} per request"
        )
    return entries


def check_receipt_entry(entry: Any, index: int, action: str | None = None) -> dict[str, Any]:
    """Validate an ack, nack or touch entry and return it as a dict.

    With an action, a key that action does not know raises, so a mistyped
    option such as 'relase' cannot be silently ignored.
    """
    if not isinstance(entry, dict):
        raise ValidationError(f"entry {index} must be an object with id and receipt")
    if action is not None:
        _check_entry_keys(entry, index, action)
    for field in ("id", "receipt"):
        if not isinstance(entry.get(field), str) or not entry[field]:
            raise ValidationError(
                f"entry {index} has no valid {field!r}; pass the string that "
                "reserve returned",
                index=index,
            )
        if not entry[field].isascii():
            _check_unicode(f"entry {index} {field}", entry[field])
    checked = dict(entry)
    checked["delay_s"] = check_optional_duration(
        "delay_s", entry.get("delay_s"), 0.0, MAX_DELAY_S
    )
    checked["visibility_timeout_s"] = check_optional_duration(
        "visibility_timeout_s", entry.get("visibility_timeout_s"), 0.1, MAX_VISIBILITY_TIMEOUT_S
    )
    checked["retry_after_s"] = _check_retry_after(entry, index)
    checked["result_ttl_s"] = check_optional_duration(
        "result_ttl_s", entry.get("result_ttl_s"), 0.0, MAX_RESULT_TTL_S
    )
    result = entry.get("result")
    if result is not None:
        _check_result(result, index)
    error = entry.get("error")
    if error is not None and not isinstance(error, str):
        raise ValidationError(f"entry {index} 'error' must be a string", index=index)
    if error is not None:
        checked["error"] = error[:MAX_ERROR_TEXT]

    status = entry.get("status")
    if status is not None and status not in RESULT_STATUSES:
        raise ValidationError(
            f"entry {index} has invalid status {status!r}: use one of "
            f"{', '.join(RESULT_STATUSES)}",
            index=index,
        )
    check_run_fields(entry, checked, index)
    if action == "progress":
        require_progress(entry, index)
    has_outcome = result is not None or status is not None or bool(entry.get("cancelled"))
    if checked["result_ttl_s"] is None and has_outcome:
        checked["result_ttl_s"] = DEFAULT_RESULT_TTL_S
    return checked


def _check_retry_after(entry: dict[str, Any], index: int) -> float | None:
    """Return a nack entry's retry_after_s: more than 0 and at most a day.

    It defers the message without using up an attempt, so it cannot be
    combined with delay_s, dead or release, which decide the attempt
    differently.
    """
    value = entry.get("retry_after_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(
            f"entry {index} has invalid retry_after_s {value!r}: expected a number of seconds",
            index=index,
        )
    if not math.isfinite(value) or not 0 < value <= MAX_RETRY_AFTER_S:
        raise ValidationError(
            f"entry {index} has invalid retry_after_s {value!r}: use more than 0 "
            f"and at most {MAX_RETRY_AFTER_S:g} seconds (one day)",
            index=index,
        )
    # `is`, because 0 == False: an explicit delay_s of 0 clashes too.
    clashing = [
        key for key in ("delay_s", "dead", "release")
        if entry.get(key) is not None and entry.get(key) is not False
    ]
    if clashing:
        raise ValidationError(
            f"entry {index} sets retry_after_s and {clashing[0]}; keep one, because "
            "retry_after_s already decides when the message returns",
            index=index,
        )
    return float(value)


def _check_result(result: Any, index: int) -> None:
    """Raise unless the store can encode the result as JSON."""
    try:
        orjson.dumps(result)
    except TypeError as exc:
        raise ValidationError(
            f"entry {index} 'result' is not JSON-serialisable ({exc}); store JSON "
            "values (objects, arrays, strings, numbers up to 64 bits, booleans, null)",
            index=index,
        ) from exc


def _check_entry_keys(entry: dict[str, Any], index: int, action: str) -> None:
    known = ENTRY_KEYS[action]
    unknown = sorted(str(key) for key in entry if key not in known)
    if unknown:
        raise ValidationError(
            f"entry {index} has unknown key {unknown[0]!r} for {action}; "
            f"known keys are: {', '.join(sorted(known))}",
            index=index,
        )


def check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"invalid {name} {value!r}: expected an integer")
    if not low <= value <= high:
        raise ValidationError(f"invalid {name} {value!r}: use {low:,} to {high:,}")
    return value


def _check_optional_int(name: str, value: Any, low: int, high: int) -> int | None:
    return None if value is None else check_int(name, value, low, high)


def check_optional_duration(name: str, value: Any, low: float, high: float) -> float | None:
    """Return the duration in seconds, or raise naming the allowed range."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValidationError(f"invalid {name} {value!r}: expected a number of seconds")
    if not math.isfinite(value) or not low <= value <= high:
        raise ValidationError(
            f"invalid {name} {value!r}: use {format_seconds(low)} to {format_seconds(high)}"
        )
    return float(value)


def check_timestamp(name: str, value: Any) -> float | None:
    """Return a Unix time in seconds, or None, or raise ValidationError naming it."""
    return _check_timestamp(name, value)


def _check_timestamp(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"invalid {name} {value!r}: expected a Unix time in seconds")
    if value > time.time() + MAX_DELAY_S:
        raise ValidationError(f"invalid {name} {value!r}: it is more than a year ahead")
    return float(value)


def check_key(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_KEY_LENGTH:
        raise ValidationError(
            f"invalid {name} {value!r}: use a string of 1 to {MAX_KEY_LENGTH} characters"
        )
    if not value.isascii():
        _check_unicode(name, value)
    return value


def _check_unicode(name: str, value: str) -> None:
    """Raise if a string has lone surrogates, which UTF-8 cannot store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"invalid {name} {value!r}: {exc.reason}") from exc


def _encode_headers(headers: Any, index: int) -> str | None:
    if not headers:
        return None
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
        raise ValidationError(
            f"message {index} headers must be an object of at most {MAX_HEADERS} "
            "string entries",
            index=index,
        )
    for key, value in headers.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise ValidationError(f"message {index} has invalid header name {key!r}")
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE:
            raise ValidationError(
                f"message {index} header {key!r} must be a string of at most "
                f"{MAX_HEADER_VALUE} characters"
            )
    try:
        return orjson.dumps(headers).decode()
    except TypeError as exc:
        raise ValidationError(f"message {index} headers are not storable: {exc}") from exc
