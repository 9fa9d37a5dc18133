"""An app that imports in the worker but fails to import in its child
processes, for the start-failure test of test_worker_processes.py."""

from __future__ import annotations

import multiprocessing

from conveyor import Conveyor

if multiprocessing.parent_process() is not None:
    raise RuntimeError("this module fails in a child process on purpose")

app = Conveyor()


@app.task(queue="proc-broken", name="broken.noop")
def noop() -> None:
    pass
