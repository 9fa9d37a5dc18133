"""The live progress bar of the demo."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Tasks finished per second, as rich estimates it over the last 30 s."""

    def render(self, task: Task) -> Text:
        if task.speed is None:
            return Text("- tasks/s", style="progress.data.speed")
        return Text(f"{task.speed:,.0f} tasks/s", style="progress.data.speed")


# Below this console width the bar drops its labels, so every number fits.
WIDE_CONSOLE = 110
# Without a terminal (output to a file or pipe) a plain line is printed at
# most this often instead of a live bar.
PLAIN_LINE_INTERVAL_S = 2.0


class DemoProgress:
    """A progress bar of finished tasks with retried and dead-lettered counters.

    A task counts as finished when it succeeded or was dead-lettered. On a
    narrow terminal the bar is compact; without a terminal, plain lines
    replace it.
    """

    def __init__(self, console: Console, total: int) -> None:
        self._console = console
        self._total = total
        self._plain = not console.is_terminal
        self._last_line_at = 0.0
        self._started_at = time.monotonic()
        self._progress = Progress(
            *_columns(console.width),
            console=console,
            refresh_per_second=8,
            disable=self._plain,
        )
        self._task_id = self._progress.add_task("files", total=total, retried=0, dead=0)

    def __enter__(self) -> DemoProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def update(self, finished: int, retried: int, dead: int) -> None:
        self._progress.update(self._task_id, completed=finished, retried=retried, dead=dead)
        if self._plain:
            self._print_line(finished, retried, dead)

    def _print_line(self, finished: int, retried: int, dead: int) -> None:
        now = time.monotonic()
        done = finished >= self._total
        if now - self._last_line_at < PLAIN_LINE_INTERVAL_S and not done:
            return
        self._last_line_at = now
        rate = finished / max(now - self._started_at, 1e-9)
        self._console.print(
            f"Analysed {finished}/{self._total} files ({rate:,.0f} tasks/s), "
            f"retried {retried}, dead-lettered {dead}",
            highlight=False,
            soft_wrap=True,
        )


def _columns(width: int) -> list[ProgressColumn]:
    counters = "retried {task.fields[retried]}, dead-lettered {task.fields[dead]}"
    if width >= WIDE_CONSOLE:
        return [
            SpinnerColumn(),
            TextColumn("[bold]Analysing files"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn(counters),
        ]
    return [
        BarColumn(bar_width=max(width - 70, 10)),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        TextColumn("retried {task.fields[retried]} dead {task.fields[dead]}"),
    ]
