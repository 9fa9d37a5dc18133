"""Completion counter and latency recorder shared by every benchmarked system.

Every system runs the same task bodies, which call this module. The tasks write to
one Redis database that no broker uses, so each system's tasks do the same extra
work: one Redis round trip per task.

Timestamps are ``time.time()`` values taken in the worker and in the harness. Both
run on the same host, so they share one clock.
"""

from __future__ import annotations

import os
import time

import redis

PROBE_URL_ENV = "BENCH_PROBE_URL"
PROBE_PREFIX_ENV = "BENCH_PROBE_PREFIX"

# Records one task call that finished ARGV[2] items whose values add up to
# ARGV[3]. The first call sets the first-completion time and its item count;
# every call overwrites the last-completion time and adds to the counters.
# Redis runs the script atomically, so the last SET it executes belongs to the
# last call to finish.
_TASK_DONE_SCRIPT = """
if redis.call('SETNX', KEYS[1], ARGV[1]) == 1 then
    redis.call('SET', KEYS[4], ARGV[2])
end
redis.call('SET', KEYS[3], ARGV[1])
redis.call('INCR', KEYS[5])
redis.call('INCRBY', KEYS[6], ARGV[3])
return redis.call('INCRBY', KEYS[2], ARGV[2])
"""


class Probe:
    """Redis keys under one prefix that record completions and pickup latencies."""

    def __init__(self, url: str, prefix: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.prefix = prefix
        self.first_key = f"{prefix}:first_done"
        self.count_key = f"{prefix}:done"
        self.last_key = f"{prefix}:last_done"
        self.latency_key = f"{prefix}:latency"
        self.first_items_key = f"{prefix}:first_items"
        self.calls_key = f"{prefix}:calls"
        self.value_sum_key = f"{prefix}:value_sum"
        self._task_done = self.client.register_script(_TASK_DONE_SCRIPT)

    @classmethod
    def from_env(cls) -> Probe:
        """Build the probe that the harness configured for this worker process."""
        try:
            url = os.environ[PROBE_URL_ENV]
            prefix = os.environ[PROBE_PREFIX_ENV]
        except KeyError as missing:
            raise RuntimeError(
                f"environment variable {missing} is missing; "
                "start workers through bench/run.py"
            ) from None
        return cls(url, prefix)

    def keys(self) -> list[str]:
        return [self.first_key, self.count_key, self.last_key, self.latency_key,
                self.first_items_key, self.calls_key, self.value_sum_key]

    # Calls made by the task bodies.

    def mark_done(self, items: int = 1, value_sum: int = 0) -> int:
        """Count one finished call of ``items`` items and return the new item total.

        A batch task passes the size of its batch, and ``value_sum``, the sum
        of its integer items, which the harness compares with what it posted.
        """
        keys = [self.first_key, self.count_key, self.last_key, self.first_items_key,
                self.calls_key, self.value_sum_key]
        return int(self._task_done(keys=keys, args=[repr(time.time()), items, value_sum]))

    def record_latency(self, enqueued_at: float) -> None:
        """Store the seconds between ``enqueued_at`` and now."""
        self.client.rpush(self.latency_key, repr(time.time() - enqueued_at))

    # Calls made by the harness.

    def reset(self) -> None:
        self.client.delete(*self.keys())

    def done_count(self) -> int:
        return int(self.client.get(self.count_key) or 0)

    def done_window(self) -> tuple[float, float] | None:
        """Return the first and last completion times, or None before any task."""
        first, last = self.client.mget(self.first_key, self.last_key)
        if first is None or last is None:
            return None
        return float(first), float(last)

    def first_items(self) -> int:
        """Return the item count of the first call to finish, or 0 before any call."""
        return int(self.client.get(self.first_items_key) or 0)

    def call_count(self) -> int:
        return int(self.client.get(self.calls_key) or 0)

    def value_sum(self) -> int:
        return int(self.client.get(self.value_sum_key) or 0)

    def latency_count(self) -> int:
        return int(self.client.llen(self.latency_key))

    def latencies(self) -> list[float]:
        """Return the recorded latencies in seconds, in recording order."""
        return [float(value) for value in self.client.lrange(self.latency_key, 0, -1)]


_worker_probe: Probe | None = None


def worker_probe() -> Probe:
    """Return this process's probe, built on first use from the environment."""
    global _worker_probe
    if _worker_probe is None:
        _worker_probe = Probe.from_env()
    return _worker_probe
