"""Pydantic models of the HTTP API's requests and responses.

They describe every endpoint in the OpenAPI document, and the queue
endpoints validate their bodies with them. The hot message endpoints (post,
reserve, ack, nack, touch) check the same fields by hand in `wire.py`, which
keeps per-message overhead low on batches of up to 1000. Durations are in
seconds, times are Unix timestamps in seconds and sizes are in bytes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models import STATES
from ..reports import MAX_PROGRESS_TEXT
from ..validation import MAX_ENTRY_BATCH, MAX_POST_BATCH, MAX_RESERVE_BATCH, MAX_WAIT_S

State = Literal[STATES]  # type: ignore[valid-type]


class StrictModel(BaseModel):
    """A request model: unknown fields and type coercion are rejected."""

    model_config = ConfigDict(extra="forbid", strict=True)


# Queues ------------------------------------------------------------------


class BreakerSettingsChanges(StrictModel):
    """A circuit breaker's settings; omitted ones get their defaults."""

    failure_ratio: float | None = Field(
        None, description="Share of failed attempts that opens it, above 0 up to 1; default 0.5"
    )
    window_s: float | None = Field(None, description="Window of attempts judged; default 60")
    min_attempts: int | None = Field(
        None, description="Attempts in the window before it may open; default 20"
    )
    cooldown_s: float | None = Field(
        None, description="First wait before probing; default 30"
    )
    max_cooldown_s: float | None = Field(
        None, description="Maximum wait after doubling; default 600"
    )
    probes: int | None = Field(None, description="Messages let through to probe; default 3")
    redrive_on_close: bool | None = Field(
        None, description="Redrive what was dead-lettered during the incident; default false"
    )
    redrive_rate_per_s: float | None = Field(
        None, description="Rate of that redrive; null: no limit of its own"
    )


class BreakerSettingsModel(BaseModel):
    """A queue's circuit breaker settings."""

    failure_ratio: float
    window_s: float
    min_attempts: int
    cooldown_s: float
    max_cooldown_s: float
    probes: int
    redrive_on_close: bool
    redrive_rate_per_s: float | None


class QueueSettingsChanges(StrictModel):
    """Queue settings to set; omitted ones keep their current or default value."""

    type: Literal["standard", "fifo"] | None = Field(
        None, description="standard, or fifo for per-group ordering; fixed at creation"
    )
    visibility_timeout_s: float | None = Field(None, description="Lease length")
    max_attempts: int | None = Field(
        None, description="Deliveries before dead-lettering"
    )
    dead_letter_queue: str | None = Field(
        None, description="DLQ name; default NAME.dlq"
    )
    backoff_base_s: float | None = Field(None, description="First retry delay")
    backoff_factor: float | None = Field(None, description="Growth of the retry delay")
    backoff_cap_s: float | None = Field(None, description="Maximum retry delay")
    backoff_jitter: Literal["full", "none"] | None = Field(
        None, description="Retry jitter"
    )
    retention_s: float | None = Field(None, description="How long a message is kept")
    max_message_size: int | None = Field(
        None, description="Largest message, up to 16 MiB"
    )
    default_delay_s: float | None = Field(None, description="Delay of new messages")
    dedup_window_s: float | None = Field(
        None, description="How long a dedup id is kept"
    )
    rate_limit_per_s: float | None = Field(
        None, description="Deliveries per second across all consumers; null: no limit"
    )
    rate_burst: int | None = Field(
        None, description="Token bucket size; null: the rate rounded up"
    )
    max_in_flight: int | None = Field(
        None, description="Messages reserved at once across all consumers; null: no limit"
    )
    group_max_in_flight: int | None = Field(
        None, description="Messages of one FIFO group reserved at once; default 1"
    )
    paused: bool | None = Field(
        None, description="True: deliver nothing, still accept posts"
    )
    breaker: BreakerSettingsChanges | None = Field(
        None, description="Circuit breaker; null removes it"
    )


class QueueSettingsModel(BaseModel):
    """The full settings of a queue."""

    type: Literal["standard", "fifo"]
    visibility_timeout_s: float
    max_attempts: int
    dead_letter_queue: str | None
    backoff_base_s: float
    backoff_factor: float
    backoff_cap_s: float
    backoff_jitter: Literal["full", "none"]
    retention_s: float
    max_message_size: int
    default_delay_s: float
    dedup_window_s: float
    rate_limit_per_s: float | None = None
    rate_burst: int | None = None
    max_in_flight: int | None = None
    group_max_in_flight: int = 1
    paused: bool = False
    breaker: BreakerSettingsModel | None = None


class CreateQueueRequest(StrictModel):
    name: str = Field(description="1 to 80 letters, digits, '_', '.' or '-'")
    settings: QueueSettingsChanges | None = None
    exist_ok: bool = Field(
        False, description="Return the existing queue instead of 409"
    )


class UpdateQueueRequest(StrictModel):
    settings: QueueSettingsChanges


class QueueInfoModel(BaseModel):
    name: str
    settings: QueueSettingsModel
    created_at: float
    updated_at: float


class QueueList(BaseModel):
    queues: list[QueueInfoModel]


class QueueStatsModel(BaseModel):
    queue: str
    ready: int
    delayed: int
    reserved: int
    dead: int = Field(
        description="Dead messages in this DLQ plus those that came from here"
    )
    oldest_ready_age_s: float | None
    paused: bool = Field(False, description="True while the queue delivers nothing")
    tokens: float | None = Field(
        None, description="Deliveries the rate limit allows now; null without one"
    )
    breaker: BreakerStatusModel | None = Field(
        None, description="The circuit breaker now; null without one"
    )


class BreakerStatusModel(BaseModel):
    """A circuit breaker now; the counts cover its window since it last closed."""

    state: Literal["closed", "open", "half_open"]
    mode: Literal["auto", "open", "closed"] = Field(
        description="auto, or the state an operator forces"
    )
    opened_at: float | None
    next_probe_at: float | None = Field(description="When an open breaker sends probes")
    cooldown_s: float | None
    failures: int
    attempts: int
    failure_ratio: float | None
    probes_sent: int
    probes_succeeded: int


class BreakerEventModel(BaseModel):
    """One change of a breaker's state and the numbers that caused it."""

    at: float
    from_state: str
    to_state: str
    failures: int | None
    attempts: int | None
    ratio: float | None
    cooldown_s: float | None
    reason: str


class BreakerReportModel(BaseModel):
    queue: str
    status: BreakerStatusModel | None = Field(description="null: the queue has no breaker")
    events: list[BreakerEventModel] = Field(description="Newest first")


class ForceBreakerRequest(StrictModel):
    state: Literal["open", "closed", "auto"] = Field(
        description="open or closed keeps that state; auto hands control back"
    )


class MessagesDeleted(BaseModel):
    queue: str
    messages_deleted: int


class QueueDeleted(MessagesDeleted):
    schedules: list[str] = Field(
        description="Schedules that still post to the deleted queue; their ticks post "
        "nothing until the queue exists again or they are changed or deleted"
    )


# Messages ----------------------------------------------------------------


class NewMessageModel(StrictModel):
    """A message to post: exactly one of `body` and `body_base64`."""

    body: Any = Field(None, description="Any JSON value")
    body_base64: str | None = Field(None, description="Binary body, base64-encoded")
    headers: dict[str, str] | None = None
    priority: int = Field(0, description="-1000 to 1000; higher is delivered first")
    delay_s: float | None = Field(None, description="Delay before the first delivery")
    not_before: float | None = Field(None, description="Earliest delivery time")
    group: str | None = Field(None, description="FIFO group; required on fifo queues")
    dedup_id: str | None = Field(None, description="Posts with a seen id are dropped")
    retention_s: float | None = Field(
        None, description="Shorter retention than the queue's"
    )
    max_attempts: int | None = Field(
        None, description="Overrides the queue's max_attempts"
    )
    idempotency_key: str | None = Field(
        None,
        description="Like dedup_id, in a namespace of its own; a consumer may "
        "record a completion for such a message before its ack",
    )


class PostRequest(StrictModel):
    messages: list[NewMessageModel] = Field(min_length=1, max_length=MAX_POST_BATCH)


class PostedMessage(BaseModel):
    id: str
    deduplicated: bool = Field(
        description="True when the dedup id named an earlier message"
    )


class PostResponse(BaseModel):
    messages: list[PostedMessage]


class MessageModel(BaseModel):
    """A stored message; `body` or `body_base64` contains its body."""

    id: str
    queue: str
    state: State
    body: Any = None
    body_base64: str | None = None
    headers: dict[str, str]
    priority: int
    group: str | None
    dedup_id: str | None
    posted_at: float
    due_at: float
    receive_count: int
    max_attempts: int | None
    last_error: str | None
    source_queue: str | None
    expires_at: float
    reserved_until: float | None = None
    receipt: str | None = Field(
        None, description="Lease proof; only reserve returns it"
    )
    idempotency_key: str | None = None
    cancel_requested: bool = Field(
        False, description="A cancel reached the message while it was reserved"
    )
    progress: float | None = Field(None, description="Last reported progress, 0 to 1")
    progress_text: str | None = None
    progress_at: float | None = None
    completed_at: float | None = Field(
        None, description="When a consumer recorded the completion; null if none"
    )
    completed_result: Any = Field(None, description="The recorded result")


class MessageList(BaseModel):
    messages: list[MessageModel]


class ReserveRequest(StrictModel):
    max_messages: int = Field(1, ge=1, le=MAX_RESERVE_BATCH)
    wait_s: float = Field(0.0, ge=0, le=MAX_WAIT_S, description="Long-poll wait")
    visibility_timeout_s: float | None = Field(None, description="Lease length")


class ReceiptEntry(StrictModel):
    id: str
    receipt: str = Field(description="The receipt reserve returned")


class AckEntry(ReceiptEntry):
    result: Any = Field(None, description="A JSON value stored as the outcome")
    result_ttl_s: float | None = Field(None, description="Keep the result this long")
    status: str | None = Field(
        None, description="Stored result status; default succeeded"
    )
    error: str | None = Field(None, description="Error text stored with the result")
    logs: str | None = Field(
        None, description="This attempt's log text, cut to 64 KiB"
    )
    progress: float | None = Field(None, description="Last progress, 0 to 1")
    progress_text: str | None = Field(None, description="Last progress text")


class NackEntry(ReceiptEntry):
    delay_s: float | None = Field(
        None, description="Retry delay instead of the backoff"
    )
    retry_after_s: float | None = Field(
        None,
        description="Back after this delay (above 0, up to a day) without using "
        "an attempt; the circuit breaker counts a failure",
    )
    error: str | None = Field(None, description="Kept as the message's last error")
    dead: bool = Field(False, description="Move to the DLQ now")
    release: bool = Field(False, description="Return now without using an attempt")
    cancelled: bool = Field(
        False, description="Finish as cancelled: no retry, no DLQ"
    )
    result: Any = Field(None, description="Stored as the result when dead-lettered")
    result_ttl_s: float | None = None
    logs: str | None = Field(
        None, description="This attempt's log text, cut to 64 KiB"
    )
    progress: float | None = Field(None, description="Last progress, 0 to 1")
    progress_text: str | None = Field(None, description="Last progress text")


class TouchEntry(ReceiptEntry):
    visibility_timeout_s: float | None = Field(None, description="New lease from now")


class AckRequest(StrictModel):
    entries: list[AckEntry] = Field(min_length=1, max_length=MAX_ENTRY_BATCH)


class NackRequest(StrictModel):
    entries: list[NackEntry] = Field(min_length=1, max_length=MAX_ENTRY_BATCH)


class TouchRequest(StrictModel):
    entries: list[TouchEntry] = Field(min_length=1, max_length=MAX_ENTRY_BATCH)


class CompleteEntry(ReceiptEntry):
    result: Any = Field(None, description="The attempt's result, kept until the ack")


class CompleteRequest(StrictModel):
    entries: list[CompleteEntry] = Field(min_length=1, max_length=MAX_ENTRY_BATCH)


class ProgressEntry(ReceiptEntry):
    progress: float = Field(ge=0, le=1, description="Fraction done, 0 to 1")
    progress_text: str | None = Field(
        None, max_length=MAX_PROGRESS_TEXT, description="What the task is doing"
    )


class ProgressRequest(StrictModel):
    entries: list[ProgressEntry] = Field(min_length=1, max_length=MAX_ENTRY_BATCH)


class CancelRequest(StrictModel):
    result_ttl_s: float | None = Field(
        None, description="Keep the cancelled result this long; default one day, 0 none"
    )


class AttemptLogModel(BaseModel):
    message_id: str
    attempt: int = Field(description="The delivery it belongs to, from 1")
    queue: str
    text: str
    created_at: float
    expires_at: float


class AttemptLogList(BaseModel):
    id: str
    logs: list[AttemptLogModel]


class EntryResultModel(BaseModel):
    """One entry's outcome; `error` is a problem code when `ok` is false."""

    id: str
    ok: bool
    outcome: Literal[
        "acked", "retried", "dead", "released", "touched", "cancelled",
        "cancel-requested", "completed", "updated",
    ] | None = None
    error: str | None = Field(None, description="stale-receipt or message-not-found")
    detail: str | None = None
    reserved_until: float | None = None
    cancel_requested: bool | None = Field(
        None, description="Set by touch and progress when a cancel was requested"
    )


class EntryResults(BaseModel):
    results: list[EntryResultModel]


class TaskResultModel(BaseModel):
    id: str
    queue: str
    status: str
    value: Any = None
    error: str | None
    finished_at: float
    expires_at: float
    extra: dict[str, Any] = Field(default_factory=dict)
    progress: float | None = None
    progress_text: str | None = None


# DLQ ---------------------------------------------------------------------


class RedriveRequest(StrictModel):
    message_ids: list[str] | None = Field(
        None, max_length=MAX_ENTRY_BATCH, description="Move these (all or none)"
    )
    limit: int | None = Field(
        None, ge=1, description="Move at most this many, oldest first"
    )
    background: bool = Field(
        False,
        description="Start a redrive job that the server runs in chunks and return "
        "it with 202, instead of moving the messages before responding",
    )
    rate_per_s: float | None = Field(
        None, description="Background only: messages per second; null: no rate of its own"
    )
    source_queue: str | None = Field(
        None, description="Background only: move only messages from this queue"
    )
    dead_after: float | None = Field(
        None, description="Background only: move only messages dead-lettered at or after this time"
    )


class RedriveResponse(BaseModel):
    redriven: int


class RedriveJobModel(BaseModel):
    """A background redrive; `cursor_seq` is the post position it has reached."""

    id: str
    dlq: str
    source_queue: str | None
    dead_after: float | None
    limit: int | None
    rate_per_s: float | None
    state: Literal["active", "done", "cancelled", "failed"]
    moved: int
    cursor_seq: int
    error: str | None
    created_at: float
    updated_at: float
    claimed_until: float | None = Field(
        None, description="When the lease of the server running it ends"
    )


class RedriveJobList(BaseModel):
    jobs: list[RedriveJobModel] = Field(description="Newest first")


# Workflows -----------------------------------------------------------------

WorkflowState = Literal["running", "succeeded", "failed", "cancelled"]
StepState = Literal[
    "waiting", "queued", "running", "succeeded", "failed", "cancelled", "expired"
]


class WorkflowStartRequest(BaseModel):
    """A workflow to start: a tree of `step`, `chain` and `group` nodes."""

    model_config = {"extra": "forbid"}

    spec: dict[str, Any] = Field(
        description="The root node: `{\"step\": {\"queue\", \"body\", \"headers\", "
        "\"priority\", \"max_attempts\"}}`, `{\"chain\": [node, ...]}` (each node runs "
        "after the previous one succeeded and receives its result) or "
        "`{\"group\": [node, ...]}` (the nodes run in parallel; the group's result "
        "is the list of their results, in order). At most 1,000 steps, nested at "
        "most 32 levels deep."
    )
    name: str | None = Field(None, description="A label shown in lists, 1 to 200 characters")
    idempotency_key: str | None = Field(
        None,
        description="1 to 128 characters. A start with the key of a stored workflow "
        "returns that workflow with 200 and stores nothing, so a start retried after "
        "a timeout does not run twice. The key is freed when the workflow is deleted.",
    )


class WorkflowStepModel(BaseModel):
    """One step; `input` is what its message received, `result` what its ack reported."""

    index: int
    queue: str
    task: str | None = Field(description="The task name of a task-call body, else null")
    state: StepState
    parents: list[int] = Field(description="Steps whose results form the input")
    message_id: str | None
    attempts: int | None = Field(description="Deliveries of its message while stored")
    error: str | None
    input: Any = None
    result: Any = None
    posted_at: float | None
    finished_at: float | None


class WorkflowModel(BaseModel):
    """A workflow; `steps` is null in lists."""

    id: str
    name: str | None
    state: WorkflowState
    step_count: int
    steps_left: int = Field(description="Steps that have not succeeded yet")
    created_at: float
    finished_at: float | None
    result: Any = Field(None, description="Set once it succeeded")
    failed_step: int | None = Field(None, description="The first step that stopped it")
    error: str | None = None
    steps: list[WorkflowStepModel] | None = None


class WorkflowList(BaseModel):
    workflows: list[WorkflowModel] = Field(description="Newest first, without steps")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


# Service -----------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Problem(BaseModel):
    """An RFC 9457 problem document; extra members name the bad input."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
