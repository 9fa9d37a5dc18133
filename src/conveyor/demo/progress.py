"""The live progress bar of the demo."""

from __future__ import annotations

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


class DemoProgress:
    """A progress bar of finished tasks with retried and dead-lettered counters.

    A task counts as finished when it succeeded or was dead-lettered.
    """

    def __init__(self, console: Console, total: int) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]Analysing files"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("elapsed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("retried {task.fields[retried]}, dead-lettered {task.fields[dead]}"),
            console=console,
            refresh_per_second=8,
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
