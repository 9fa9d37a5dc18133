"""An app with a periodic task, for test_periodic.py's worker test."""

from __future__ import annotations

from datetime import timedelta

from task_record import record

from conveyor import Conveyor, current_run

app = Conveyor()


@app.periodic(every=timedelta(seconds=1), args=("hello",), name="greet-every-second")
@app.task(queue="periodic")
def greet(word: str) -> None:
    record("greet", word=word, tick=current_run().headers.get("conveyor-schedule-tick"))
