"""Flow-control decisions that every store applies in its reserve transaction.

A queue's flow state (its token bucket) is one stored row per queue. The
store reads and locks that row, gets from `reserve_limit` the number of
messages the reserve may lease, leases them, then calls `after_reserve`
and writes the row back in the same transaction. So a limit holds across
every process that shares the store. The functions here are pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..settings import QueueSettings

# A bucket that refilled to 2.9999999999 tokens through float rounding
# still grants 3 whole tokens.
TOKEN_EPSILON = 1e-9


@dataclass
class FlowState:
    """The stored flow-control state of one queue.

    `tokens` and `tokens_at` are the token bucket: its level and the time
    it was last refilled. None means the bucket was never used, so it
    starts full. `wake_at` is the earliest time flow control may let a
    message out again, or None when no timer applies. Long polls wait
    for it.
    """

    tokens: float | None = None
    tokens_at: float | None = None
    wake_at: float | None = None


def needs_state(settings: QueueSettings) -> bool:
    """Tell whether a reserve on the queue must read and lock its flow state."""
    return settings.rate_limit_per_s is not None or settings.max_in_flight is not None


def refill(settings: QueueSettings, state: FlowState, now: float) -> None:
    """Add the tokens earned since the last refill, up to the burst size."""
    rate = settings.rate_limit_per_s
    if rate is None:
        return
    if state.tokens is None or state.tokens_at is None:
        state.tokens = float(settings.burst)
    else:
        earned = max(now - state.tokens_at, 0.0) * rate
        state.tokens = min(float(settings.burst), state.tokens + earned)
    state.tokens_at = now


def reserve_limit(
    settings: QueueSettings, state: FlowState, in_flight: int, requested: int, now: float
) -> int:
    """Return how many messages a reserve may lease now, at most `requested`.

    `in_flight` counts the queue's unexpired leases; it is only read when
    max_in_flight is set.
    """
    limit = requested
    if settings.max_in_flight is not None:
        limit = min(limit, max(settings.max_in_flight - in_flight, 0))
    if settings.rate_limit_per_s is not None:
        refill(settings, state, now)
        limit = min(limit, whole_tokens(state))
    return limit


def after_reserve(settings: QueueSettings, state: FlowState, leased: int, now: float) -> None:
    """Take one token per leased message and work out when to wake long polls."""
    if settings.rate_limit_per_s is not None and state.tokens is not None:
        state.tokens = max(state.tokens - leased, 0.0)
    state.wake_at = next_token_at(settings, state, now)


def whole_tokens(state: FlowState) -> int:
    return int(math.floor((state.tokens or 0.0) + TOKEN_EPSILON))


def next_token_at(settings: QueueSettings, state: FlowState, now: float) -> float | None:
    """Return when the bucket next contains a whole token, or None if it contains one now."""
    rate = settings.rate_limit_per_s
    if rate is None or state.tokens is None or whole_tokens(state) >= 1:
        return None
    return now + (1.0 - state.tokens) / rate


def tokens_now(settings: QueueSettings, state: FlowState | None, now: float) -> float | None:
    """Return the bucket's level at `now` without changing the state, for stats."""
    if settings.rate_limit_per_s is None:
        return None
    copy = FlowState() if state is None else FlowState(state.tokens, state.tokens_at)
    refill(settings, copy, now)
    return copy.tokens
