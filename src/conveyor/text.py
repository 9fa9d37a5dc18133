"""Small helpers for the wording of log lines and messages."""

from __future__ import annotations


def plural(count: float, noun: str) -> str:
    """Return `1 message` or `3 messages`; counts print with %g, so 0.5 stays 0.5."""
    return f"{count:g} {noun}" if count == 1 else f"{count:g} {noun}s"
