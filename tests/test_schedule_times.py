"""Tick computation: cron in time zones across DST changes, intervals, catch-up."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from conveyor.schedule_times import GRACE_S, Timing, plan_ticks, to_iso


def utc(text: str) -> float:
    """Return the Unix time of a UTC 'YYYY-MM-DD HH:MM' string."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def local(zone: str, text: str, fold: int = 0) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone), fold=fold).timestamp()


def cron_ticks(expr: str, zone: str, after: str, until: str) -> list[str]:
    """Return the ticks of a cron schedule in (after, until] as local wall times with offsets."""
    timing = Timing(expr, zone, None, start_at=0.0)
    ticks = timing.ticks_between(utc(after), utc(until))
    return [
        datetime.fromtimestamp(t, tz=ZoneInfo(zone)).isoformat(timespec="minutes")
        for t in ticks
    ]


# Autumn: clocks go back. Berlin 2026-10-25 03:00 CEST -> 02:00 CET, so
# 02:00-03:00 happens twice; New York 2026-11-01 02:00 EDT -> 01:00 EST, so
# 01:00-02:00 happens twice.
AUTUMN_ONCE = [
    ("30 2 * * *", "Europe/Berlin", "2026-10-24 12:00", "2026-10-26 12:00",
     ["2026-10-25T02:30+02:00", "2026-10-26T02:30+01:00"]),
    ("30 1 * * *", "America/New_York", "2026-10-31 12:00", "2026-11-02 12:00",
     ["2026-11-01T01:30-04:00", "2026-11-02T01:30-05:00"]),
    # 01:30 happens once in Berlin on that day.
    ("30 1 * * *", "Europe/Berlin", "2026-10-24 12:00", "2026-10-26 12:00",
     ["2026-10-25T01:30+02:00", "2026-10-26T01:30+01:00"]),
]


@pytest.mark.parametrize("expr,zone,after,until,expected", AUTUMN_ONCE)
def test_autumn_repeated_time_runs_once(expr, zone, after, until, expected):
    assert cron_ticks(expr, zone, after, until) == expected


# Spring: clocks go forward. Berlin 2026-03-29 02:00 CET -> 03:00 CEST;
# New York 2026-03-08 02:00 EST -> 03:00 EDT. 02:30 does not exist.
SPRING_SKIPPED = [
    ("30 2 * * *", "Europe/Berlin", "2026-03-28 12:00", "2026-03-30 12:00",
     ["2026-03-29T03:00+02:00", "2026-03-30T02:30+02:00"]),
    ("30 2 * * *", "America/New_York", "2026-03-07 12:00", "2026-03-09 12:00",
     ["2026-03-08T03:00-04:00", "2026-03-09T02:30-04:00"]),
]


@pytest.mark.parametrize("expr,zone,after,until,expected", SPRING_SKIPPED)
def test_spring_skipped_time_runs_at_next_valid(expr, zone, after, until, expected):
    assert cron_ticks(expr, zone, after, until) == expected


def test_hourly_berlin_autumn_runs_both_passes():
    ticks = cron_ticks("0 * * * *", "Europe/Berlin", "2026-10-24 23:30", "2026-10-25 02:30")
    assert ticks == ["2026-10-25T02:00+02:00", "2026-10-25T02:00+01:00", "2026-10-25T03:00+01:00"]


def test_hourly_new_york_autumn_runs_both_passes():
    ticks = cron_ticks("0 * * * *", "America/New_York", "2026-11-01 04:30", "2026-11-01 07:30")
    assert ticks == ["2026-11-01T01:00-04:00", "2026-11-01T01:00-05:00", "2026-11-01T02:00-05:00"]


def test_hourly_berlin_spring_skips_missing_hour():
    ticks = cron_ticks("0 * * * *", "Europe/Berlin", "2026-03-28 23:30", "2026-03-29 02:30")
    assert ticks == ["2026-03-29T01:00+01:00", "2026-03-29T03:00+02:00", "2026-03-29T04:00+02:00"]


def test_hourly_new_york_spring_skips_missing_hour():
    ticks = cron_ticks("0 * * * *", "America/New_York", "2026-03-08 05:30", "2026-03-08 08:30")
    assert ticks == ["2026-03-08T01:00-05:00", "2026-03-08T03:00-04:00", "2026-03-08T04:00-04:00"]


def test_quarter_hourly_berlin_autumn_spacing():
    timing = Timing("*/15 * * * *", "Europe/Berlin", None, start_at=0.0)
    ticks = list(timing.ticks_between(utc("2026-10-24 23:50"), utc("2026-10-25 02:05")))
    assert len(ticks) == 9
    assert all(b - a == 900 for a, b in zip(ticks, ticks[1:]))


def test_quarter_hourly_new_york_autumn_count():
    ticks = cron_ticks("*/15 * * * *", "America/New_York", "2026-11-01 04:50", "2026-11-01 07:05")
    assert len(ticks) == 9
    assert ticks[0] == "2026-11-01T01:00-04:00"
    assert ticks[4] == "2026-11-01T01:00-05:00"


def test_quarter_hourly_berlin_spring_jumps_gap():
    ticks = cron_ticks("*/15 * * * *", "Europe/Berlin", "2026-03-29 00:40", "2026-03-29 01:20")
    assert ticks == ["2026-03-29T01:45+01:00", "2026-03-29T03:00+02:00", "2026-03-29T03:15+02:00"]


def test_quarter_hourly_new_york_spring_jumps_gap():
    ticks = cron_ticks("*/15 * * * *", "America/New_York", "2026-03-08 06:40", "2026-03-08 07:20")
    assert ticks == ["2026-03-08T01:45-05:00", "2026-03-08T03:00-04:00", "2026-03-08T03:15-04:00"]


def test_search_from_inside_repeated_hour_skips_second_pass():
    # 01:10 UTC is 02:10 CET, in the second pass of Berlin's repeated hour,
    # after the 02:30 CEST tick already happened.
    timing = Timing("30 2 * * *", "Europe/Berlin", None, start_at=0.0)
    nxt = timing.next_after(utc("2026-10-25 01:10"))
    assert nxt == local("Europe/Berlin", "2026-10-26 02:30")


def test_search_from_second_pass_keeps_wildcard_ticks():
    timing = Timing("*/15 * * * *", "Europe/Berlin", None, start_at=0.0)
    nxt = timing.next_after(utc("2026-10-25 01:10"))
    assert nxt == utc("2026-10-25 01:15")


def test_cron_respects_start_at():
    start = utc("2026-05-01 09:00")
    timing = Timing("0 9 * * *", "UTC", None, start_at=start)
    assert timing.next_after(0.0) == start


def test_cron_stops_at_end_at():
    timing = Timing("0 9 * * *", "UTC", None, start_at=0.0, end_at=utc("2026-05-02 10:00"))
    ticks = list(timing.ticks_after(utc("2026-04-30 12:00")))
    assert ticks == [utc("2026-05-01 09:00"), utc("2026-05-02 09:00")]


def test_interval_anchored_to_start_not_epoch():
    start = 1_000_000_007.25
    timing = Timing(None, "UTC", 60.0, start_at=start)
    ticks = list(timing.ticks_between(start + 10, start + 200))
    assert ticks == [start + 60, start + 120, start + 180]


def test_interval_first_tick_is_start():
    timing = Timing(None, "UTC", 300.0, start_at=5000.0)
    assert timing.next_after(0.0) == 5000.0


def test_interval_ticks_strictly_after():
    timing = Timing(None, "UTC", 10.0, start_at=100.0)
    assert timing.next_after(120.0) == 130.0


def test_interval_end_at_inclusive():
    timing = Timing(None, "UTC", 10.0, start_at=100.0, end_at=130.0)
    assert list(timing.ticks_after(99.0)) == [100.0, 110.0, 120.0, 130.0]


def test_interval_fractional_ticks_do_not_drift():
    timing = Timing(None, "UTC", 0.1 * 30, start_at=0.3)
    ticks = list(timing.ticks_between(0.0, 3000.0))
    assert len(ticks) == 1000
    assert ticks[-1] == pytest.approx(0.3 + 999 * 3.0)


# Catch-up planning. The schedule ticks each minute from 0; it was due at
# 60 and the scheduler looks at `now`.
EVERY_MINUTE = Timing(None, "UTC", 60.0, start_at=0.0)


def test_plan_on_time_fires_due_tick():
    plan = plan_ticks(EVERY_MINUTE, 60.0, 61.0, "skip", 100, None)
    assert [t.at for t in plan.fire] == [60.0]
    assert plan.next_fire_at == 120.0


def test_plan_not_due_fires_nothing():
    plan = plan_ticks(EVERY_MINUTE, 60.0, 59.0, "skip", 100, None)
    assert plan.fire == []
    assert plan.next_fire_at == 60.0


def test_plan_skip_fires_only_on_time_ticks():
    plan = plan_ticks(EVERY_MINUTE, 60.0, 6005.0, "skip", 100, None)
    assert [t.at for t in plan.fire] == [6000.0]
    assert plan.skipped == 99
    assert plan.next_fire_at == 6060.0


# Ticks every five minutes, due at 300; at 3100 the ticks 300 to 3000 are
# all more than GRACE_S late.
FIVE_MINUTES = Timing(None, "UTC", 300.0, start_at=0.0)
AFTER_OUTAGE = 3000.0 + GRACE_S + 40


def test_plan_skip_after_long_outage_fires_none_late():
    plan = plan_ticks(FIVE_MINUTES, 300.0, AFTER_OUTAGE, "skip", 100, None)
    assert plan.fire == []
    assert plan.skipped == 10
    assert plan.next_fire_at == 3300.0


def test_plan_once_fires_one_for_missed():
    plan = plan_ticks(FIVE_MINUTES, 300.0, AFTER_OUTAGE, "once", 100, None)
    assert [(t.at, t.missed) for t in plan.fire] == [(3000.0, 10)]
    assert plan.skipped == 0


def test_plan_all_fires_newest_up_to_limit():
    plan = plan_ticks(FIVE_MINUTES, 300.0, AFTER_OUTAGE, "all", 3, None)
    assert [t.at for t in plan.fire] == [2400.0, 2700.0, 3000.0]
    assert plan.skipped == 7


def test_plan_all_within_limit_fires_every_missed():
    plan = plan_ticks(FIVE_MINUTES, 300.0, 1500.0 + GRACE_S + 40, "all", 100, None)
    assert [t.at for t in plan.fire] == [300.0, 600.0, 900.0, 1200.0, 1500.0]


def test_plan_max_runs_caps_ticks():
    now = 60.0 * 5 + 1
    plan = plan_ticks(EVERY_MINUTE, 60.0, now, "all", 100, 2)
    assert [t.at for t in plan.fire] == [60.0, 120.0]
    assert plan.next_fire_at is None


def test_plan_end_at_finishes():
    timing = Timing(None, "UTC", 60.0, start_at=0.0, end_at=120.0)
    plan = plan_ticks(timing, 120.0, 121.0, "skip", 100, None)
    assert [t.at for t in plan.fire] == [120.0]
    assert plan.next_fire_at is None


def test_plan_cron_outage_days_once():
    timing = Timing("0 9 * * *", "Europe/Berlin", None, start_at=0.0)
    due = local("Europe/Berlin", "2026-05-01 09:00")
    now = local("Europe/Berlin", "2026-05-04 12:00")
    plan = plan_ticks(timing, due, now, "once", 100, None)
    assert [(t.at, t.missed) for t in plan.fire] == [
        (local("Europe/Berlin", "2026-05-04 09:00"), 4)
    ]
    assert plan.next_fire_at == local("Europe/Berlin", "2026-05-05 09:00")


def test_plan_grace_zero_misses_late_tick():
    plan = plan_ticks(EVERY_MINUTE, 60.0, 61.0, "skip", 100, None, grace_s=0.0)
    assert plan.fire == []
    assert plan.skipped == 1


def test_plan_long_grace_keeps_late_tick_on_time():
    plan = plan_ticks(FIVE_MINUTES, 300.0, 3100.0, "skip", 100, None, grace_s=3600.0)
    assert [t.at for t in plan.fire] == [3000.0]
    assert plan.skipped == 0


EVERY_SECOND = Timing(None, "UTC", 1.0, start_at=0.0)


def test_plan_skip_coalesces_on_time_ticks():
    plan = plan_ticks(EVERY_SECOND, 1.0, 50.5, "skip", 100, None)
    assert [t.at for t in plan.fire] == [50.0]
    assert plan.coalesced == 49
    assert plan.skipped == 0


def test_plan_once_coalesces_on_time_ticks():
    plan = plan_ticks(EVERY_SECOND, 1.0, 100.5, "once", 100, None, grace_s=10.0)
    assert [(t.at, t.missed) for t in plan.fire] == [(90.0, 90), (100.0, 0)]
    assert plan.coalesced == 9


def test_plan_all_fires_each_on_time_tick():
    plan = plan_ticks(EVERY_SECOND, 1.0, 5.5, "all", 100, None)
    assert [t.at for t in plan.fire] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert plan.coalesced == 0


def test_to_iso_is_utc_with_z():
    assert to_iso(utc("2026-03-29 01:00")) == "2026-03-29T01:00:00.000Z"


def test_interval_catch_up_counts_match_stepping():
    # The arithmetic count of missed interval ticks equals stepping through them.
    rng = random.Random(7)
    for _ in range(300):
        interval = rng.choice([1.0, 0.7 * 3, 60.0, 86_400.0 / 7])
        start = rng.uniform(0, 1e9)
        timing = Timing(None, "UTC", interval, start_at=start)
        next_fire_at = timing.next_after(start + rng.uniform(-100, 5000))
        now = next_fire_at + rng.uniform(0, 3 * 3600)
        plan = plan_ticks(timing, next_fire_at, now, "all", 5, None)
        stepped = [next_fire_at, *timing.ticks_between(next_fire_at, now)]
        missed = [t for t in stepped if t < now - GRACE_S]
        on_time = [t for t in stepped if t >= now - GRACE_S]
        assert [t.at for t in plan.fire] == missed[-5:] + on_time
        assert plan.skipped == max(len(missed) - 5, 0)
