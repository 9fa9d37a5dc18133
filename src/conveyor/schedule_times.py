"""When a schedule fires: cron expressions in a time zone, and fixed intervals.

Times are Unix timestamps in seconds. A schedule's ticks are the instants
it fires at, and this module computes them without looking at any clock:
callers pass the time to start from.

Cron expressions have the five standard fields (minute, hour, day of
month, month, day of week) and are read by `cronsim` 2.9 in the
schedule's IANA time zone. Daylight saving time follows these rules:

- A local time that happens twice when clocks go back runs once, at its
  first occurrence, when the hour field is fixed ("30 1 * * *" in
  America/New_York, "30 2 * * *" in Europe/Berlin). Jobs with a wildcard
  or stepped hour field ("0 * * * *", "*/15 * * * *") run in both passes
  of the repeated hour, because each pass is a different instant.
- A local time that does not exist when clocks go forward runs once, at
  the first valid time after the gap ("30 2 * * *" runs at 03:00).
  Wildcard-hour jobs skip the missing minutes.

cronsim keeps these rules when it iterates through a transition, but an
iteration that starts inside the repeated hour can yield the second pass
of a fixed-hour job. So every search starts LOOKBACK_S before the instant
it searches after, and drops the ticks up to that instant.

An interval schedule ticks at start_at + k * interval_s for k = 0, 1, 2...
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator
from zoneinfo import ZoneInfo

from cronsim import CronSim

# The default misfire grace of a schedule (its grace_s): a tick fired at
# most this long after its time is on time. An older one
# was missed, because every server was down or the schedule was paused, and
# the schedule's catch-up policy decides whether it fires.
GRACE_S = 60.0
# A scheduler loop fires a tick a little late even when it keeps up (its
# wake-up and the store transaction take milliseconds, more on a busy
# host). Lateness up to this much never counts against grace_s, so a
# schedule with grace_s 0 still fires its ticks on time.
FIRE_SLACK_S = 1.0
# Catch-up looks back at most this far; older missed ticks never fire.
MAX_CATCH_UP_SCAN_S = 30 * 86_400.0
CATCH_UP_POLICIES = ("skip", "once", "all")

# Longer than any daylight saving shift in the tz database (the largest in
# use is Antarctica/Troll's two hours), so a search started this far back
# begins before any repeated hour that contains the instant searched from.
LOOKBACK_S = 3 * 3600.0


@dataclass(frozen=True)
class Timing:
    """A schedule's rule for its ticks: a cron expression or an interval.

    Exactly one of `cron` and `interval_s` is set. `start_at` is the first
    instant a tick may have, and the anchor of interval ticks. `end_at`,
    when set, is the last instant a tick may have.
    """

    cron: str | None
    timezone: str
    interval_s: float | None
    start_at: float
    end_at: float | None = None

    def next_after(self, after: float) -> float | None:
        """Return the first tick later than `after`, or None when there is none."""
        return next(self.ticks_after(after), None)

    def ticks_after(self, after: float) -> Iterator[float]:
        """Yield the ticks later than `after`, in order, up to `end_at`."""
        ticks = self._interval_ticks(after) if self.interval_s else self._cron_ticks(after)
        for tick in ticks:
            if self.end_at is not None and tick > self.end_at:
                return
            yield tick

    def ticks_between(self, after: float, until: float) -> Iterator[float]:
        """Yield the ticks later than `after` and at or before `until`."""
        for tick in self.ticks_after(after):
            if tick > until:
                return
            yield tick

    def _interval_ticks(self, after: float) -> Iterator[float]:
        interval = self.interval_s
        assert interval is not None
        k = 0
        if after >= self.start_at:
            k = math.floor((after - self.start_at) / interval) + 1
        while True:
            tick = self.start_at + k * interval
            # Floating-point rounding may put tick k a hair at or below `after`.
            if tick > after:
                yield tick
            k += 1

    def _cron_ticks(self, after: float) -> Iterator[float]:
        assert self.cron is not None
        # A tick equal to start_at counts, so search from just before it.
        after = max(after, self.start_at - 0.001)
        zone = ZoneInfo(self.timezone)
        begin = datetime.fromtimestamp(after - LOOKBACK_S, tz=timezone.utc).astimezone(zone)
        for local in CronSim(self.cron, begin.replace(microsecond=0)):
            tick = local.timestamp()
            if tick > after:
                yield tick


@dataclass(frozen=True)
class PlannedTick:
    """A tick to fire; `missed` is how many missed ticks it fires for (0: on time)."""

    at: float
    missed: int = 0


@dataclass
class FirePlan:
    """The plan of one scheduler step for one schedule.

    `fire` lists the ticks to fire, oldest first. `skipped` counts the
    missed ticks that do not fire. `coalesced` counts the on-time ticks
    that do not fire because a newer on-time tick fires for them (catch-up
    skip and once). `next_fire_at` is the schedule's next tick after the
    step, None when it has no more ticks.
    """

    fire: list[PlannedTick] = field(default_factory=list)
    skipped: int = 0
    coalesced: int = 0
    next_fire_at: float | None = None


def plan_ticks(
    timing: Timing,
    next_fire_at: float | None,
    now: float,
    catch_up: str,
    catch_up_limit: int,
    runs_left: int | None,
    grace_s: float = GRACE_S,
) -> FirePlan:
    """Decide which due ticks of a schedule fire at `now`, and its next tick after.

    Ticks due at or before `now` fire when on time (at most `grace_s`
    seconds late). Older, missed ticks follow `catch_up`: "skip" fires
    none, "once" fires the newest for all of them, "all" fires the newest
    `catch_up_limit`. `runs_left` (None: no limit) caps the ticks fired,
    oldest first. A resumed schedule passes `grace_s` 0, so every tick that
    passed while it was paused counts as missed.

    Under "skip" and "once", several on-time ticks in one step coalesce:
    only the newest fires. So a 1-second schedule with a 60-second grace
    posts one message, not 60, when its server comes back after a pause of
    under a minute. Under "all", each on-time tick fires.
    """
    if next_fire_at is None or next_fire_at > now:
        return FirePlan(next_fire_at=next_fire_at)

    cutoff = now - grace_s
    scan_from = max(next_fire_at, now - MAX_CATCH_UP_SCAN_S)
    keep = max(catch_up_limit, 1)
    if timing.interval_s:
        missed, missed_count = _interval_ticks_before(timing, scan_from, cutoff, keep)
    else:
        missed, missed_count = _cron_ticks_before(timing, scan_from, cutoff, keep)
    on_time = list(_ticks_from(timing, max(next_fire_at, cutoff), now))

    plan = FirePlan()
    if catch_up == "once" and missed_count:
        plan.fire.append(PlannedTick(missed[-1], missed=missed_count))
    elif catch_up == "all":
        plan.fire.extend(PlannedTick(tick, missed=1) for tick in missed)
    if catch_up != "all" and len(on_time) > 1:
        plan.coalesced = len(on_time) - 1
        on_time = on_time[-1:]
    plan.fire.extend(PlannedTick(tick) for tick in on_time)
    plan.skipped = missed_count - sum(tick.missed for tick in plan.fire)

    if runs_left is not None and len(plan.fire) >= runs_left:
        del plan.fire[runs_left:]
        return plan
    plan.next_fire_at = timing.next_after(now)
    return plan


def _ticks_from(timing: Timing, first: float, until: float) -> Iterator[float]:
    """Yield the ticks at or after `first` and at or before `until`."""
    return timing.ticks_between(math.nextafter(first, -math.inf), until)


def _cron_ticks_before(
    timing: Timing, first: float, before: float, keep: int
) -> tuple[list[float], int]:
    """Return the last `keep` ticks in [first, before) and how many there are."""
    kept: deque[float] = deque(maxlen=keep)
    count = 0
    for tick in _ticks_from(timing, first, before):
        if tick >= before:
            break
        kept.append(tick)
        count += 1
    return list(kept), count


def _interval_ticks_before(
    timing: Timing, first: float, before: float, keep: int
) -> tuple[list[float], int]:
    """Return the last `keep` interval ticks in [first, before) and how many there are.

    Counts with arithmetic instead of stepping through each tick, so a
    1-second schedule after a 30-day outage costs no more than after a
    minute. The loops only correct floating-point rounding of the estimates.
    """
    interval = timing.interval_s
    assert interval is not None
    start = timing.start_at
    if timing.end_at is not None:
        before = min(before, math.nextafter(timing.end_at, math.inf))

    low = max(0, math.ceil((first - start) / interval))
    while low > 0 and start + (low - 1) * interval >= first:
        low -= 1
    while start + low * interval < first:
        low += 1
    high = math.ceil((before - start) / interval) - 1
    while start + (high + 1) * interval < before:
        high += 1
    while high >= low and start + high * interval >= before:
        high -= 1

    count = max(0, high - low + 1)
    kept = [start + k * interval for k in range(max(low, high - keep + 1), high + 1)]
    return kept, count


def to_iso(timestamp: float) -> str:
    """Format a Unix time as ISO 8601 in UTC with milliseconds, e.g. 2026-03-29T01:00:00.000Z."""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
