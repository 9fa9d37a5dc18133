"""Render the W4 and batch-task sections of docs/benchmarks.md (see worker_modes.py)."""

from __future__ import annotations

import textwrap

THREADS_SYSTEM = "conveyor"
PROCESSES_SYSTEM = "conveyor-processes"


def run_rows(run: dict) -> list[str]:
    """Return the machine table's rows about W4 and the batch comparison, if the run has them."""
    rows = []
    if "workloads" in run:
        rows.append(f"| Workloads | {', '.join(run['workloads'])} |")
    if "w4" in run.get("workloads", ()):
        rows.append(f"| W4 tasks | {run['w4_n']:,}, each {run['w4_iterations']:,} "
                    "iterations of a pure-Python loop |")
    if "batch" in run.get("workloads", ()):
        rows.append(f"| Batch comparison | {run['batch_items']:,} items for each task |")
    return rows


def render(systems: dict) -> str:
    """Return the W4 and batch sections, or "" for the parts that no system ran."""
    return "\n".join(part for part in (_cpu_section(systems), _batch_section(systems)) if part)


def system_lines(record: dict) -> list[str]:
    """Return the per-system detail lines of W4 and the batch comparison."""
    lines = []
    cpu = record.get("w4_cpu_drain")
    if cpu:
        lines.append(
            f"- W4: {cpu['completed']:,} of {cpu['tasks']:,} tasks in "
            f"{cpu['drain_seconds']:.2f} s; the loop took {cpu['work_ms_in_harness']:.2f} ms "
            "in the harness process just before; the first task ran "
            f"{cpu['start_to_first_task_seconds']:.2f} s after the worker command started"
        )
    batch = record.get("batch_tasks")
    if batch:
        for kind in ("plain", "batch"):
            drain = batch[kind]
            lines.append(
                f"- batch comparison, {kind} task: {drain['completed']:,} of "
                f"{drain['tasks']:,} items in {drain['drain_seconds']:.2f} s and "
                f"{drain['calls']:,} calls; the items' sum "
                + ("matches the items posted" if _sum_matches(drain)
                   else f"is {drain['value_sum']:,}, not the {drain['expected_value_sum']:,} "
                   "posted")
            )
    return lines


# W4 -------------------------------------------------------------------


def _cpu_section(systems: dict) -> str:
    records = {name: record for name, record in systems.items() if "w4_cpu_drain" in record}
    if not records:
        return ""
    first = next(iter(records.values()))["w4_cpu_drain"]
    lines = [
        "## CPU-bound tasks (W4)\n",
        _fill(CPU_INTRO.format(tasks=first["tasks"], iterations=first["iterations"])),
        "| System | Pool | W2 no-op drain (tasks/s) | W4 CPU drain (tasks/s) "
        "| W4 against one core |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, record in records.items():
        cpu = record["w4_cpu_drain"]
        one_core = 1000.0 / cpu["work_ms_in_harness"]
        rate = cpu["tasks_per_second"]
        against = f"{rate / one_core:.2f}" if rate else "n/a"
        lines.append(
            f"| {record.get('label', name)} | {record.get('settings', {}).get('pool', '')} "
            f"| {_rate(record.get('w2_drain'))} | {_rate(cpu)} | {against} |"
        )
    lines.append("")
    sentence = _cpu_sentence(systems)
    if sentence:
        lines.extend([sentence, ""])
    return "\n".join(lines)


def _cpu_sentence(systems: dict) -> str:
    """Compare Conveyor's thread and child-process modes on W4, and on W2 if both ran it."""
    threads = systems.get(THREADS_SYSTEM, {})
    processes = systems.get(PROCESSES_SYSTEM, {})
    cpu_threads = _tasks_per_second(threads.get("w4_cpu_drain"))
    cpu_processes = _tasks_per_second(processes.get("w4_cpu_drain"))
    if not cpu_threads or not cpu_processes:
        return ""
    ratio = cpu_processes / cpu_threads
    if ratio > 1:
        text = (f"On CPU-bound tasks Conveyor's child processes drain {ratio:.1f} times as "
                f"many tasks per second as its task threads ({cpu_processes:,.0f} against "
                f"{cpu_threads:,.0f}). The threads of one process take turns holding the "
                "global interpreter lock, while each child can run on a core of its own.")
    else:
        text = (f"In this run Conveyor's child processes were not faster than its task "
                f"threads on CPU-bound tasks ({cpu_processes:,.0f} against "
                f"{cpu_threads:,.0f} tasks/s). That happens when other work leaves the "
                "children less than a core each.")
    return text + _noop_sentence(threads, processes)


def _noop_sentence(threads: dict, processes: dict) -> str:
    noop_threads = _tasks_per_second(threads.get("w2_drain"))
    noop_processes = _tasks_per_second(processes.get("w2_drain"))
    if not noop_threads or not noop_processes:
        return ""
    if noop_threads > noop_processes:
        return (f" On no-op tasks (W2) the threads are faster ({noop_threads:,.0f} against "
                f"{noop_processes:,.0f}), because each task in a child also costs a "
                "hand-off between the worker process and the child.")
    return (f" On no-op tasks (W2) the children kept up with the threads "
            f"({noop_processes:,.0f} against {noop_threads:,.0f}).")


# Batch tasks ----------------------------------------------------------


def _batch_section(systems: dict) -> str:
    records = {name: record for name, record in systems.items() if "batch_tasks" in record}
    if not records:
        return ""
    first = next(iter(records.values()))["batch_tasks"]
    lines = [
        "## Batch tasks\n",
        _fill(BATCH_INTRO.format(items=first["items"], batch_size=first["batch_size"],
                                 batch_wait_s=first["batch_wait_s"])),
        "| System | Plain task (items/s) | Batch task (items/s) | Batch against plain "
        "| Items per batch call |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, record in records.items():
        batch = record["batch_tasks"]
        ratio = f"{batch['ratio']:.1f}" if batch.get("ratio") else "n/a"
        per_call = batch["batch"].get("items_per_call")
        lines.append(
            f"| {record.get('label', name)} | {_rate(batch['plain'])} "
            f"| {_rate(batch['batch'])} | {ratio} "
            f"| {per_call if per_call is not None else 'n/a'} |"
        )
    lines.append("")
    sentence = _batch_sentence(records)
    if sentence:
        lines.extend([sentence, ""])
    return "\n".join(lines)


def _batch_sentence(records: dict) -> str:
    """Say how much faster the batch task drains, on the first system and with processes."""
    name, record = next(iter(records.items()))
    batch = record["batch_tasks"]
    if not batch.get("ratio"):
        return ""
    text = (f"On {record.get('label', name)} the batch task drains {batch['ratio']:.1f} "
            "times as many items per second as the plain task. The worker makes one "
            "function call, and the task one Redis round trip, per batch instead of per "
            "item, while the messages of both tasks go through the same batched reserve "
            "and ack calls.")
    processes = records.get(PROCESSES_SYSTEM, {}).get("batch_tasks", {})
    if name != PROCESSES_SYSTEM and (processes.get("ratio") or 0) > batch["ratio"]:
        text += (f" With child processes the gain is {processes['ratio']:.1f} times, "
                 "because a batch also needs only one hand-off to a child.")
    return text


# Shared helpers -------------------------------------------------------


def _tasks_per_second(drain: dict | None) -> float | None:
    return drain.get("tasks_per_second") if drain else None


def _rate(drain: dict | None) -> str:
    if not drain:
        return "not run"
    rate = drain.get("tasks_per_second")
    text = "n/a" if rate is None else f"{rate:,.0f}"
    if drain.get("timed_out"):
        text += f" (timed out at {drain['completed']:,} of {drain['tasks']:,})"
    elif "value_sum" in drain and not _sum_matches(drain):
        text += " (items' sum differs)"
    return text


def _fill(text: str) -> str:
    """Rewrap a paragraph after its numbers were filled in."""
    return textwrap.fill(" ".join(text.split()), width=79, break_on_hyphens=False) + "\n"


def _sum_matches(drain: dict) -> bool:
    return drain.get("value_sum") == drain.get("expected_value_sum")


CPU_INTRO = """W4 is W2 with CPU-bound tasks. The harness posts {tasks:,} `cpu_work`
tasks, each of which runs the same pure-Python loop of {iterations:,}
iterations (`bench/cpu_work.py`) before the completion counter's Redis round
trip, then starts the worker and times the drain as in W2. It runs for the
systems in the table below, each with the task slots that "Concurrency" under
Method describes. "W4 against one core" divides the W4 rate by the rate at
which one core runs the loop alone: 1,000 divided by the loop's median time in
milliseconds over 100 calls, timed in the harness process just before the
system's W4. The loop holds the global interpreter lock, so threads of one
process cannot run it in parallel. A system near 1 used about one core, and
with a free core per process the limit is the number of processes. The W2
column repeats the no-op drain from the results table.
"""

BATCH_INTRO = """The batch comparison posts the same {items:,} integer items twice on one
server, with the worker stopped, and times each drain as in W2. The first
time each item is a message of the plain task `add_item`, which the worker
calls once per item. The second time each item is a message of the batch
task `add_items` (`batch_size={batch_size}`, `batch_wait_s={batch_wait_s:g}`),
which the worker calls with a list of up to {batch_size} items. Both tasks add
their items to a sum in Redis with one round trip per call, and the harness
checks that sum against the items it posted. The worker command and the
server are the same for both drains. The rate leaves out the items of the
first call, whose end starts the clock, which for the batch task is a whole
batch.
"""
