"""The demo's final numbers and how they are printed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePath

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .processes import command_for_display

MAX_DEAD_EXAMPLES = 5


@dataclass
class DeadFile:
    """A file whose task ended in the DLQ."""

    path: str
    error: str | None
    attempts: int


@dataclass
class Totals:
    """Sums over the analysed files."""

    lines: int = 0
    bytes: int = 0
    functions: int = 0
    classes: int = 0

    def add(self, stats: dict) -> None:
        self.lines += int(stats.get("lines", 0))
        self.bytes += int(stats.get("bytes", 0))
        self.functions += int(stats.get("functions", 0))
        self.classes += int(stats.get("classes", 0))


@dataclass
class DemoOutcome:
    """The outcome of every enqueued file, with the run's timings.

    Latencies run from the enqueue call to the ack that stored the result,
    in seconds. Run times are measured inside the task, in milliseconds.
    """

    total: int
    succeeded: int = 0
    retried: int = 0
    dead: list[DeadFile] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    run_times_ms: list[float] = field(default_factory=list)
    totals: Totals = field(default_factory=Totals)
    startup_s: float = 0.0
    processing_s: float = 0.0

    @property
    def accounted_for(self) -> bool:
        """Whether every file either succeeded or was dead-lettered."""
        return self.succeeded + len(self.dead) == self.total and not self.missing


@dataclass(frozen=True)
class RunInfo:
    """Facts about the run that the summary repeats to the user."""

    root: str
    run_dir: str
    server_url: str
    store_url: str
    dlq: str
    workers: int
    concurrency: int
    failure_rate: float
    keep_running: bool


def percentile(values: list[float], percent: float) -> float:
    """Return the nearest-rank percentile (0 < percent <= 100) of values.

    Raises ValueError for an empty list.
    """
    if not values:
        raise ValueError("percentile of an empty list is undefined")
    ordered = sorted(values)
    rank = max(math.ceil(percent / 100.0 * len(ordered)), 1)
    return ordered[rank - 1]


def print_summary(console: Console, outcome: DemoOutcome, run: RunInfo) -> None:
    """Print the counts, timings, dead-lettered examples and DLQ commands."""
    console.print()
    console.print("[bold]Summary[/bold]")
    console.print(_summary_table(outcome, run))
    _print_dead_examples(console, outcome.dead)
    _print_missing(console, outcome)
    _print_dlq_commands(console, run)


def _summary_table(outcome: DemoOutcome, run: RunInfo) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()
    table.add_row("files found", f"{outcome.total}", f"under {escape(run.root)}")
    table.add_row("processed", f"{outcome.succeeded}", "compiled and analysed")
    table.add_row(
        "retried", f"{outcome.retried}",
        f"failed at least once and were tried again (injected failure rate "
        f"{run.failure_rate:g})",
    )
    table.add_row(
        "dead-lettered", f"{len(outcome.dead)}", "rejected because they do not compile"
    )

    total_s = outcome.startup_s + outcome.processing_s
    table.add_row(
        "total time", f"{total_s:.1f} s",
        f"startup {outcome.startup_s:.1f} s, processing {outcome.processing_s:.1f} s",
    )
    table.add_row(
        "throughput", f"{_throughput(outcome):,.1f} tasks/s",
        f"{run.workers} workers with {run.concurrency} threads each",
    )
    table.add_row(*_percentile_row(
        "latency", outcome.latencies_s, "s",
        "enqueue to completion, including the wait in the backlog",
    ))
    table.add_row(*_percentile_row(
        "task run time", outcome.run_times_ms, "ms", "inside the task function"
    ))

    totals = outcome.totals
    table.add_row(
        "analysed", f"{totals.lines:,} lines",
        f"{totals.bytes / 1e6:,.1f} MB, {totals.functions:,} functions, "
        f"{totals.classes:,} classes",
    )
    return table


def _throughput(outcome: DemoOutcome) -> float:
    finished = outcome.succeeded + len(outcome.dead)
    return finished / outcome.processing_s if outcome.processing_s > 0 else 0.0


def _percentile_row(
    name: str, values: list[float], unit: str, note: str
) -> tuple[str, str, str]:
    if not values:
        return name, "-", "no task succeeded"
    p50 = format_number(percentile(values, 50))
    p99 = format_number(percentile(values, 99))
    return name, f"p50 {p50} {unit}", f"p99 {p99} {unit} ({note})"


def format_number(value: float) -> str:
    """Format a measurement without exponents: 3 decimals below 1, else 3 digits."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.3f}"


def pick_examples(dead: list[DeadFile], count: int) -> list[DeadFile]:
    """Return up to count dead files, taking one per folder in turn.

    Files that fail to compile cluster in a few test folders, so taking
    them in path order would show one folder only.
    """
    by_folder: dict[str, list[DeadFile]] = {}
    for item in sorted(dead, key=lambda item: item.path):
        by_folder.setdefault(str(PurePath(item.path).parent), []).append(item)
    examples: list[DeadFile] = []
    while len(examples) < count and any(by_folder.values()):
        for files in by_folder.values():
            if files and len(examples) < count:
                examples.append(files.pop(0))
    return sorted(examples, key=lambda item: item.path)


def _print_dead_examples(console: Console, dead: list[DeadFile]) -> None:
    if not dead:
        return
    shown = pick_examples(dead, MAX_DEAD_EXAMPLES)
    console.print()
    console.print(f"[bold]Dead-lettered files[/bold] ({len(shown)} of {len(dead)}):")
    for item in shown:
        console.print(f"  {escape(item.path)}", highlight=False, soft_wrap=True)
        console.print(f"    {escape(item.error or 'no error recorded')}",
                      highlight=False, soft_wrap=True)


def _print_missing(console: Console, outcome: DemoOutcome) -> None:
    if not outcome.missing:
        return
    console.print()
    console.print(
        f"[bold red]{len(outcome.missing)} files are not accounted for[/bold red]: "
        "they neither succeeded nor reached the DLQ. First ones:"
    )
    for path in outcome.missing[:MAX_DEAD_EXAMPLES]:
        console.print(f"  {escape(path)}", highlight=False, soft_wrap=True)


def _print_dlq_commands(console: Console, run: RunInfo) -> None:
    console.print()
    console.print(f"[bold]Inspect and redrive the DLQ[/bold] {escape(run.dlq)} of this server:")
    command = escape(command_for_display())
    for action in ("list", "redrive"):
        console.print(
            f"  {command} dlq {action} {escape(run.dlq)} --url {run.server_url}",
            highlight=False,
            soft_wrap=True,
        )
    if run.keep_running:
        console.print(
            "  A redrive sends the files back to the running workers, which "
            "dead-letter them again."
        )
    else:
        console.print(
            "  The server stops when the demo ends; rerun with --keep-running to keep "
            "it and the workers running until Ctrl-C."
        )
        console.print(
            f"  After it stops, the same commands work on the store file with "
            f"--url {escape(run.store_url)}",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"  Logs and the store file are in {escape(run.run_dir)}",
                  highlight=False, soft_wrap=True)
