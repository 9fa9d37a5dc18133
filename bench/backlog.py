"""Backlog test: dequeue throughput with many messages already waiting in the queue.

The test starts the system on a new, empty store. For each backlog level N,
the queue contains N messages besides the ones that are measured. One harness
thread then reserves a fixed number of messages through the SDK, in batches
of up to 100 (the largest reserve), and acks each batch before it reserves the
next. No worker runs, so the rate covers the store's reserve and ack paths
over HTTP and no task body. After the highest level, threads drain the whole
queue, and one more measurement runs on the empty queue, in a table through
which all those messages have passed. On a store that needs a vacuum to reuse
the space of deleted rows (PostgreSQL), the harness then vacuums the table and
measures once more.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from peers.base import Peer
from workloads import PROGRESS_LINE_SECONDS, console, make_progress

# The maximum number of messages that one reserve call returns.
RESERVE_BATCH = 100


@dataclass
class BacklogOptions:
    levels: list[int]  # messages waiting besides the measured ones, in ascending order
    dequeues: int  # messages reserved and acked at each level
    batch_size: int  # messages per batch post call while building the backlog
    churn: bool  # measure once more after draining the queue
    drain_threads: int  # threads that drain the queue before that last measurement


class ProgressLine:
    """One progress bar on a terminal, or a plain line every PROGRESS_LINE_SECONDS otherwise."""

    def __init__(self, progress, description: str, total: int) -> None:
        self.progress = progress
        self.description = description
        self.total = total
        self.done = 0
        self.bar = progress.add_task(description, total=total)
        self.next_line_at = time.monotonic() + PROGRESS_LINE_SECONDS

    def advance(self, count: int) -> None:
        self.done += count
        self.progress.update(self.bar, completed=self.done)
        if self.progress.disable and time.monotonic() > self.next_line_at:
            console.print(f"  {self.description}: {self.done:,} of {self.total:,}")
            self.next_line_at += PROGRESS_LINE_SECONDS


def measure_backlog(peer: Peer, options: BacklogOptions) -> dict:
    """Measure reserve-and-ack throughput at each backlog level and return the records.

    Starts the system on a new, empty store, so the messages of W1-W3 leave
    no trace in the sizes. Raises RuntimeError if the queue runs out of ready
    messages before a measurement has reserved them all.
    """
    peer.restart_on_new_store()
    record = {
        "dequeues_per_level": options.dequeues,
        "reserve_batch": RESERVE_BATCH,
        "post_batch_size": options.batch_size,
        "empty_sizes": peer.storage_sizes(),
        "levels": [],
    }
    waiting = 0
    processed = 0
    with make_progress() as progress:
        for level in options.levels:
            entry = {"backlog": level, "processed_before": processed}
            posted = level + options.dequeues - waiting
            record["levels"].append(_measure_level(peer, options, progress, entry, posted))
            waiting = level
            processed += options.dequeues
        if not options.churn:
            peer.purge()
            return record

        record["drain"] = drain = _drain(peer, waiting, options.drain_threads, progress)
        processed += drain["messages"]
        console.print(f"  backlog: drained {drain['messages']:,} messages in "
                      f"{drain['seconds']:.1f} s with {options.drain_threads} threads")
        entry = {"backlog": 0, "processed_before": processed, "churned": True}
        record["levels"].append(
            _measure_level(peer, options, progress, entry, options.dequeues))
        processed += options.dequeues

        # A store that needs a vacuum to reuse the space of deleted rows gets
        # one more row, which shows how much of the change the vacuum undoes.
        if peer.vacuum():
            entry = {"backlog": 0, "processed_before": processed, "churned": True,
                     "vacuumed": True}
            record["levels"].append(
                _measure_level(peer, options, progress, entry, options.dequeues))
    peer.purge()
    return record


def _level_name(entry: dict) -> str:
    """Return a short description of a level, such as "0 after 1,060,000 processed"."""
    name = f"{entry['backlog']:,}"
    if entry.get("churned"):
        name += f" after {entry['processed_before']:,} processed"
    if entry.get("vacuumed"):
        name += " and VACUUM"
    return name


def _measure_level(peer: Peer, options: BacklogOptions, progress, entry: dict,
                   posted: int) -> dict:
    """Post ``posted`` messages, then time ``options.dequeues`` reserves and acks.

    Returns ``entry`` with the post and dequeue figures and the sizes taken
    after the dequeues.
    """
    name = _level_name(entry)
    entry.update(_post(peer, posted, options.batch_size, progress, f"backlog {name}: post"))
    peer.after_bulk_post()
    entry.update(_dequeue(peer, options.dequeues, progress,
                          f"backlog {name}: reserve and ack"))
    entry["sizes"] = peer.storage_sizes()
    console.print(f"  backlog {name}: {entry['dequeues_per_second']:,.0f} msg/s reserved "
                  "and acked, messages table and indexes "
                  f"{entry['sizes']['total_bytes'] / 2**20:,.1f} MiB")
    return entry


def _post(peer: Peer, count: int, batch_size: int, progress, description: str) -> dict:
    """Post ``count`` no-op messages in batches and return the count and seconds."""
    line = ProgressLine(progress, description, count)
    started = time.perf_counter()
    for first in range(0, count, batch_size):
        chunk = [(index,) for index in range(first, min(first + batch_size, count))]
        peer.post_batch("noop", chunk)
        line.advance(len(chunk))
    return {"posted": count, "post_seconds": round(time.perf_counter() - started, 3)}


def _dequeue(peer: Peer, count: int, progress, description: str) -> dict:
    """Reserve and ack exactly ``count`` messages from one thread and return the rate."""
    line = ProgressLine(progress, description, count)
    done = 0
    started = time.perf_counter()
    while done < count:
        got = peer.reserve_and_ack(min(RESERVE_BATCH, count - done))
        if got == 0:
            raise RuntimeError(f"backlog: the queue had no ready message after {done:,} "
                               f"of {count:,} dequeues")
        done += got
        line.advance(got)
    seconds = time.perf_counter() - started
    return {
        "dequeued": done,
        "dequeue_seconds": round(seconds, 3),
        "dequeues_per_second": round(done / seconds, 1),
    }


def _drain(peer: Peer, expected: int, threads: int, progress) -> dict:
    """Reserve and ack from ``threads`` threads until the queue is empty.

    Returns the number of messages and the seconds. Raises the first error of
    any thread, and RuntimeError if messages remain outstanding afterwards.
    """
    line = ProgressLine(progress, "backlog: drain", expected)
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def consume() -> None:
        try:
            while not stop.is_set():
                got = peer.reserve_and_ack(RESERVE_BATCH)
                if got == 0:
                    return
                with lock:
                    line.advance(got)
        except BaseException as error:
            with lock:
                errors.append(error)
            stop.set()

    workers = [threading.Thread(target=consume, name=f"backlog-drain-{number}", daemon=True)
               for number in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    except BaseException:
        # Ctrl-C or SIGTERM: stop the threads before the runner cleans up the peer.
        stop.set()
        raise
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"backlog: a drain thread failed with "
                           f"{type(errors[0]).__name__}: {errors[0]}") from errors[0]
    outstanding = peer.outstanding_messages()
    if outstanding:
        raise RuntimeError(f"backlog: {outstanding:,} messages were still outstanding "
                           "after the drain")
    return {"messages": line.done, "seconds": round(seconds, 3),
            "messages_per_second": round(line.done / seconds, 1) if seconds else None}
