"""The fixed amount of pure-Python CPU work that each W4 task does.

The harness and every worker app import this module, so the tasks of all
systems run the same loop, and the harness times that loop on its own to
give the report a reference.
"""

from __future__ import annotations

import statistics
import time

# Loop iterations per W4 task: about 2 ms of one core on the 2-CPU virtual
# machine where W4 was written. Each run times the loop on its own machine
# and the report shows that time; --cpu-iterations changes the count.
DEFAULT_ITERATIONS = 30_000
# Calls timed by measure_ms. The median of 100 calls of about 2 ms takes a
# fraction of a second, and a few slow calls barely move it.
TIMED_CALLS = 100


def burn_cpu(iterations: int) -> int:
    """Run ``iterations`` steps of integer arithmetic and return the result.

    The loop is pure Python, so it holds the global interpreter lock
    throughout, and threads of one process cannot run it in parallel.
    """
    total = 0
    for number in range(iterations):
        total += number * number % 7
    return total


def measure_ms(iterations: int, calls: int = TIMED_CALLS) -> float:
    """Return the median milliseconds of one ``burn_cpu(iterations)`` call in this process."""
    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        burn_cpu(iterations)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000.0
