"""Workflows (chains, groups, joins) run against every store.

Steps are driven by hand: each test reserves the step messages and acks
them with results, as a worker would.
"""

from __future__ import annotations

import pytest

from conveyor.engine import Engine
from conveyor.errors import (
    PayloadTooLarge,
    QueueNotFound,
    ValidationError,
    WorkflowNotFound,
    WorkflowNotRetryable,
)
from conveyor.models import Message, NewMessage
from conveyor.workflows.compiler import MAX_NESTING_DEPTH, MAX_WORKFLOW_STEPS


def task(name: str, *args, queue: str = "wf") -> dict:
    return {"step": {"queue": queue, "body": {"task": name, "args": list(args), "kwargs": {}}}}


def chain(*nodes) -> dict:
    return {"chain": list(nodes)}


def group(*nodes) -> dict:
    return {"group": list(nodes)}


def lease(message: Message, **extra) -> dict:
    return {"id": message.id, "receipt": message.receipt, **extra}


def run_ready(engine: Engine, queue: str = "wf", expect: int | None = None) -> dict[str, list]:
    """Reserve every ready message, ack each with its task name as result; return args by task."""
    messages = engine.reserve(queue, 100)
    if expect is not None:
        assert len(messages) == expect
    seen = {}
    for message in messages:
        name = message.body["task"]
        seen[name] = message.body["args"]
        engine.ack(queue, [lease(message, result=f"{name}-done")])
    return seen


@pytest.fixture
def wf_engine(engine: Engine) -> Engine:
    engine.create_queue("wf")
    return engine


def test_chain_passes_results_in_order(wf_engine):
    workflow = wf_engine.start_workflow(chain(task("a", 1), task("b"), task("c", 2)), name="abc")
    assert run_ready(wf_engine, expect=1) == {"a": [1]}
    assert run_ready(wf_engine, expect=1) == {"b": ["a-done"]}
    assert run_ready(wf_engine, expect=1) == {"c": ["b-done", 2]}
    done = wf_engine.get_workflow(workflow.id)
    assert done.state == "succeeded"
    assert done.result == "c-done"
    assert done.name == "abc"
    assert done.steps_left == 0


def test_chain_second_step_waits(wf_engine):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    steps = wf_engine.get_workflow(workflow.id).steps
    assert [step.state for step in steps] == ["queued", "waiting"]
    assert steps[1].message_id is None
    assert steps[1].parents == [0]


def test_group_join_gets_results_in_group_order(wf_engine):
    spec = chain(group(task("a"), task("b"), task("c")), task("join"))
    workflow = wf_engine.start_workflow(spec)
    messages = wf_engine.reserve("wf", 10)
    assert sorted(m.body["task"] for m in messages) == ["a", "b", "c"]
    # Ack in reverse order: the join's input still follows the group's order.
    for message in reversed(messages):
        assert wf_engine.reserve("wf", 10) == []
        wf_engine.ack("wf", [lease(message, result=message.body["task"].upper())])
    assert run_ready(wf_engine, expect=1) == {"join": [["A", "B", "C"]]}
    assert wf_engine.get_workflow(workflow.id).result == "join-done"


def test_batch_ack_posts_join_once(wf_engine):
    wf_engine.start_workflow(chain(group(*[task(f"g{i}") for i in range(5)]), task("join")))
    messages = wf_engine.reserve("wf", 10)
    wf_engine.ack("wf", [lease(m, result=m.body["task"]) for m in messages])
    joins = wf_engine.reserve("wf", 10)
    assert len(joins) == 1
    assert joins[0].body["args"] == [[f"g{i}" for i in range(5)]]


def test_nested_chain_group_results(wf_engine):
    spec = chain(task("a"), group(task("b"), chain(task("c"), task("d"))), task("e"))
    workflow = wf_engine.start_workflow(spec)
    assert run_ready(wf_engine, expect=1) == {"a": []}
    assert run_ready(wf_engine, expect=2) == {"b": ["a-done"], "c": ["a-done"]}
    assert run_ready(wf_engine, expect=1) == {"d": ["c-done"]}
    assert run_ready(wf_engine, expect=1) == {"e": [["b-done", "d-done"]]}
    assert wf_engine.get_workflow(workflow.id).result == "e-done"


def test_top_level_group_result_is_list(wf_engine):
    workflow = wf_engine.start_workflow(group(task("a"), chain(task("b"), task("c"))))
    run_ready(wf_engine)
    run_ready(wf_engine)
    done = wf_engine.get_workflow(workflow.id)
    assert done.state == "succeeded"
    assert done.result == ["a-done", "c-done"]


def test_result_stored_without_result_ttl(wf_engine):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    message = wf_engine.reserve("wf", 1)[0]
    wf_engine.ack("wf", [lease(message, result={"n": 1}, result_ttl_s=0)])
    assert wf_engine.get_result(message.id) is None
    assert wf_engine.get_workflow(workflow.id).steps[0].result == {"n": 1}
    assert wf_engine.reserve("wf", 1)[0].body["args"] == [{"n": 1}]


def test_plain_body_gets_headers_and_input(wf_engine):
    spec = chain(
        {"step": {"queue": "wf", "body": "first", "headers": {"k": "v"}}},
        {"step": {"queue": "wf", "body": {"plain": True}}},
    )
    workflow = wf_engine.start_workflow(spec)
    first = wf_engine.reserve("wf", 1)[0]
    assert first.headers == {"k": "v", "conveyor-workflow": workflow.id,
                             "conveyor-workflow-step": "0"}
    wf_engine.ack("wf", [lease(first, result=[1, 2])])
    second = wf_engine.reserve("wf", 1)[0]
    assert second.body == {"plain": True}
    assert second.headers["conveyor-workflow-step"] == "1"
    assert wf_engine.get_workflow(workflow.id).steps[1].input == [1, 2]


def test_dead_step_stops_workflow(wf_engine):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b"), task("c")))
    run_ready(wf_engine, expect=1)
    message = wf_engine.reserve("wf", 1)[0]
    wf_engine.nack("wf", [lease(message, error="boom", dead=True)])
    failed = wf_engine.get_workflow(workflow.id)
    assert failed.state == "failed"
    assert failed.failed_step == 1
    assert "boom" in failed.error
    assert [step.state for step in failed.steps] == ["succeeded", "failed", "waiting"]
    assert wf_engine.reserve("wf", 10) == []
    listed, _ = wf_engine.list_workflows(state="failed")
    assert [w.id for w in listed] == [workflow.id]


def test_redrive_resumes_failed_workflow(wf_engine):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    message = wf_engine.reserve("wf", 1)[0]
    wf_engine.nack("wf", [lease(message, error="boom", dead=True)])
    assert wf_engine.redrive("wf.dlq", message_ids=[message.id]) == 1
    assert wf_engine.get_workflow(workflow.id).state == "running"
    assert run_ready(wf_engine, expect=1) == {"a": []}
    assert run_ready(wf_engine, expect=1) == {"b": ["a-done"]}
    assert wf_engine.get_workflow(workflow.id).state == "succeeded"


def test_dead_group_member_blocks_join(wf_engine):
    workflow = wf_engine.start_workflow(chain(group(task("a"), task("b")), task("join")))
    first, second = wf_engine.reserve("wf", 2)
    wf_engine.nack("wf", [lease(first, dead=True, error="bad")])
    wf_engine.ack("wf", [lease(second, result=1)])
    assert wf_engine.reserve("wf", 10) == []
    assert wf_engine.get_workflow(workflow.id).state == "failed"
    wf_engine.redrive("wf.dlq")
    again = wf_engine.reserve("wf", 1)[0]
    wf_engine.ack("wf", [lease(again, result=0)])
    join = wf_engine.reserve("wf", 10)
    assert len(join) == 1
    assert join[0].body["task"] == "join"


def test_cancelled_message_cancels_step(wf_engine):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    step = wf_engine.get_workflow(workflow.id).steps[0]
    wf_engine.cancel(step.message_id)
    read = wf_engine.get_workflow(workflow.id)
    assert read.steps[0].state == "cancelled"
    assert read.state == "failed"


def test_purged_message_expires_step(wf_engine):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    wf_engine.purge_queue("wf")
    read = wf_engine.get_workflow(workflow.id)
    assert read.steps[0].state == "expired"
    assert read.state == "failed"


def test_cancel_workflow_stops_it(wf_engine):
    workflow = wf_engine.start_workflow(chain(group(task("a"), task("b")), task("c")))
    running = wf_engine.reserve("wf", 1)[0]
    cancelled = wf_engine.cancel_workflow(workflow.id)
    assert cancelled.state == "cancelled"
    # The waiting message was removed; the running one only got a cancel request.
    assert wf_engine.reserve("wf", 10) == []
    wf_engine.ack("wf", [lease(running, result=1)])
    assert wf_engine.reserve("wf", 10) == []
    assert wf_engine.get_workflow(workflow.id).state == "cancelled"


def test_cancel_finished_workflow_unchanged(wf_engine):
    workflow = wf_engine.start_workflow(task("a"))
    run_ready(wf_engine)
    assert wf_engine.cancel_workflow(workflow.id).state == "succeeded"


def test_status_shape(wf_engine, clock):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")), name="shape")
    assert workflow.state == "running"
    assert workflow.step_count == 2
    assert workflow.steps_left == 2
    assert workflow.created_at == clock.now
    first = workflow.steps[0]
    assert first.index == 0
    assert first.queue == "wf"
    assert first.task == "a"
    assert first.state == "queued"
    assert first.attempts == 0
    wf_engine.reserve("wf", 1)
    assert wf_engine.get_workflow(workflow.id).steps[0].state == "running"
    assert wf_engine.get_workflow(workflow.id).steps[0].attempts == 1


def test_list_filters_and_pages(wf_engine):
    ids = [wf_engine.start_workflow(task("a")).id for _ in range(3)]
    run_ready(wf_engine, expect=3)
    running = wf_engine.start_workflow(task("b")).id
    first, cursor = wf_engine.list_workflows(limit=2)
    assert [w.id for w in first] == [running, ids[2]]
    second, end = wf_engine.list_workflows(cursor=cursor, limit=2)
    assert [w.id for w in second] == [ids[1], ids[0]]
    assert end is None
    assert [w.id for w in wf_engine.list_workflows(state="running")[0]] == [running]
    assert len(wf_engine.list_workflows(state="succeeded")[0]) == 3


def fail_first_step(engine: Engine, spec: dict) -> str:
    workflow = engine.start_workflow(spec)
    message = engine.reserve("wf", 1)[0]
    engine.nack("wf", [lease(message, error="boom", dead=True)])
    return workflow.id


def test_failed_filter_shows_failure(wf_engine):
    workflow_id = fail_first_step(wf_engine, chain(task("a"), task("b")))
    listed = wf_engine.list_workflows(state="failed")[0]
    assert [w.id for w in listed] == [workflow_id]
    assert listed[0].state == "failed"
    assert listed[0].failed_step == 0
    assert "boom" in listed[0].error


def test_failed_filter_pages(wf_engine):
    failed = [fail_first_step(wf_engine, task("a")) for _ in range(3)]
    wf_engine.start_workflow(task("b"))
    first, cursor = wf_engine.list_workflows(state="failed", limit=2)
    assert [w.id for w in first] == [failed[2], failed[1]]
    second, end = wf_engine.list_workflows(state="failed", cursor=cursor, limit=2)
    assert [w.id for w in second] == [failed[0]]
    assert end is None
    assert {w.state for w in first + second} == {"failed"}
    running = wf_engine.list_workflows(state="running")[0]
    assert [w.state for w in running] == ["running"]


def test_non_workflow_acks_unaffected(wf_engine):
    ids = [r.id for r in wf_engine.post("wf", [NewMessage(i) for i in range(3)])]
    messages = wf_engine.reserve("wf", 3)
    results = wf_engine.ack("wf", [lease(m, result=m.body, result_ttl_s=60) for m in messages])
    assert all(r.ok for r in results)
    assert wf_engine.get_result(ids[0]).value == 0
    assert wf_engine.list_workflows()[0] == []


@pytest.mark.parametrize(
    "spec",
    [
        {"chain": []},
        {"group": []},
        {"loop": [task("a")]},
        {"step": {"queue": "wf"}},
        {"step": {"queue": "wf", "body": 1, "color": "red"}},
        {"step": {"queue": "bad name", "body": 1}},
        {"step": {"queue": "wf", "body": 1, "headers": {"conveyor-workflow": "x"}}},
        {"chain": [task("a"), "b"]},
    ],
)
def test_invalid_spec_stores_nothing(wf_engine, spec):
    with pytest.raises(ValidationError):
        wf_engine.start_workflow(spec)
    assert wf_engine.list_workflows()[0] == []
    assert wf_engine.reserve("wf", 10) == []


def test_too_many_steps_rejected(wf_engine):
    with pytest.raises(ValidationError, match="more than"):
        wf_engine.start_workflow(group(*[task("a")] * (MAX_WORKFLOW_STEPS + 1)))
    assert wf_engine.list_workflows()[0] == []


def test_too_deep_rejected(wf_engine):
    spec = task("a")
    for _ in range(MAX_NESTING_DEPTH):
        spec = chain(spec)
    with pytest.raises(ValidationError, match="nested"):
        wf_engine.start_workflow(spec)


def test_unknown_queue_stores_nothing(wf_engine):
    with pytest.raises(QueueNotFound):
        wf_engine.start_workflow(chain(task("a"), task("b", queue="missing")))
    assert wf_engine.list_workflows()[0] == []
    assert wf_engine.reserve("wf", 10) == []


def test_fifo_queue_rejected(wf_engine):
    wf_engine.create_queue("ordered", {"type": "fifo"})
    with pytest.raises(ValidationError, match="fifo"):
        wf_engine.start_workflow(task("a", queue="ordered"))


def test_unknown_workflow_not_found(wf_engine):
    with pytest.raises(WorkflowNotFound):
        wf_engine.get_workflow("nope")


def test_oversized_result_fails_step(wf_engine):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    message = wf_engine.reserve("wf", 1)[0]
    wf_engine.ack("wf", [lease(message, result="x" * (1024 * 1024 + 1))])
    read = wf_engine.get_workflow(workflow.id)
    assert read.steps[0].state == "failed"
    assert read.state == "failed"
    assert wf_engine.reserve("wf", 10) == []


def test_child_on_deleted_queue_fails_step(wf_engine):
    wf_engine.create_queue("other")
    workflow = wf_engine.start_workflow(chain(task("a"), task("b", queue="other")))
    wf_engine.delete_queue("other")
    run_ready(wf_engine, expect=1)
    read = wf_engine.get_workflow(workflow.id)
    assert read.steps[1].state == "failed"
    assert "could not post" in read.steps[1].error


def test_expired_dead_step_reads_expired(wf_engine, clock):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    message = wf_engine.reserve("wf", 1)[0]
    wf_engine.nack("wf", [lease(message, error="boom", dead=True)])
    clock.advance(15 * 86_400)
    wf_engine.sweep()
    read = wf_engine.get_workflow(workflow.id)
    assert read.steps[0].state == "expired"
    assert read.state == "failed"
    assert wf_engine.reserve("wf", 10) == []


def test_redrive_job_resumes_workflow(wf_engine):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    message = wf_engine.reserve("wf", 1)[0]
    wf_engine.nack("wf", [lease(message, error="boom", dead=True)])
    job = wf_engine.start_redrive_job("wf.dlq")
    assert [claimed.id for claimed in wf_engine.claim_redrive_jobs("runner", 10, 30.0)] == [job.id]
    assert wf_engine.run_redrive_chunk(job.id, "runner", 10, 30.0).moved == 1
    assert run_ready(wf_engine, expect=1) == {"a": []}
    assert run_ready(wf_engine, expect=1) == {"b": ["a-done"]}
    assert wf_engine.get_workflow(workflow.id).state == "succeeded"


def test_entry_by_entry_ack_finishes_step(wf_engine):
    # Logs make the store ack entry by entry instead of with one statement.
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    message = wf_engine.reserve("wf", 1)[0]
    other = wf_engine.post("wf", [NewMessage("plain")])[0].id
    plain = wf_engine.reserve("wf", 1)[0]
    assert plain.id == other
    results = wf_engine.ack("wf", [lease(message, result=7, logs="ran a"), lease(plain)])
    assert [r.ok for r in results] == [True, True]
    assert run_ready(wf_engine, expect=1) == {"b": [7]}
    assert wf_engine.get_workflow(workflow.id).state == "succeeded"


def test_stale_ack_does_not_finish_step(wf_engine, clock):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    first = wf_engine.reserve("wf", 1, visibility_timeout_s=5)[0]
    clock.advance(6)
    # The expired lease counts as a failed attempt, retried after a backoff.
    assert wf_engine.reserve("wf", 1) == []
    clock.advance(3600)
    second = wf_engine.reserve("wf", 1)[0]
    assert second.id == first.id
    assert not wf_engine.ack("wf", [lease(first, result="old")])[0].ok
    assert wf_engine.get_workflow(workflow.id).steps[1].state == "waiting"
    wf_engine.ack("wf", [lease(second, result="new")])
    assert run_ready(wf_engine, expect=1) == {"b": ["new"]}


def test_finished_workflow_retention(wf_engine, clock):
    done = wf_engine.start_workflow(task("a"))
    run_ready(wf_engine, expect=1)
    running = wf_engine.start_workflow(task("b"))
    clock.advance(7 * 86_400 - 1)
    wf_engine.sweep()
    assert wf_engine.get_workflow(done.id).state == "succeeded"
    clock.advance(2)
    wf_engine.sweep()
    with pytest.raises(WorkflowNotFound):
        wf_engine.get_workflow(done.id)
    # Its message passed the queue's retention, so it failed, but it stays stored.
    assert wf_engine.get_workflow(running.id).state == "failed"


def test_independent_branch_goes_on(wf_engine):
    workflow = wf_engine.start_workflow(
        chain(group(task("a"), chain(task("b"), task("c"))), task("join"))
    )
    for message in wf_engine.reserve("wf", 2):
        if message.body["task"] == "a":
            wf_engine.nack("wf", [lease(message, dead=True, error="bad")])
        else:
            wf_engine.ack("wf", [lease(message, result=1)])
    assert run_ready(wf_engine, expect=1) == {"c": [1]}
    assert wf_engine.reserve("wf", 10) == []
    read = wf_engine.get_workflow(workflow.id)
    assert read.state == "failed"
    assert read.failed_step == 0


def test_step_stopped_after_cancel_reads_cancelled(wf_engine):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    message = wf_engine.reserve("wf", 1)[0]
    wf_engine.cancel_workflow(workflow.id)
    # A worker that learns of the cancel request nacks the run.
    wf_engine.nack("wf", [lease(message, error="cancelled")])
    step = wf_engine.get_workflow(workflow.id).steps[0]
    assert step.state == "cancelled"
    assert step.result is None
    assert wf_engine.reserve("wf", 10) == []


def test_step_acked_after_cancel_keeps_result(wf_engine):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    message = wf_engine.reserve("wf", 1)[0]
    wf_engine.cancel_workflow(workflow.id)
    wf_engine.ack("wf", [lease(message, result="a-done")])
    steps = wf_engine.get_workflow(workflow.id).steps
    assert steps[0].state == "succeeded"
    assert steps[0].result == "a-done"
    assert steps[1].state == "waiting"


@pytest.mark.parametrize("name", ["two\nlines", "esc\x1b[2J", "bell\x07", "sep\u2028"])
def test_control_character_name_rejected(wf_engine, name):
    with pytest.raises(ValidationError, match="control character"):
        wf_engine.start_workflow(task("a"), name=name)
    assert wf_engine.list_workflows()[0] == []


def test_retry_posts_step_after_queue_created(wf_engine):
    wf_engine.create_queue("other")
    workflow = wf_engine.start_workflow(chain(task("a"), task("b", queue="other"), task("c")))
    wf_engine.delete_queue("other")
    run_ready(wf_engine, expect=1)
    failed = wf_engine.get_workflow(workflow.id)
    assert failed.state == "failed"
    assert f"conveyor workflows retry {workflow.id}" in failed.error
    wf_engine.create_queue("other")
    retried = wf_engine.retry_workflow(workflow.id)
    assert retried.state == "running"
    assert retried.steps[1].state == "queued"
    assert retried.steps[1].error is None
    assert run_ready(wf_engine, "other", expect=1) == {"b": ["a-done"]}
    assert run_ready(wf_engine, expect=1) == {"c": ["b-done"]}
    assert wf_engine.get_workflow(workflow.id).state == "succeeded"


def test_retry_twice_posts_once(wf_engine):
    wf_engine.create_queue("other")
    workflow = wf_engine.start_workflow(chain(task("a"), task("b", queue="other")))
    wf_engine.delete_queue("other")
    run_ready(wf_engine, expect=1)
    wf_engine.create_queue("other")
    wf_engine.retry_workflow(workflow.id)
    with pytest.raises(WorkflowNotRetryable, match="no step whose post failed"):
        wf_engine.retry_workflow(workflow.id)
    assert len(wf_engine.reserve("other", 10)) == 1


def test_retry_still_failing_changes_nothing(wf_engine):
    wf_engine.create_queue("other")
    wf_engine.create_queue("gone")
    workflow = wf_engine.start_workflow(
        chain(task("a"), group(task("b", queue="other"), task("c", queue="gone")))
    )
    wf_engine.delete_queue("other")
    wf_engine.delete_queue("gone")
    run_ready(wf_engine, expect=1)
    wf_engine.create_queue("other")
    with pytest.raises(QueueNotFound, match="step 2 of workflow"):
        wf_engine.retry_workflow(workflow.id)
    read = wf_engine.get_workflow(workflow.id)
    assert [step.state for step in read.steps] == ["succeeded", "failed", "failed"]
    assert wf_engine.reserve("other", 10) == []


def test_retry_dead_step_rejected(wf_engine):
    workflow_id = fail_first_step(wf_engine, chain(task("a"), task("b")))
    with pytest.raises(WorkflowNotRetryable, match="redriven") as caught:
        wf_engine.retry_workflow(workflow_id)
    assert f"conveyor workflows cancel {workflow_id}" in str(caught.value)


def test_retry_cancelled_workflow_rejected(wf_engine):
    workflow = wf_engine.start_workflow(task("a"))
    wf_engine.cancel_workflow(workflow.id)
    with pytest.raises(WorkflowNotRetryable, match="is cancelled"):
        wf_engine.retry_workflow(workflow.id)


def test_retry_join_after_size_raised(wf_engine):
    wf_engine.create_queue("small", {"max_message_size": 2048})
    spec = chain(group(task("a"), task("b")), task("join", queue="small"))
    workflow = wf_engine.start_workflow(spec)
    for message in wf_engine.reserve("wf", 10):
        wf_engine.ack("wf", [lease(message, result="x" * 1500)])
    failed = wf_engine.get_workflow(workflow.id)
    assert failed.steps[2].state == "failed"
    assert "could not post the step" in failed.steps[2].error
    wf_engine.update_queue("small", {"max_message_size": 8192})
    assert wf_engine.retry_workflow(workflow.id).state == "running"
    join = wf_engine.reserve("small", 10)
    assert len(join) == 1
    assert join[0].body["args"] == [["x" * 1500, "x" * 1500]]


def test_oversized_argument_names_step(wf_engine):
    spec = chain(task("a"), task("b", "x" * (300 * 1024)))
    with pytest.raises(PayloadTooLarge) as raised:
        wf_engine.start_workflow(spec)
    assert raised.value.detail.startswith("spec.chain[1].step: the step's message is ")
    assert "message 0" not in raised.value.detail
    assert wf_engine.list_workflows()[0] == []


def test_bad_header_names_step_once(wf_engine):
    step = {"step": {"queue": "wf", "body": "b", "headers": {"a": 5}}}
    with pytest.raises(ValidationError) as raised:
        wf_engine.start_workflow(chain(task("a"), step))
    assert raised.value.detail.startswith("spec.chain[1].step: the step's message header 'a'")
    assert "message 0" not in raised.value.detail


def test_cancel_removes_dead_steps(wf_engine):
    workflow_id = fail_first_step(wf_engine, chain(task("a"), task("b")))
    cancelled = wf_engine.cancel_workflow(workflow_id)
    assert cancelled.state == "cancelled"
    assert cancelled.steps[0].state == "cancelled"
    assert wf_engine.peek("wf.dlq", 10) == []
    assert wf_engine.redrive("wf.dlq") == 0
    assert wf_engine.reserve("wf", 10) == []


def test_succeeded_step_keeps_attempts(wf_engine, clock):
    workflow = wf_engine.start_workflow(chain(task("a"), task("b")))
    first = wf_engine.reserve("wf", 1)[0]
    wf_engine.nack("wf", [lease(first, error="retry me")])
    clock.advance(3600)
    again = wf_engine.reserve("wf", 1)[0]
    wf_engine.ack("wf", [lease(again, result=1)])
    steps = wf_engine.get_workflow(workflow.id).steps
    assert steps[0].state == "succeeded"
    assert steps[0].attempts == 2
    assert steps[1].attempts == 0


def test_entry_ack_keeps_attempts(wf_engine):
    workflow = wf_engine.start_workflow(task("a"))
    message = wf_engine.reserve("wf", 1)[0]
    # Logs make the store ack entry by entry instead of with one statement.
    wf_engine.ack("wf", [lease(message, result=1, logs="ran a")])
    assert wf_engine.get_workflow(workflow.id).steps[0].attempts == 1


def test_idempotent_start_returns_first(wf_engine):
    first, created = wf_engine.start_workflow_once(task("a"), "one", idempotency_key="k-1")
    again, created_again = wf_engine.start_workflow_once(task("b"), "two", idempotency_key="k-1")
    assert created is True
    assert created_again is False
    assert again.id == first.id
    assert again.name == "one"
    assert len(wf_engine.list_workflows()[0]) == 1
    assert len(wf_engine.reserve("wf", 10)) == 1


def test_other_key_starts_new(wf_engine):
    first = wf_engine.start_workflow(task("a"), idempotency_key="k-1")
    second = wf_engine.start_workflow(task("a"), idempotency_key="k-2")
    unkeyed = wf_engine.start_workflow(task("a"))
    assert len({first.id, second.id, unkeyed.id}) == 3


def test_failed_start_frees_key(wf_engine):
    with pytest.raises(QueueNotFound):
        wf_engine.start_workflow(task("a", queue="nowhere"), idempotency_key="k-1")
    started = wf_engine.start_workflow(task("a"), idempotency_key="k-1")
    assert wf_engine.get_workflow(started.id).state == "running"


@pytest.mark.parametrize("key", ["", "x" * 201, "tab\there", 5])
def test_invalid_idempotency_key_rejected(wf_engine, key):
    with pytest.raises(ValidationError, match="idempotency_key"):
        wf_engine.start_workflow(task("a"), idempotency_key=key)


def test_pass_result_false_gets_no_input(wf_engine):
    immutable = task("b", 5)
    immutable["step"]["pass_result"] = False
    workflow = wf_engine.start_workflow(chain(task("a"), immutable, task("c")))
    assert wf_engine.get_workflow(workflow.id).steps[1].state == "waiting"
    assert run_ready(wf_engine, expect=1) == {"a": []}
    assert run_ready(wf_engine, expect=1) == {"b": [5]}
    assert run_ready(wf_engine, expect=1) == {"c": ["b-done"]}


def test_step_delay_s_delays_message(wf_engine, clock):
    delayed = task("b")
    delayed["step"]["delay_s"] = 60
    wf_engine.start_workflow(chain(task("a"), delayed))
    run_ready(wf_engine, expect=1)
    assert wf_engine.reserve("wf", 10) == []
    clock.advance(61)
    assert run_ready(wf_engine, expect=1) == {"b": ["a-done"]}


@pytest.mark.parametrize("body, field", [
    ({"task": "a", "args": "x", "kwargs": {}}, "args"),
    ({"task": "a", "args": [], "kwargs": [1]}, "kwargs"),
])
def test_task_body_shape_checked(wf_engine, body, field):
    spec = chain(task("a"), {"step": {"queue": "wf", "body": body}})
    with pytest.raises(ValidationError, match=rf"spec\.chain\[1\]\.step\.body\.{field}"):
        wf_engine.start_workflow(spec)


def test_dlq_step_queue_rejected(wf_engine):
    with pytest.raises(ValidationError, match="dead-letter queue"):
        wf_engine.start_workflow(task("a", queue="wf.dlq"))
    assert wf_engine.list_workflows()[0] == []


@pytest.mark.parametrize("key, value", [("delay_s", -1), ("pass_result", "no")])
def test_bad_step_option_rejected(wf_engine, key, value):
    step = task("a")
    step["step"][key] = value
    with pytest.raises(ValidationError, match=key):
        wf_engine.start_workflow(step)


def test_nul_id_ack_beside_step(wf_engine):
    workflow = wf_engine.start_workflow(task("a"))
    message = wf_engine.reserve("wf", 1)[0]
    results = wf_engine.ack("wf", [{"id": message.id + "\x00", "receipt": message.receipt},
                                   lease(message, result=1)])
    assert [r.ok for r in results] == [False, True]
    assert wf_engine.get_workflow(workflow.id).state == "succeeded"
