"""The SDK's HTTP transport: the Engine's sync methods over the /v1 API.

`HTTPClient` has the same method names, arguments and return types as
`Engine`, so code written against one runs on the other. Problem documents
become the same ConveyorError subclasses the engine raises, and network
failures become TransportError.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from ..errors import (
    ERROR_CLASSES,
    PROBLEM_BASE,
    ConveyorError,
    NotFound,
    PayloadTooLarge,
    StoreUnavailable,
    TransportError,
    Unauthorized,
    ValidationError,
    error_from_problem,
)
from .http_schedules import HTTPScheduleMethods
from ..models import (
    BreakerEvent,
    BreakerReport,
    BreakerStatus,
    AttemptLog,
    EntryResult,
    Message,
    NewMessage,
    PostResult,
    QueueInfo,
    QueueStats,
    RedriveJob,
    Workflow,
    WorkflowStep,
    TaskResult,
    decode_body,
    encode_body,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
# Enough pooled connections for a worker's reserve, ack and touch loops and
# a few application threads to each keep one open.
MAX_CONNECTIONS = 32

# Message's fields in declaration order. A worker rebuilds every reserved
# message, and positional arguments build the 24 fields in about half the
# time that keyword arguments take.
_MESSAGE_FIELDS = [f.name for f in dataclasses.fields(Message)]
_BODY_INDEX = _MESSAGE_FIELDS.index("body")
_HEADERS_INDEX = _MESSAGE_FIELDS.index("headers")
_TASK_RESULT_FIELDS = {f.name for f in dataclasses.fields(TaskResult)}
_STATUS_CLASSES: dict[int, type[ConveyorError]] = {
    400: ValidationError,
    401: Unauthorized,
    404: NotFound,
    413: PayloadTooLarge,
    422: ValidationError,
    503: StoreUnavailable,
}


class HTTPClient(HTTPScheduleMethods):
    """A Conveyor server's queues, with the Engine's interface.

    One instance may be shared by many threads: it keeps a pool of
    keep-alive connections. `timeout_s` bounds connecting and each read, and
    a long poll's read may take `wait_s` longer.
    """

    def __init__(
        self, url: str, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url + "/v1",
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS,
                max_keepalive_connections=MAX_CONNECTIONS,
            ),
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> HTTPClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HTTPClient({redact_url(self.url)!r})"

    # Queues ------------------------------------------------------------

    def create_queue(
        self, name: str, settings: dict[str, Any] | None = None, exist_ok: bool = False
    ) -> QueueInfo:
        """Create a queue (and its DLQ); raise QueueAlreadyExists unless exist_ok."""
        body = {"name": name, "settings": settings, "exist_ok": exist_ok}
        return _queue_info(self._request("POST", "/queues", body))

    def update_queue(self, name: str, changes: dict[str, Any]) -> QueueInfo:
        """Change settings at run time; unknown keys and bad values raise."""
        return _queue_info(
            self._request("PATCH", _queue_path(name), {"settings": changes})
        )

    def pause_queue(self, name: str) -> QueueInfo:
        """Stop delivering a queue's messages; posts are still accepted."""
        return _queue_info(self._request("POST", _queue_path(name, "pause")))

    def resume_queue(self, name: str) -> QueueInfo:
        """Deliver a paused queue's messages again."""
        return _queue_info(self._request("POST", _queue_path(name, "resume")))

    def get_queue(self, name: str) -> QueueInfo:
        return _queue_info(self._request("GET", _queue_path(name)))

    def list_queues(self) -> list[QueueInfo]:
        data = self._request("GET", "/queues")
        return [_queue_info(item) for item in data["queues"]]

    def delete_queue(self, name: str) -> int:
        """Delete a queue and its messages; return how many messages went."""
        return self._request("DELETE", _queue_path(name))["messages_deleted"]

    def purge_queue(self, name: str) -> int:
        """Delete every message of a queue; return how many."""
        return self._request("POST", _queue_path(name, "purge"))["messages_deleted"]

    # Messages ----------------------------------------------------------

    def post(self, queue: str, messages: list[NewMessage]) -> list[PostResult]:
        """Post a batch, all or nothing; return ids once committed durably."""
        body = {"messages": [_new_message_to_wire(m) for m in messages]}
        data = self._request("POST", _queue_path(queue, "messages"), body)
        return [
            PostResult(item["id"], item["deduplicated"]) for item in data["messages"]
        ]

    def reserve(
        self,
        queue: str,
        max_messages: int = 1,
        wait_s: float = 0.0,
        visibility_timeout_s: float | None = None,
    ) -> list[Message]:
        """Lease up to max_messages ready messages, waiting up to wait_s.

        Returns as soon as at least one message was leased, or an empty list
        when the wait ends. Each message carries a new receipt.
        """
        body = {
            "max_messages": max_messages,
            "wait_s": wait_s,
            "visibility_timeout_s": visibility_timeout_s,
        }
        timeout = _long_poll_timeout(self.timeout_s, wait_s)
        data = self._request("POST", _queue_path(queue, "reserve"), body, timeout)
        return [message_from_wire(item) for item in data["messages"]]

    def ack(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        """Delete leased messages; each entry needs the current receipt.

        An entry may carry `result` and `result_ttl_s` to store the outcome.
        """
        return self._entries("ack", queue, entries)

    def nack(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        """Fail leased messages: retry after a backoff or move to the DLQ.

        Entry keys: `delay_s` overrides the backoff, `error` is kept as the
        last error, `dead` dead-letters now, `release` returns the message at
        once without using up an attempt. `retry_after_s` returns it after
        that delay without using up an attempt, and counts as a failure for
        the queue's circuit breaker.
        """
        return self._entries("nack", queue, entries)

    def touch(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        """Extend leases by `visibility_timeout_s` (default: the queue's)."""
        return self._entries("touch", queue, entries)

    def complete(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        """Store completion records: each entry's `result`, before the ack."""
        return self._entries("complete", queue, entries)

    def progress(self, queue: str, entries: list[dict[str, Any]]) -> list[EntryResult]:
        """Store leased messages' `progress` (0 to 1) and optional `progress_text`."""
        return self._entries("progress", queue, entries)

    def cancel(self, message_id: str, result_ttl_s: float | None = None) -> EntryResult:
        """Cancel a message by id: outcome `cancelled` or `cancel-requested`.

        Raises MessageFinished for a dead or finished message and
        MessageNotFound for an unknown id.
        """
        body = {} if result_ttl_s is None else {"result_ttl_s": result_ttl_s}
        return _entry_result(self._request("POST", _message_path(message_id, "cancel"), body))

    def get_logs(self, message_id: str, attempt: int | None = None) -> list[AttemptLog]:
        """Return the logs stored for a message's attempts, or for one attempt."""
        params = None if attempt is None else {"attempt": attempt}
        data = self._request("GET", _message_path(message_id, "logs"), params=params)
        return [AttemptLog(**item) for item in data["logs"]]

    def redrive(
        self, dlq: str, message_ids: list[str] | None = None, limit: int | None = None
    ) -> int:
        """Move dead messages from a DLQ back to their source queues.

        With message_ids, all of them move or none (MessageNotFound). Without,
        every dead message moves, oldest first, up to limit.
        """
        body = {"message_ids": message_ids, "limit": limit}
        return self._request("POST", _queue_path(dlq, "redrive"), body)["redriven"]

    # Redrive jobs ------------------------------------------------------

    def start_redrive_job(
        self,
        dlq: str,
        rate_per_s: float | None = None,
        limit: int | None = None,
        source_queue: str | None = None,
        dead_after: float | None = None,
    ) -> RedriveJob:
        """Start a redrive job of a DLQ, which the server runs in the background."""
        body = {
            "background": True,
            "rate_per_s": rate_per_s,
            "limit": limit,
            "source_queue": source_queue,
            "dead_after": dead_after,
        }
        return RedriveJob(**self._request("POST", _queue_path(dlq, "redrive"), body))

    def list_redrive_jobs(
        self, dlq: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[RedriveJob]:
        """Return redrive jobs, newest first, optionally of one DLQ or in one state."""
        params: dict[str, Any] = {"limit": limit}
        if dlq is not None:
            params["dlq"] = dlq
        if state is not None:
            params["state"] = state
        data = self._request("GET", "/redrive-jobs", params=params)
        return [RedriveJob(**job) for job in data["jobs"]]

    def get_redrive_job(self, job_id: str) -> RedriveJob:
        return RedriveJob(**self._request("GET", _job_path(job_id)))

    def cancel_redrive_job(self, job_id: str) -> RedriveJob:
        """Stop an active job after its current chunk; a finished job stays as it is."""
        return RedriveJob(**self._request("POST", _job_path(job_id, "cancel")))

    # Workflows ---------------------------------------------------------

    def start_workflow(
        self, spec: dict[str, Any], name: str | None = None,
        idempotency_key: str | None = None,
    ) -> Workflow:
        """Start a workflow from its spec; see Engine.start_workflow."""
        body = {"spec": spec, "name": name, "idempotency_key": idempotency_key}
        return workflow_from_wire(self._request("POST", "/workflows", body))

    def get_workflow(self, workflow_id: str) -> Workflow:
        return workflow_from_wire(self._request("GET", _workflow_path(workflow_id)))

    def list_workflows(
        self, state: str | None = None, cursor: str | None = None, limit: int = 100
    ) -> tuple[list[Workflow], str | None]:
        """Return workflows newest first and the cursor of the next page (None: last)."""
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = state
        if cursor is not None:
            params["cursor"] = cursor
        data = self._request("GET", "/workflows", params=params)
        return [workflow_from_wire(item) for item in data["workflows"]], data["next_cursor"]

    def cancel_workflow(self, workflow_id: str) -> Workflow:
        return workflow_from_wire(self._request("POST", _workflow_path(workflow_id, "cancel")))

    def retry_workflow(self, workflow_id: str) -> Workflow:
        return workflow_from_wire(self._request("POST", _workflow_path(workflow_id, "retry")))

    # Reads -------------------------------------------------------------

    def peek(
        self, queue: str, limit: int = 10, offset: int = 0, state: str | None = None
    ) -> list[Message]:
        """List messages in post order without leasing them; no receipts."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if state is not None:
            params["state"] = state
        data = self._request("GET", _queue_path(queue, "messages"), params=params)
        return [message_from_wire(item) for item in data["messages"]]

    def get_message(self, message_id: str) -> Message:
        return message_from_wire(self._request("GET", _message_path(message_id)))

    def get_result(self, message_id: str) -> TaskResult | None:
        """Return the stored outcome of a finished message, if still kept."""
        try:
            data = self._request("GET", _message_path(message_id, "result"))
        except NotFound as exc:
            if type(exc) is NotFound:
                return None
            raise
        return TaskResult(**{k: v for k, v in data.items() if k in _TASK_RESULT_FIELDS})

    def stats(self, queue: str) -> QueueStats:
        return QueueStats(**self._request("GET", _queue_path(queue, "stats")))

    # Circuit breaker ---------------------------------------------------

    def breaker(self, queue: str, limit: int = 20) -> BreakerReport:
        """Return a queue's breaker status and its latest `limit` changes, newest first.

        The status is None when the queue has no breaker.
        """
        data = self._request("GET", _queue_path(queue, "breaker"), params={"limit": limit})
        return breaker_report_from_wire(data)

    def force_breaker(self, queue: str, state: str) -> BreakerReport:
        """Force a queue's breaker "open" or "closed", or hand it back with "auto"."""
        data = self._request("POST", _queue_path(queue, "breaker"), {"state": state})
        return breaker_report_from_wire(data)

    # Transport ---------------------------------------------------------

    def _entries(
        self, action: str, queue: str, entries: list[dict[str, Any]]
    ) -> list[EntryResult]:
        data = self._request("POST", _queue_path(queue, action), {"entries": entries})
        return [_entry_result(item) for item in data["results"]]

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout_s: float | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        """Send one request and return its decoded JSON, or raise its problem."""
        content = None if body is None else _dump_json(body)
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s
        try:
            response = self._http.request(
                method, path, content=content, params=params, timeout=timeout
            )
        except httpx.TimeoutException as exc:
            raise TransportError(
                f"{method} {redact_url(self.url)}/v1{path} timed out ({type(exc).__name__}); "
                "check that the server is running and not overloaded, "
                "or raise timeout_s",
                url=redact_url(self.url),
            ) from exc
        except httpx.TransportError as exc:
            raise TransportError(
                f"could not reach the Conveyor server at {redact_url(self.url)} ({exc}); check "
                "that 'conveyor server' is running and the URL is right",
                url=redact_url(self.url),
            ) from exc
        if response.status_code >= 400:
            raise _error_from_response(response)
        return _load_json(response)


def redact_url(url: str) -> str:
    """Return the URL without user info, so a password never reaches a log.

    Any scheme: a postgresql:// store URL given where a server URL belongs
    ends up in an error message too.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the given URL"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def workflow_from_wire(data: dict[str, Any]) -> Workflow:
    """Rebuild a Workflow, and its steps when the response has them."""
    steps = data.get("steps")
    fields = {**data, "steps": None if steps is None else [WorkflowStep(**s) for s in steps]}
    return Workflow(**fields)


def message_from_wire(data: dict[str, Any]) -> Message:
    """Rebuild a Message from its JSON form; `body_base64` becomes bytes."""
    values = list(map(data.get, _MESSAGE_FIELDS))
    values[_BODY_INDEX] = decode_body(data)
    values[_HEADERS_INDEX] = values[_HEADERS_INDEX] or {}
    return Message(*values)


def _new_message_to_wire(message: NewMessage) -> dict[str, Any]:
    if not isinstance(message, NewMessage):
        raise ValidationError(
            f"post() takes a list of NewMessage, got {type(message).__name__}; "
            "wrap each body as NewMessage(body)"
        )
    data = encode_body(message.body)
    for field in dataclasses.fields(NewMessage):
        if field.name == "body":
            continue
        value = getattr(message, field.name)
        if value is not None and value != field.default:
            data[field.name] = value
    return data


def breaker_report_from_wire(data: dict[str, Any]) -> BreakerReport:
    status = data.get("status")
    return BreakerReport(
        queue=data["queue"],
        status=None if status is None else BreakerStatus(**status),
        events=[BreakerEvent(**event) for event in data["events"]],
    )


def _queue_info(data: dict[str, Any]) -> QueueInfo:
    return QueueInfo(
        data["name"], data["settings"], data["created_at"], data["updated_at"]
    )


def _entry_result(data: dict[str, Any]) -> EntryResult:
    return EntryResult(
        id=data["id"],
        ok=data["ok"],
        error=data.get("error"),
        detail=data.get("detail"),
        reserved_until=data.get("reserved_until"),
        outcome=data.get("outcome"),
        cancel_requested=data.get("cancel_requested"),
    )


def _workflow_path(workflow_id: str, action: str | None = None) -> str:
    path = "/workflows/" + quote(str(workflow_id), safe="")
    return path if action is None else f"{path}/{action}"


def _queue_path(name: str, action: str | None = None) -> str:
    path = "/queues/" + quote(str(name), safe="")
    return f"{path}/{action}" if action else path


def _job_path(job_id: str, action: str | None = None) -> str:
    path = "/redrive-jobs/" + quote(str(job_id), safe="")
    return f"{path}/{action}" if action else path


def _message_path(message_id: str, action: str | None = None) -> str:
    path = "/messages/" + quote(str(message_id), safe="")
    return f"{path}/{action}" if action else path


def _long_poll_timeout(timeout_s: float, wait_s: Any) -> float:
    """Return a read timeout that outlasts the server's wait."""
    extra = wait_s if isinstance(wait_s, (int, float)) and wait_s > 0 else 0.0
    return timeout_s + extra


def _dump_json(body: Any) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError as exc:
        raise ValidationError(
            f"request is not JSON-serialisable ({exc}); send JSON values "
            "(objects, arrays, strings, numbers, booleans, null) or bytes bodies"
        ) from exc


def _load_json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise TransportError(
            f"{response.request.method} {response.request.url} returned "
            f"{response.status_code} with a body that is not JSON; is the URL a "
            "Conveyor server?",
            status_code=response.status_code,
        ) from exc


def _error_from_response(response: httpx.Response) -> ConveyorError:
    """Rebuild the server's error from its problem document."""
    try:
        problem = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        problem = None
    if not isinstance(problem, dict) or "type" not in problem:
        snippet = response.text[:200]
        return TransportError(
            f"{response.request.method} {response.request.url} returned "
            f"{response.status_code} without a problem document: {snippet!r}; "
            "is the URL a Conveyor server?",
            status_code=response.status_code,
        )
    error = error_from_problem(problem)
    code = str(problem["type"]).removeprefix(PROBLEM_BASE)
    fallback = _STATUS_CLASSES.get(response.status_code)
    if code not in ERROR_CLASSES and fallback is not None:
        # A problem type this SDK version does not know, such as
        # malformed-request: keep the detail, raise the status's class.
        error = fallback(error.detail, **error.extra)
    return error
