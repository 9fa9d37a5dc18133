"""Workloads that compare ways of running tasks: W4 CPU drain and batch tasks.

W4 posts tasks that each run the same pure-Python loop (cpu_work.py) and
times their drain as W2 does, so Conveyor's thread mode, its child
processes and a peer's process pool can be compared on CPU-bound work.

The batch comparison posts the same integer items twice on one server:
once as messages of a plain task, one call per item, and once as messages
of a batch task, one call per batch. Both drains run with the same worker
command, which serves both tasks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cpu_work
from peers.base import Peer
from probe import Probe
from workloads import WorkloadOptions, console, drain_posted_tasks
from worker_apps import BATCH_TASK_SIZE, BATCH_TASK_WAIT_S

log = logging.getLogger("bench")


@dataclass
class WorkerModeOptions:
    cpu_n: int  # W4: CPU-bound tasks posted before the workers start
    cpu_iterations: int  # W4: loop iterations per task
    batch_items: int  # batch comparison: items posted for each of the two tasks
    drain: WorkloadOptions  # post batch size and the drain's timeouts


def run_worker_modes(peer: Peer, probe: Probe, options: WorkerModeOptions,
                     selected: set[str], record: dict) -> None:
    """Run W4 and the batch comparison where selected and supported; store them in ``record``."""
    if "w4" in selected and peer.supports_cpu_drain:
        record["w4_cpu_drain"] = cpu = measure_cpu_drain(peer, probe, options)
        console.print(f"  W4 CPU drain: {cpu['tasks_per_second'] or 0:,.0f} tasks/s "
                      f"({cpu['completed']} of {cpu['tasks']}; the loop takes "
                      f"{cpu['work_ms_in_harness']:.2f} ms in the harness)")

    if "batch" in selected and peer.supports_batch_tasks:
        record["batch_tasks"] = batch = measure_batch_tasks(peer, probe, options)
        ratio = batch["ratio"]
        console.print(f"  batch tasks: {batch['plain']['tasks_per_second'] or 0:,.0f} "
                      f"items/s plain, {batch['batch']['tasks_per_second'] or 0:,.0f} "
                      f"items/s in batches of up to {batch['batch_size']}"
                      + (f", {ratio:.1f} times as fast" if ratio else ""))


def measure_cpu_drain(peer: Peer, probe: Probe, options: WorkerModeOptions) -> dict:
    """W4: post ``cpu_n`` CPU-bound tasks, start the workers and time the drain.

    Times the loop in the harness first, with no worker running, as a
    reference for one core. Leaves the workers running.
    """
    _stop_with_empty_queue(peer, "W4")
    work_ms = cpu_work.measure_ms(options.cpu_iterations)
    args_list = [(options.cpu_iterations,)] * options.cpu_n
    record = drain_posted_tasks(peer, probe, "W4", "cpu_work", args_list, options.drain)
    record["iterations"] = options.cpu_iterations
    record["work_ms_in_harness"] = round(work_ms, 3)
    return record


def measure_batch_tasks(peer: Peer, probe: Probe, options: WorkerModeOptions) -> dict:
    """Drain the same items as a plain task and as a batch task; return both and their ratio.

    Leaves the workers running.
    """
    items = list(range(options.batch_items))
    plain = _drain_items(peer, probe, options, "plain task", "add_item", items)
    batch = _drain_items(peer, probe, options, "batch task", "add_items", items)
    ratio = None
    if plain["tasks_per_second"] and batch["tasks_per_second"]:
        ratio = round(batch["tasks_per_second"] / plain["tasks_per_second"], 2)
    return {
        "items": len(items),
        "batch_size": BATCH_TASK_SIZE,
        "batch_wait_s": BATCH_TASK_WAIT_S,
        "plain": plain,
        "batch": batch,
        "ratio": ratio,
    }


def _drain_items(peer: Peer, probe: Probe, options: WorkerModeOptions, kind: str,
                 task: str, items: list[int]) -> dict:
    """Post one ``task`` message per item, time the drain and check the items' sum.

    The probe adds up the items that the task calls saw. A sum that differs
    from the items posted means that an item was lost or ran twice, so the
    record keeps both sums and a warning is logged.
    """
    label = f"batch comparison, {kind}"
    _stop_with_empty_queue(peer, label)
    record = drain_posted_tasks(peer, probe, label, task, [(item,) for item in items],
                                options.drain)
    calls = probe.call_count()
    record["calls"] = calls
    record["items_per_call"] = round(record["completed"] / calls, 1) if calls else None
    record["value_sum"] = probe.value_sum()
    record["expected_value_sum"] = sum(items)
    if record["value_sum"] != record["expected_value_sum"] and not record.get("timed_out"):
        log.warning("%s: the items' sum is %d, not the %d posted, so an item was lost "
                    "or ran twice; see the worker log", label, record["value_sum"],
                    record["expected_value_sum"])
    return record


def _stop_with_empty_queue(peer: Peer, label: str) -> None:
    """Stop the workers and purge what an earlier workload left, so a drain starts clean."""
    peer.stop_workers()
    leftover = peer.outstanding_messages()
    if leftover:
        log.warning("%s: purging %d messages that an earlier workload left in the queue",
                    label, leftover)
        peer.purge()
