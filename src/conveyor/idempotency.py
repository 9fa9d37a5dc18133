"""Idempotency keys: dedup ids in a namespace of their own.

A message posted with an `idempotency_key` claims a dedup entry as a
`dedup_id` does, in the same table and for the queue's dedup window. The
stores keep a raw dedup id as text (as UTF-8 bytes in PostgreSQL) and an
idempotency key as bytes that start with 0xFF. No UTF-8 text contains that
byte, and SQLite never finds a BLOB equal to a TEXT value, so a key can
never match a raw dedup id, whatever the two strings are.
"""

from __future__ import annotations

KEY_PREFIX = b"\xff"


def stored_key(dedup_id: str | None, idempotency_key: str | None) -> str | bytes | None:
    """Return the value a store keeps in its dedup columns for a message."""
    if idempotency_key is not None:
        return KEY_PREFIX + idempotency_key.encode()
    return dedup_id


def split_stored_key(value: str | bytes | memoryview | None) -> tuple[str | None, str | None]:
    """Return (dedup_id, idempotency_key) from a stored dedup column value."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return value, None
    raw = bytes(value)
    if raw.startswith(KEY_PREFIX):
        return None, raw[len(KEY_PREFIX):].decode()
    return raw.decode(), None
