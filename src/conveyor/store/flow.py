"""Flow-control decisions that every store applies in its own transactions.

A queue's flow state (its token bucket and its circuit breaker) is one
stored row per queue. A reserve reads and locks that row, gets from
`reserve_limit` the number of messages it may lease, leases them, then
calls `after_reserve` and writes the row back in the same transaction. An
ack, nack or lease expiry records its outcome and calls `after_outcomes`,
also under the row's lock. So every limit and every breaker change
applies across all processes that share the store. The functions here are pure.

The breaker's states: closed (deliver normally), open (deliver nothing
until the cool-down ends) and half_open (deliver up to `probes` messages
and judge by their outcomes). An operator may force it open or closed;
`mode` is then "open" or "closed" instead of "auto", and nothing changes
by itself until the mode is "auto" again.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from ..settings import BreakerSettings, QueueSettings

logger = logging.getLogger(__name__)

# A bucket that refilled to 2.9999999999 tokens through float rounding
# still grants 3 whole tokens.
TOKEN_EPSILON = 1e-9

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
AUTO = "auto"
MODES = (AUTO, OPEN, CLOSED)
# The breaker keeps outcome counts in this many time buckets per window, so
# the window slides in steps of a tenth of its length.
BUCKETS_PER_WINDOW = 10


@dataclass
class FlowState:
    """The stored flow-control state of one queue.

    `tokens` and `tokens_at` are the token bucket: its level and the time
    it was last refilled. None means the bucket was never used, so it
    starts full. `wake_at` is the earliest time flow control may let a
    message out again, or None when no timer applies; long polls wait for
    it. The breaker fields: `state`, `mode`, `opened_at` (when it last
    opened), `incident_at` (when it first opened since it was last closed),
    `cooldown_s` (the current cool-down), and the half-open phase's
    `probes_sent` and `probes_ok`.
    """

    tokens: float | None = None
    tokens_at: float | None = None
    wake_at: float | None = None
    state: str = CLOSED
    mode: str = AUTO
    opened_at: float | None = None
    incident_at: float | None = None
    cooldown_s: float | None = None
    probes_sent: int = 0
    probes_ok: int = 0


@dataclass
class BreakerChange:
    """One change of a breaker's state, with the numbers that caused it.

    `failures` and `attempts` are the counts in the window at the time, or
    None where the change did not look at them (the end of a cool-down).
    With `window_reset` the store drops the queue's outcome counts, and
    with `redrive_since` it redrives what was dead-lettered since then.
    """

    at: float
    from_state: str
    to_state: str
    failures: int | None
    attempts: int | None
    cooldown_s: float | None
    reason: str
    window_reset: bool = False
    redrive_since: float | None = None

    @property
    def ratio(self) -> float | None:
        return failure_ratio(self.failures, self.attempts)


@dataclass
class ReservePlan:
    """How many messages a reserve may lease, and the breaker changes on the way."""

    limit: int
    changes: list[BreakerChange] = field(default_factory=list)


def needs_state(settings: QueueSettings) -> bool:
    """Tell whether a reserve on the queue must read and lock its flow state."""
    return (
        settings.rate_limit_per_s is not None
        or settings.max_in_flight is not None
        or settings.breaker is not None
    )


def failure_ratio(failures: int | None, attempts: int | None) -> float | None:
    if failures is None or not attempts:
        return None
    return failures / attempts


# Token bucket --------------------------------------------------------------


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


# Reserve -------------------------------------------------------------------


def reserve_limit(
    settings: QueueSettings, state: FlowState, in_flight: int, requested: int, now: float
) -> ReservePlan:
    """Decide how many messages a reserve may lease now, at most `requested`.

    `in_flight` counts the queue's unexpired leases; it is only read when
    max_in_flight is set. An open breaker whose cool-down has ended moves
    to half_open here, so the first reserve after the cool-down sends the
    probes, whichever server runs it.
    """
    plan = ReservePlan(requested)
    if settings.breaker is not None:
        plan.limit = min(plan.limit, _breaker_limit(settings.breaker, state, now, plan))
    if settings.max_in_flight is not None:
        plan.limit = min(plan.limit, max(settings.max_in_flight - in_flight, 0))
    if settings.rate_limit_per_s is not None:
        refill(settings, state, now)
        plan.limit = min(plan.limit, whole_tokens(state))
    return plan


def after_reserve(
    settings: QueueSettings,
    state: FlowState,
    leased: int,
    found_nothing: bool,
    in_flight: int,
    now: float,
) -> list[BreakerChange]:
    """Take one token per leased message, count probes, and set the next wake-up.

    `found_nothing` is true when the reserve was allowed messages but
    found none ready. A half-open breaker whose probes all succeeded then
    closes, because no further probe can come.
    """
    changes: list[BreakerChange] = []
    if settings.rate_limit_per_s is not None and state.tokens is not None:
        state.tokens = max(state.tokens - leased, 0.0)
    if state.state == HALF_OPEN:
        state.probes_sent += leased
        done = state.probes_sent > 0 and state.probes_ok >= state.probes_sent
        if done and found_nothing and in_flight == 0 and state.mode == AUTO:
            reason = (
                f"all {state.probes_ok} probes succeeded and no more messages are ready"
            )
            changes.append(_close(state, now, reason, settings.breaker))
    state.wake_at = wake_at(settings, state, now)
    return changes


def _breaker_limit(
    breaker: BreakerSettings, state: FlowState, now: float, plan: ReservePlan
) -> int:
    if state.mode == OPEN:
        return 0
    if state.mode == CLOSED or state.state == CLOSED:
        return math.inf  # type: ignore[return-value]
    if state.state == OPEN:
        if now < _probe_at(state):
            return 0
        plan.changes.append(_half_open(breaker, state, now))
    return max(breaker.probes - state.probes_sent, 0)


def _probe_at(state: FlowState) -> float:
    return (state.opened_at or 0.0) + (state.cooldown_s or 0.0)


def next_probe_at(state: FlowState) -> float | None:
    """Return when an open breaker lets its probes through, or None."""
    if state.state != OPEN or state.mode != AUTO:
        return None
    return _probe_at(state)


def wake_at(settings: QueueSettings, state: FlowState, now: float) -> float | None:
    """Return when flow control may next let a message out, if a timer decides it."""
    if settings.breaker is not None and state.mode == OPEN:
        return None
    if settings.breaker is not None and state.state == OPEN and state.mode == AUTO:
        return _probe_at(state)
    return next_token_at(settings, state, now)


# Outcomes ------------------------------------------------------------------


def bucket_start(breaker: BreakerSettings, now: float) -> float:
    """Return the start of the outcome bucket that `now` falls in."""
    width = breaker.window_s / BUCKETS_PER_WINDOW
    return math.floor(now / width) * width


def after_outcomes(
    breaker: BreakerSettings,
    state: FlowState,
    successes: int,
    failures: int,
    window_failures: int,
    window_attempts: int,
    now: float,
) -> list[BreakerChange]:
    """Decide what finished attempts do to the breaker.

    `successes` and `failures` are this transaction's outcomes; the
    window counts include them.
    """
    if state.mode != AUTO:
        return []
    if state.state == CLOSED:
        return _maybe_open(breaker, state, failures, window_failures, window_attempts, now)
    if state.state != HALF_OPEN:
        return []
    if failures:
        cooldown_s = min((state.cooldown_s or breaker.cooldown_s) * 2, breaker.max_cooldown_s)
        reason = (
            f"{failures} probe(s) failed; opening again for {cooldown_s:g} s "
            "(the last cool-down doubled)"
        )
        return [_open(state, now, cooldown_s, window_failures, window_attempts, reason)]
    state.probes_ok += successes
    if state.probes_ok < breaker.probes:
        return []
    reason = f"all {breaker.probes} probes succeeded"
    return [_close(state, now, reason, breaker, window_failures, window_attempts)]


def _maybe_open(
    breaker: BreakerSettings,
    state: FlowState,
    failures: int,
    window_failures: int,
    window_attempts: int,
    now: float,
) -> list[BreakerChange]:
    if not failures or window_attempts < breaker.min_attempts:
        return []
    ratio = window_failures / window_attempts
    if ratio < breaker.failure_ratio:
        return []
    reason = (
        f"{window_failures} of {window_attempts} attempts failed in the last "
        f"{breaker.window_s:g} s, a failure ratio of {ratio:.2f}, at or above "
        f"{breaker.failure_ratio:g}"
    )
    state.incident_at = now
    change = _open(state, now, breaker.cooldown_s, window_failures, window_attempts, reason)
    return [change]


# Operator ------------------------------------------------------------------


def force(
    breaker: BreakerSettings,
    state: FlowState,
    mode: str,
    window_failures: int,
    window_attempts: int,
    now: float,
) -> list[BreakerChange]:
    """Apply an operator's choice: "open", "closed" or "auto".

    Forcing open or closed changes the state at once and keeps it. "auto"
    hands control back: a breaker forced open then probes after its
    cool-down, one forced closed judges the next window of outcomes.
    """
    previous_mode = state.mode
    state.mode = mode
    if mode == OPEN and state.state != OPEN:
        state.incident_at = state.incident_at or now
        reason = "forced open by an operator"
        return [_open(state, now, breaker.cooldown_s, window_failures, window_attempts, reason)]
    if mode == CLOSED and state.state != CLOSED:
        reason = "forced closed by an operator"
        return [_close(state, now, reason, breaker, window_failures, window_attempts)]
    if mode != previous_mode:
        # The state stays, but the event list still records who took control.
        if mode == AUTO:
            reason = f"automatic control resumed by an operator (was forced {previous_mode})"
        else:
            reason = f"forced {mode} by an operator while already {state.state}"
        return [
            BreakerChange(
                now, state.state, state.state, window_failures, window_attempts,
                state.cooldown_s, reason,
            )
        ]
    return []


# Transitions ---------------------------------------------------------------


def _open(
    state: FlowState,
    now: float,
    cooldown_s: float,
    window_failures: int,
    window_attempts: int,
    reason: str,
) -> BreakerChange:
    change = BreakerChange(
        now, state.state, OPEN, window_failures, window_attempts, cooldown_s, reason
    )
    state.state = OPEN
    state.opened_at = now
    state.cooldown_s = cooldown_s
    state.probes_sent = 0
    state.probes_ok = 0
    return change


def _half_open(breaker: BreakerSettings, state: FlowState, now: float) -> BreakerChange:
    reason = (
        f"cool-down of {state.cooldown_s or 0:g} s ended; letting up to "
        f"{breaker.probes} probe(s) through"
    )
    change = BreakerChange(now, OPEN, HALF_OPEN, None, None, state.cooldown_s, reason)
    state.state = HALF_OPEN
    state.probes_sent = 0
    state.probes_ok = 0
    return change


def _close(
    state: FlowState,
    now: float,
    reason: str,
    breaker: BreakerSettings | None,
    window_failures: int = 0,
    window_attempts: int = 0,
) -> BreakerChange:
    redrive_since = None
    if breaker is not None and breaker.redrive_on_close:
        redrive_since = state.incident_at
    change = BreakerChange(
        now, state.state, CLOSED, window_failures, window_attempts, None, reason,
        window_reset=True, redrive_since=redrive_since,
    )
    state.state = CLOSED
    state.opened_at = None
    state.incident_at = None
    state.cooldown_s = None
    state.probes_sent = 0
    state.probes_ok = 0
    return change


def log_change(queue: str, change: BreakerChange) -> None:
    """Log a breaker change at WARNING with the numbers that caused it."""
    ratio = change.ratio
    counts = "window not counted"
    if change.failures is not None:
        counts = f"{change.failures} of {change.attempts} attempts failed"
    logger.warning(
        "Circuit breaker of queue %s: %s -> %s (%s, ratio %s, cool-down %s): %s",
        queue, change.from_state, change.to_state, counts,
        "-" if ratio is None else f"{ratio:.2f}",
        "-" if change.cooldown_s is None else f"{change.cooldown_s:g} s",
        change.reason,
    )
