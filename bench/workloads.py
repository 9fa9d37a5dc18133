"""The three workloads, run against one peer: post throughput, drain, pickup latency."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from peers.base import Peer
from probe import Probe

log = logging.getLogger("bench")
console = Console(stderr=True)

POLL_INTERVAL_SECONDS = 0.05
# Interval of the plain progress lines printed when stderr is not a terminal.
PROGRESS_LINE_SECONDS = 15.0
LATENCY_WARMUP_TASKS = 20
# W3 counts a system as behind the posting rate when its last task finishes this
# long after the last post.
FELL_BEHIND_SECONDS = 1.0


@dataclass
class WorkloadOptions:
    drain_n: int  # W2: tasks posted before the workers start
    post_n: int  # W1: messages posted in each of the three modes
    batch_size: int  # messages per post_batch call
    producers: int  # W1: producer threads of the concurrent one-per-call mode
    latency_rate: float  # W3: tasks per second
    latency_seconds: float  # W3: how long to post at that rate
    drain_timeout: float  # W2: seconds to wait for all tasks to finish
    settle_timeout: float  # W3: seconds to wait for the last tasks after posting stops


class WorkloadTimeout(RuntimeError):
    """Tasks did not finish within the allowed time."""


def make_progress() -> Progress:
    return Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        # Outside a terminal the bars are off. The runner's per-workload lines
        # and the drain's periodic lines still show progress.
        disable=not console.is_terminal,
    )


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def measure_post(peer: Peer, options: WorkloadOptions) -> dict:
    """W1: time posting ``post_n`` no-op messages in each of three modes.

    The modes are one per call from one thread, one per call from
    ``producers`` threads at once, and batches from one thread. Workers are
    stopped, so the numbers cover only the enqueue path. The queue is purged
    after each mode.
    """
    count = options.post_n
    results = {}
    with make_progress() as progress:
        bar = progress.add_task("W1 post one per call", total=count)
        started = time.perf_counter()
        for index in range(count):
            peer.post_one("noop", (index,))
            if index % 200 == 0:
                progress.update(bar, completed=index)
        seconds = time.perf_counter() - started
        results["single"] = _rate_record(count, seconds)
        peer.purge()

        bar = progress.add_task(
            f"W1 post one per call from {options.producers} threads", total=count
        )
        seconds = _post_concurrently(peer, count, options.producers, progress, bar)
        results["concurrent"] = _rate_record(count, seconds)
        results["concurrent"]["producers"] = options.producers
        peer.purge()

        args_list = [(index,) for index in range(count)]
        bar = progress.add_task(f"W1 post in batches of {options.batch_size}", total=count)
        started = time.perf_counter()
        for chunk in _chunks(args_list, options.batch_size):
            peer.post_batch("noop", chunk)
            progress.advance(bar, len(chunk))
        seconds = time.perf_counter() - started
        results["batch"] = _rate_record(count, seconds)
        results["batch"]["batch_size"] = options.batch_size
        peer.purge()
    return results


def _post_concurrently(peer: Peer, count: int, producers: int, progress: Progress,
                       bar: TaskID) -> float:
    """Post ``count`` no-op messages one per call from ``producers`` threads at once.

    Each thread opens its producer with ``peer.open_producer()`` before the
    clock starts, and all threads start posting together. Returns the seconds
    from that start until the last thread posted its last message, so closing
    the producers is not timed. Raises the first error of any thread.
    """
    start_times: list[float] = []
    # The barrier's action runs once, when every thread and this one have arrived.
    start = threading.Barrier(
        producers + 1, action=lambda: start_times.append(time.perf_counter())
    )
    failed = threading.Event()
    end_times: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def produce(indexes: range) -> None:
        try:
            with peer.open_producer() as post_one:
                start.wait()
                for done, index in enumerate(indexes, 1):
                    if failed.is_set():
                        return
                    post_one("noop", (index,))
                    if done % 200 == 0:
                        progress.advance(bar, 200)
                finished = time.perf_counter()
            with lock:
                end_times.append(finished)
        except threading.BrokenBarrierError:
            # Another thread failed before the start and aborted the barrier.
            return
        except BaseException as error:
            with lock:
                errors.append(error)
            failed.set()
            start.abort()

    # Thread i posts the indexes i, i + producers, i + 2 * producers, ...
    threads = [
        threading.Thread(target=produce, args=(range(first, count, producers),),
                         name=f"w1-producer-{first}", daemon=True)
        for first in range(producers)
    ]
    for thread in threads:
        thread.start()
    try:
        try:
            start.wait()
        except threading.BrokenBarrierError:
            pass
        for thread in threads:
            thread.join()
    except BaseException:
        # Ctrl-C or SIGTERM: stop the producers before the runner cleans up the peer.
        failed.set()
        start.abort()
        raise
    if errors:
        raise RuntimeError(
            f"W1: {len(errors)} of {producers} producer threads failed; the first error "
            f"is {type(errors[0]).__name__}: {errors[0]}"
        ) from errors[0]
    progress.update(bar, completed=count)
    return max(end_times) - start_times[0]


def _rate_record(count: int, seconds: float) -> dict:
    return {
        "messages": count,
        "seconds": round(seconds, 4),
        "messages_per_second": round(count / seconds, 1),
    }


def measure_drain(peer: Peer, probe: Probe, options: WorkloadOptions) -> dict:
    """W2: post ``drain_n`` no-op tasks, start the workers and time the drain.

    Leaves the workers running for W3; see ``drain_posted_tasks``.
    """
    args_list = [(index,) for index in range(options.drain_n)]
    return drain_posted_tasks(peer, probe, "W2", "noop", args_list, options)


def drain_posted_tasks(peer: Peer, probe: Probe, label: str, task: str,
                       args_list: list[tuple], options: WorkloadOptions) -> dict:
    """Post a ``task`` message per entry of ``args_list``, start the workers, time the drain.

    The workers must be stopped when this is called, and are left running.
    The rate counts the items finished after the first task call, divided
    by the time from the end of that call to the end of the last one. Both
    times come from the probe, so worker start-up is excluded. ``label``
    names the workload in progress bars, log lines and errors.
    """
    total = len(args_list)
    probe.reset()
    with make_progress() as progress:
        bar = progress.add_task(f"{label} pre-post", total=total)
        started = time.perf_counter()
        for chunk in _chunks(args_list, options.batch_size):
            peer.post_batch(task, chunk)
            progress.advance(bar, len(chunk))
        post_seconds = time.perf_counter() - started
        peer.after_bulk_post()

        bar = progress.add_task(f"{label} drain", total=total)
        workers_started_at = time.time()
        peer.start_workers()
        done = _wait_for_count(peer, probe, label, total, options.drain_timeout,
                               progress, bar)

    record = {"tasks": total, "completed": done, "pre_post_seconds": round(post_seconds, 3)}
    record.update(_drain_rate(probe, label, done, options.drain_timeout,
                              workers_started_at))
    if done >= total:
        record.update(_wait_for_empty_queue(peer, label, options.settle_timeout))
    if done < total:
        record["timed_out"] = True
        log.warning("%s: only %d of %d tasks finished within %.0f s",
                    label, done, total, options.drain_timeout)
    return record


def _wait_for_count(peer: Peer, probe: Probe, label: str, total: int, timeout: float,
                    progress: Progress, bar: TaskID) -> int:
    """Poll the probe until ``total`` items are done or ``timeout`` passes; return the count.

    Shows a progress bar on a terminal and a plain line every
    PROGRESS_LINE_SECONDS otherwise.
    """
    deadline = time.monotonic() + timeout
    done = 0
    next_line_at = time.monotonic() + PROGRESS_LINE_SECONDS
    while done < total:
        peer.check_workers()
        if time.monotonic() > deadline:
            break
        time.sleep(POLL_INTERVAL_SECONDS)
        done = probe.done_count()
        progress.update(bar, completed=done)
        if progress.disable and time.monotonic() > next_line_at:
            console.print(f"  {label} drain: {done:,} of {total:,} tasks done")
            next_line_at += PROGRESS_LINE_SECONDS
    return done


def _drain_rate(probe: Probe, label: str, done: int, timeout: float,
                workers_started_at: float) -> dict:
    """Return the drain's seconds and rate from the probe's first and last completion.

    The items of the first call finished at the window's start, so they are
    left out of the rate. That matters for a batch task, whose first call
    finishes a whole batch.
    """
    window = probe.done_window()
    if window is None:
        raise WorkloadTimeout(
            f"{label}: no task finished within {timeout:.0f} s of starting the workers"
        )
    first, last = window
    counted = done - probe.first_items()
    return {
        "drain_seconds": round(last - first, 4),
        "tasks_per_second": round(counted / (last - first), 1) if last > first else None,
        "start_to_first_task_seconds": round(first - workers_started_at, 3),
    }


def _wait_for_empty_queue(peer: Peer, label: str, timeout: float) -> dict:
    """Poll until the system reports no queued or unacknowledged message.

    The counter shows that every task body ran. This shows that the system has
    also recorded every acknowledgement, which some systems send in batches
    after the task returns.
    """
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    outstanding = peer.outstanding_messages()
    while outstanding > 0 and time.monotonic() < deadline:
        peer.check_workers()
        time.sleep(POLL_INTERVAL_SECONDS)
        outstanding = peer.outstanding_messages()
    if outstanding > 0:
        log.warning("%s: %d messages were still outstanding %.0f s after the last task ran",
                    label, outstanding, timeout)
    return {
        "outstanding_after_drain": outstanding,
        "empty_queue_wait_seconds": round(time.perf_counter() - started, 3),
    }


def measure_latency(peer: Peer, probe: Probe, options: WorkloadOptions) -> dict:
    """W3: post tasks at a steady rate to running workers and record pickup latency.

    Each task carries ``time.time()`` taken just before its post call and stores
    the difference to the time its body starts, so the post call itself is part
    of the latency. Posts follow a fixed schedule. When a post call falls behind
    that schedule, the next posts go out at once to catch up.
    """
    _warm_up(peer, probe, options)

    total = int(round(options.latency_rate * options.latency_seconds))
    interval = 1.0 / options.latency_rate
    with make_progress() as progress:
        bar = progress.add_task(f"W3 post at {options.latency_rate:g}/s", total=total)
        started = time.perf_counter()
        for index in range(total):
            delay = started + index * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            peer.post_one("record_latency", (time.time(),))
            if index % 20 == 0:
                progress.update(bar, completed=index)
        post_seconds = time.perf_counter() - started
        posting_ended = time.perf_counter()
        _wait_for_latencies(peer, probe, total, options.settle_timeout)
        settle_seconds = time.perf_counter() - posting_ended

    latencies_ms = sorted(value * 1000.0 for value in probe.latencies())
    percentiles = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return {
        "tasks": total,
        "target_rate": options.latency_rate,
        "achieved_post_rate": round(total / post_seconds, 1),
        "p50_ms": round(percentiles[49], 2),
        "p90_ms": round(percentiles[89], 2),
        "p99_ms": round(percentiles[98], 2),
        "max_ms": round(latencies_ms[-1], 2),
        # Time from the last post to the last recorded latency, measured by
        # polling every POLL_INTERVAL_SECONDS. Well above that interval means the
        # workers fell behind the posting rate.
        "settle_seconds": round(settle_seconds, 3),
        "fell_behind": settle_seconds > FELL_BEHIND_SECONDS,
    }


def _warm_up(peer: Peer, probe: Probe, options: WorkloadOptions) -> None:
    """Run a few latency tasks first, so connection set-up is not measured."""
    probe.reset()
    for _ in range(LATENCY_WARMUP_TASKS):
        peer.post_one("record_latency", (time.time(),))
    _wait_for_latencies(peer, probe, LATENCY_WARMUP_TASKS, options.settle_timeout)
    probe.reset()


def _wait_for_latencies(peer: Peer, probe: Probe, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while probe.latency_count() < expected:
        peer.check_workers()
        if time.monotonic() > deadline:
            raise WorkloadTimeout(
                f"W3: {probe.latency_count()} of {expected} latency tasks finished "
                f"within {timeout:.0f} s"
            )
        time.sleep(POLL_INTERVAL_SECONDS)
