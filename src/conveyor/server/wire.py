"""Request body parsing and response encoding.

Every endpoint reads its body as JSON whatever its Content-Type, so
`curl -d` works. The hot message endpoints (post, reserve, ack, nack, touch)
parse with orjson and check field names and JSON types here, naming the bad
field by its path (`messages[3].priority`); the engine checks value ranges
and quotes the bad value. These checks match the models in `schemas.py`.
The rare queue endpoints validate with those models (`read_model`).
"""

from __future__ import annotations

import base64
import json
import math
import re
from typing import Any, TypeVar

import orjson
import pydantic
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..errors import ValidationError
from ..models import EntryResult, Message, NewMessage, decode_body
from ..validation import ENTRY_KEYS
from .problems import MalformedRequest, validation_problem

JSON_MEDIA_TYPE = "application/json"

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)

_LONG_DIGIT_RUN = re.compile(rb"[0-9]{19}")

# JSON type checks: a description for error messages and the Python types
# orjson produces for that JSON type.
_INTEGER = ("an integer", (int,))
_NUMBER = ("a number", (int, float))
_STRING = ("a string", (str,))
_BOOLEAN = ("true or false", (bool,))
_OBJECT = ("an object", (dict,))
_ANY = ("any JSON value", (object,))

MESSAGE_FIELDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "body": _ANY,
    "body_base64": _STRING,
    "headers": _OBJECT,
    "priority": _INTEGER,
    "delay_s": _NUMBER,
    "not_before": _NUMBER,
    "group": _STRING,
    "dedup_id": _STRING,
    "retention_s": _NUMBER,
    "max_attempts": _INTEGER,
    "idempotency_key": _STRING,
}

RESERVE_FIELDS = {
    "max_messages": _INTEGER,
    "wait_s": _NUMBER,
    "visibility_timeout_s": _NUMBER,
}

# The JSON type of every receipt entry key. validation.ENTRY_KEYS lists the
# keys each action accepts.
_ENTRY_FIELD_TYPES = {
    "id": _STRING,
    "receipt": _STRING,
    "result": _ANY,
    "result_ttl_s": _NUMBER,
    "status": _STRING,
    "error": _STRING,
    "delay_s": _NUMBER,
    "retry_after_s": _NUMBER,
    "dead": _BOOLEAN,
    "release": _BOOLEAN,
    "cancelled": _BOOLEAN,
    "visibility_timeout_s": _NUMBER,
    "logs": _STRING,
    "progress": _NUMBER,
    "progress_text": _STRING,
}
ENTRY_FIELDS: dict[str, dict[str, tuple[str, tuple[type, ...]]]] = {
    action: {key: _ENTRY_FIELD_TYPES[key] for key in sorted(keys)}
    for action, keys in ENTRY_KEYS.items()
}


async def read_json_object(request: Request) -> dict[str, Any]:
    """Read the request body as one JSON object, or raise a problem error."""
    raw = await _read_body(request)
    if not raw:
        raise MalformedRequest("request body is empty; send one JSON object")
    try:
        data = _loads(raw)
    except ValueError as exc:
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise MalformedRequest("request body is nested too deeply") from exc
    if not isinstance(data, dict):
        raise ValidationError(
            f"request body must be a JSON object, got {_json_type(data)}"
        )
    return data


def _loads(raw: bytes) -> Any:
    """Parse JSON with orjson, unless it may contain an integer beyond 64 bits.

    orjson (3.13) reads an integer outside its range as a float, which would
    change a body silently. Such an integer has at least 19 digits
    (-2**63 - 1 has 19). So a body with a run of 19 digits is parsed by the
    standard library, which keeps integers exact, and the engine then
    rejects the ones it cannot store, as it does for in-process callers.
    That path also rejects numbers that overflow to infinity and strings
    that are not valid Unicode (lone surrogates), as orjson does.
    """
    if _LONG_DIGIT_RUN.search(raw) is None:
        return orjson.loads(raw)
    data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    try:
        orjson.dumps(data)
    except TypeError as exc:
        if "64-bit" not in str(exc):
            raise ValueError(str(exc)) from exc
    return data


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} is too large")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _read_body(request: Request) -> bytes:
    """Return the whole body; a client that disconnected gets a 400 it never reads.

    The size limit also ends a body this way once it has sent its 413, so
    this is expected and not logged as a server failure.
    """
    try:
        return await request.body()
    except ClientDisconnect as exc:
        raise MalformedRequest("the client disconnected before sending the whole body") from exc


async def read_model(
    request: Request, model: type[ModelT], optional: bool = False
) -> ModelT:
    """Read the JSON body and validate it with a pydantic model.

    With `optional`, an empty body is read as an empty object.
    """
    if optional and not await _read_body(request):
        data: dict[str, Any] = {}
    else:
        data = await read_json_object(request)
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise validation_problem(exc.errors()) from exc


def parse_post(data: dict[str, Any]) -> list[NewMessage]:
    """Turn a post request into NewMessages; the engine checks value ranges."""
    check_fields(
        "request", data, {"messages": ("a list", (list,))}, required=("messages",)
    )
    messages = []
    for index, item in enumerate(data["messages"]):
        try:
            messages.append(_parse_message(index, item))
        except ValidationError as exc:
            # Every per-message problem carries the message's index, as the
            # engine's own checks do.
            exc.extra.setdefault("index", index)
            raise
    return messages


def _parse_message(index: int, item: Any) -> NewMessage:
    path = f"messages[{index}]"
    if not isinstance(item, dict):
        raise ValidationError(f"{path} must be an object, got {_json_type(item)}")
    check_fields(path, item, MESSAGE_FIELDS)
    return _new_message(path, item)


def parse_reserve(data: dict[str, Any]) -> dict[str, Any]:
    """Return the reserve arguments with their defaults filled in."""
    check_fields("request", data, RESERVE_FIELDS)
    return {
        "max_messages": data.get("max_messages", 1),
        "wait_s": data.get("wait_s", 0.0),
        "visibility_timeout_s": data.get("visibility_timeout_s"),
    }


def parse_entries(action: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the entries of an ack, nack, touch, complete or progress request, checked for types."""
    check_fields(
        "request", data, {"entries": ("a list", (list,))}, required=("entries",)
    )
    fields = ENTRY_FIELDS[action]
    entries = data["entries"]
    for index, entry in enumerate(entries):
        path = f"entries[{index}]"
        if not isinstance(entry, dict):
            raise ValidationError(f"{path} must be an object, got {_json_type(entry)}")
        check_fields(path, entry, fields, required=("id", "receipt"))
    return entries


def check_fields(
    path: str,
    data: dict[str, Any],
    fields: dict[str, tuple[str, tuple[type, ...]]],
    required: tuple[str, ...] = (),
) -> None:
    """Reject unknown or missing fields and values of the wrong JSON type.

    A null value counts as absent, except where a field is required.
    """
    for name in required:
        if data.get(name) is None:
            raise ValidationError(
                f"{path} is missing the required field {name!r}", field=f"{path}.{name}"
            )
    for name, value in data.items():
        spec = fields.get(name)
        if spec is None:
            raise ValidationError(
                f"{path} has unknown field {name!r}; "
                f"known fields are: {', '.join(fields)}",
                field=f"{path}.{name}",
            )
        if value is None:
            continue
        description, types = spec
        if not _has_type(value, types):
            raise ValidationError(
                f"invalid {path}.{name}: expected {description}, "
                f"got {_json_type(value)}",
                field=f"{path}.{name}",
            )


def _new_message(path: str, item: dict[str, Any]) -> NewMessage:
    try:
        body = decode_body(item)
    except ValidationError as exc:
        raise ValidationError(f"{path}: {exc.detail}", field=path) from exc
    priority = item.get("priority")
    return NewMessage(
        body=body,
        headers=item.get("headers"),
        priority=0 if priority is None else priority,
        delay_s=item.get("delay_s"),
        not_before=item.get("not_before"),
        group=item.get("group"),
        dedup_id=item.get("dedup_id"),
        retention_s=item.get("retention_s"),
        max_attempts=item.get("max_attempts"),
        idempotency_key=item.get("idempotency_key"),
    )


def message_to_wire(message: Message, with_receipt: bool = True) -> dict[str, Any]:
    """Return a message's JSON form; binary bodies become `body_base64`.

    Receipts prove lease ownership, so only reserve sends them
    (`with_receipt`); peek and get leave them out.
    """
    data = {
        "id": message.id,
        "queue": message.queue,
        "state": message.state,
        "headers": message.headers,
        "priority": message.priority,
        "group": message.group,
        "dedup_id": message.dedup_id,
        "posted_at": message.posted_at,
        "due_at": message.due_at,
        "receive_count": message.receive_count,
        "max_attempts": message.max_attempts,
        "last_error": message.last_error,
        "source_queue": message.source_queue,
        "expires_at": message.expires_at,
        "reserved_until": message.reserved_until,
        "receipt": message.receipt if with_receipt else None,
        "idempotency_key": message.idempotency_key,
        "cancel_requested": message.cancel_requested,
        "progress": message.progress,
        "progress_text": message.progress_text,
        "progress_at": message.progress_at,
        "completed_at": message.completed_at,
        "completed_result": message.completed_result,
    }
    body = message.body
    if isinstance(body, (bytes, bytearray, memoryview)):
        data["body_base64"] = base64.b64encode(bytes(body)).decode("ascii")
    else:
        data["body"] = body
    return data


def entry_results_to_wire(results: list[EntryResult]) -> dict[str, Any]:
    return {"results": [result.to_wire() for result in results]}


def json_response(data: Any, status_code: int = 200) -> Response:
    """Encode a response with orjson, skipping FastAPI's model serialization."""
    return Response(
        orjson.dumps(data), status_code=status_code, media_type=JSON_MEDIA_TYPE
    )


def _has_type(value: Any, types: tuple[type, ...]) -> bool:
    """Tell whether a JSON value has one of the types; a boolean is no number."""
    if object in types:
        return True
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, list):
        return "a list"
    return "an object"
