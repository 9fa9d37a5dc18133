"""Tasks for the workers of test_workflows_e2e.py.

`part` takes a while so that workers can be killed while a group runs.
`join` records each of its runs, so the test can count them.
"""

from __future__ import annotations

import time

from task_record import record

from conveyor import Conveyor

app = Conveyor()

PART_QUEUE = "wf-parts"


@app.task(queue=PART_QUEUE, name="wf.part", result_ttl_s=0)
def part(index: int) -> int:
    record("part", index=index)
    time.sleep(0.1)
    return index


@app.task(queue=PART_QUEUE, name="wf.join")
def join(values: list) -> int:
    record("join", count=len(values), total=sum(values), order=values == sorted(values))
    return sum(values)
