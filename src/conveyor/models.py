"""Plain records passed between the engine, the server and the SDK.

Times are Unix timestamps in seconds (float) and durations are in seconds.
A message body is any JSON value, or `bytes` for binary data.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError

# Message states, as stored and as reported.
DELAYED = "delayed"
READY = "ready"
RESERVED = "reserved"
DEAD = "dead"
STATES = (DELAYED, READY, RESERVED, DEAD)


@dataclass
class NewMessage:
    """A message to post; every field but the body is optional."""

    body: Any
    headers: dict[str, str] | None = None
    priority: int = 0
    delay_s: float | None = None
    not_before: float | None = None
    group: str | None = None
    dedup_id: str | None = None
    retention_s: float | None = None
    max_attempts: int | None = None
    idempotency_key: str | None = None


@dataclass
class PostResult:
    """The id given to a posted message; `deduplicated` when it existed."""

    id: str
    deduplicated: bool = False


@dataclass
class Message:
    """A stored message as peek and get report it.

    `idempotency_key` is set when the message was posted with one instead
    of a dedup id. `cancel_requested` is true once a cancel reached the
    message while it was reserved. `progress` (0 to 1), `progress_text`
    and `progress_at` are the last progress its consumer reported.
    `completed_at` and `completed_result` are its completion record: the
    consumer finished it but may not have acked it yet.
    """

    id: str
    queue: str
    state: str
    body: Any
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
    receipt: str | None = None
    idempotency_key: str | None = None
    cancel_requested: bool = False
    progress: float | None = None
    progress_text: str | None = None
    progress_at: float | None = None
    completed_at: float | None = None
    completed_result: Any = None

    def to_wire(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("body")
        data.update(encode_body(self.body))
        return data


@dataclass
class EntryResult:
    """The outcome of one entry of an ack, nack or touch batch.

    `error` is a problem code (`stale-receipt`, `message-not-found`) when `ok`
    is false; `outcome` names what happened when it is true: acked, retried,
    dead, released, touched, cancelled, cancel-requested, completed or
    updated. `cancel_requested` is true when a touch or a progress update
    finds that someone asked to cancel the message.
    """

    id: str
    ok: bool
    error: str | None = None
    detail: str | None = None
    reserved_until: float | None = None
    outcome: str | None = None
    cancel_requested: bool | None = None

    def to_wire(self) -> dict[str, Any]:
        """Return the fields that are not None.

        Every field is a scalar, so reading the attributes gives what
        dataclasses.asdict would, without its recursive copy. An ack
        returns one result per entry, so this runs once per acked message.
        """
        data = {}
        for name in _ENTRY_RESULT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


_ENTRY_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(EntryResult))


@dataclass
class QueueStats:
    """Counts per state, the age of the oldest ready message and flow control.

    `tokens` is the rate limit's bucket level now (None without a rate
    limit), and `breaker` the wire form of the circuit breaker's
    BreakerStatus (None without a breaker).
    """

    queue: str
    ready: int = 0
    delayed: int = 0
    reserved: int = 0
    dead: int = 0
    oldest_ready_age_s: float | None = None
    paused: bool = False
    tokens: float | None = None
    breaker: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class QueueInfo:
    """A queue's name, settings and creation time."""

    name: str
    settings: dict[str, Any]
    created_at: float
    updated_at: float

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TaskResult:
    """The stored outcome of a finished message, kept for a time to live.

    `status` is succeeded, failed, dead or cancelled. `progress` and
    `progress_text` are the last progress the consumer reported, if any.
    """

    id: str
    queue: str
    status: str
    value: Any = None
    error: str | None = None
    finished_at: float = 0.0
    expires_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    progress: float | None = None
    progress_text: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AttemptLog:
    """The log records one attempt of a message captured, as one text.

    `attempt` counts deliveries from 1. The text ends with a note when it
    was cut at the size limit.
    """

    message_id: str
    attempt: int
    queue: str
    text: str
    created_at: float
    expires_at: float

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BreakerStatus:
    """A queue's circuit breaker now.

    `state` is closed, open or half_open; `mode` is auto, or open or
    closed while an operator forces it. `next_probe_at` is when an open
    breaker lets its probes through. `failures`, `attempts` and
    `failure_ratio` count the attempts that finished in the breaker's
    window (since it last closed).
    """

    state: str
    mode: str
    opened_at: float | None
    next_probe_at: float | None
    cooldown_s: float | None
    failures: int
    attempts: int
    failure_ratio: float | None
    probes_sent: int
    probes_succeeded: int

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BreakerEvent:
    """One change of a circuit breaker's state and the numbers that caused it.

    `failures`, `attempts` and `ratio` are None when the change did not
    look at the window (the end of a cool-down).
    """

    at: float
    from_state: str
    to_state: str
    failures: int | None
    attempts: int | None
    ratio: float | None
    cooldown_s: float | None
    reason: str

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BreakerReport:
    """A queue's breaker status (None without a breaker) and its latest events."""

    queue: str
    status: BreakerStatus | None
    events: list[BreakerEvent]

    def to_wire(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "status": None if self.status is None else self.status.to_wire(),
            "events": [event.to_wire() for event in self.events],
        }


@dataclass
class RedriveJob:
    """A redrive of a DLQ that a server runs in the background, in chunks.

    `source_queue`, `dead_after` (only messages dead-lettered at or after
    this time) and `limit` narrow what it moves; `rate_per_s` paces it
    (None: as fast as chunks go). `state` is active, done, cancelled or
    failed (`error` gives the reason). `moved` counts the messages moved so
    far and `cursor_seq` is the post position it has reached, and each
    chunk advances both in the transaction that moves its messages.
    `claimed_until` is when the lease of the server running it ends (None:
    no server has it).
    """

    id: str
    dlq: str
    source_queue: str | None
    dead_after: float | None
    limit: int | None
    rate_per_s: float | None
    state: str
    moved: int
    cursor_seq: int
    error: str | None
    created_at: float
    updated_at: float
    claimed_until: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def encode_body(body: Any) -> dict[str, Any]:
    """Return the wire form of a body: `body`, or `body_base64` for bytes."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return {"body_base64": base64.b64encode(bytes(body)).decode("ascii")}
    return {"body": body}


def decode_body(data: dict[str, Any]) -> Any:
    """Return the body of a wire entry that has `body` or `body_base64`."""
    has_json = "body" in data
    has_bytes = "body_base64" in data
    if has_json == has_bytes:
        raise ValidationError(
            "each message needs exactly one of 'body' (any JSON value) "
            "or 'body_base64' (binary data in base64)"
        )
    if has_json:
        return data["body"]

    encoded = data["body_base64"]
    if not isinstance(encoded, str):
        raise ValidationError("'body_base64' must be a base64 string")
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise ValidationError(f"'body_base64' is not valid base64: {exc}") from exc


@dataclass
class Schedule:
    """A stored schedule: when it fires and the message each tick posts.

    Exactly one of `cron` (read in `timezone`) and `interval_s` is set.
    `message` is the template: body, headers, priority, group, delay_s,
    retention_s and max_attempts, where set. `state` is active, paused or
    finished (no more ticks: past `end_at` or `max_runs` reached).
    `next_fire_times` lists the next few ticks, the first being
    `next_fire_at`. `source` is "code" for schedules declared with
    `@app.periodic` and "api" for the others. `last_error` is why the last
    tick posted nothing, None after a tick that posted. `updated_at` is
    the last change of the definition or pause state; firing leaves it.
    """

    name: str
    queue: str
    cron: str | None
    timezone: str
    interval_s: float | None
    start_at: float
    end_at: float | None
    max_runs: int | None
    catch_up: str
    catch_up_limit: int
    grace_s: float
    message: dict[str, Any]
    source: str
    paused: bool
    state: str
    run_count: int
    last_fire_at: float | None
    next_fire_at: float | None
    last_error: str | None
    created_at: float
    updated_at: float
    next_fire_times: list[float] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class WorkflowStep:
    """One step of a workflow as status reads report it.

    `state` is waiting (parents not finished), queued, running, succeeded,
    failed, cancelled or expired. A step failed when its message is dead,
    or when it could not be posted or its result could not be stored. It
    is cancelled when its message was cancelled, and expired when its
    message is gone without having succeeded. `parents` are the indexes of
    the steps whose results form its `input`.
    `attempts` is the receive count of its message while it is stored.
    """

    index: int
    queue: str
    task: str | None
    state: str
    parents: list[int]
    message_id: str | None = None
    attempts: int | None = None
    error: str | None = None
    input: Any = None
    result: Any = None
    posted_at: float | None = None
    finished_at: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Workflow:
    """A workflow: steps run in chain and group order, compiled into a graph.

    `state` is running, succeeded, failed (a step failed, was cancelled or
    expired; `failed_step` and `error` name it) or cancelled (the whole
    workflow was cancelled). `result` is set once it succeeded: the result
    of its last chain element, or the list of a group's results. `steps`
    is None in lists and filled by a read of one workflow.
    """

    id: str
    name: str | None
    state: str
    step_count: int
    steps_left: int
    created_at: float
    finished_at: float | None = None
    result: Any = None
    failed_step: int | None = None
    error: str | None = None
    steps: list[WorkflowStep] | None = None

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
