"""RFC 9457 problem responses for every error the HTTP API returns.

Each handler turns one kind of failure into an `application/problem+json`
document with `type`, `title`, `status` and `detail`, plus extra members
(such as `index` or `errors`) that name the offending input.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Scope, Send

from ..errors import (
    ConveyorError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    ValidationError,
)
from ..settings import BREAKER_FIELDS
from ..settings import FIELDS as SETTING_FIELDS

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"


class MalformedRequest(ValidationError):
    """The request body is not valid JSON."""

    status = 400
    code = "malformed-request"
    title = "Malformed request"


class MethodNotAllowed(ConveyorError):
    """The path exists but does not accept this HTTP method."""

    status = 405
    code = "method-not-allowed"
    title = "Method not allowed"


# The maximum length of the request path a problem document repeats as its `instance`.
MAX_INSTANCE_CHARS = 200


def problem_response(
    error: ConveyorError,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Render an error as a problem document with the error's HTTP status.

    An `instance` (the request path) longer than MAX_INSTANCE_CHARS is cut,
    so a huge path is not echoed back whole.
    """
    if instance is not None and len(instance) > MAX_INSTANCE_CHARS:
        instance = instance[: MAX_INSTANCE_CHARS - 3] + "..."
    return Response(
        orjson.dumps(error.to_problem(instance)),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def problem_bytes(error: ConveyorError, instance: str | None = None) -> bytes:
    """Return the encoded problem document, for middleware that sends raw ASGI."""
    return orjson.dumps(error.to_problem(instance))


async def send_problem(
    scope: Scope,
    send: Send,
    error: ConveyorError,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Send a whole problem response from ASGI middleware, outside FastAPI."""
    body = problem_bytes(error, scope["path"])
    headers = [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers that make every error a problem document."""
    app.add_exception_handler(ConveyorError, _conveyor_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected_error)


async def _conveyor_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConveyorError)
    if exc.status >= 500:
        logger.error("Request %s %s failed: %s", request.method, request.url.path, exc)
    else:
        logger.debug(
            "Request %s %s rejected with %d: %s",
            request.method,
            request.url.path,
            exc.status,
            exc,
        )
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return problem_response(exc, request.url.path, headers)


async def _request_validation_error(request: Request, exc: Exception) -> Response:
    """Report an invalid path or query parameter; bodies are checked in `wire.py`."""
    assert isinstance(exc, RequestValidationError)
    return await _conveyor_error(request, validation_problem(exc.errors()))


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error: ConveyorError
    if exc.status_code == 404:
        error = NotFound(
            f"no route matches {request.method} {request.url.path}; "
            "see /openapi.json for the API's paths"
        )
    elif exc.status_code == 405:
        error = MethodNotAllowed(
            f"{request.url.path} does not accept {request.method}; "
            "see /openapi.json for its methods"
        )
    elif exc.status_code == 413:
        error = PayloadTooLarge(str(exc.detail))
    else:
        error = _generic_http_error(exc)
    return await _conveyor_error(request, error)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.error(
        "Request %s %s failed unexpectedly",
        request.method,
        request.url.path,
        exc_info=exc,
    )
    error = ConveyorError("the server failed unexpectedly; its log has the details")
    return problem_response(error, request.url.path)


def _generic_http_error(exc: StarletteHTTPException) -> ConveyorError:
    """Wrap an HTTP error Starlette raised that has no Conveyor class."""
    error = (
        ValidationError(str(exc.detail))
        if exc.status_code < 500
        else ConveyorError(str(exc.detail))
    )
    error.status = exc.status_code
    return error


def validation_problem(errors: Sequence[Any]) -> ValidationError:
    """Turn pydantic errors into one ValidationError that names the first field.

    The detail quotes the bad value; the `errors` member lists every error.
    """
    described = [_describe_validation_error(e) for e in errors]
    if not described:
        return ValidationError("invalid request")
    first, raw = described[0], errors[0]
    if raw.get("type") == "extra_forbidden":
        return ValidationError(_unknown_field_detail(first["field"]), errors=described)
    detail = f"invalid {first['field']}: {first['message']}"
    if raw.get("type") != "missing" and "input" in raw:
        detail += f" (got {_short_repr(raw['input'])})"
    return ValidationError(detail, errors=described)


def _unknown_field_detail(field: str) -> str:
    """Name an unknown field; for queue and breaker settings, list the known ones."""
    detail = f"unknown field {field}"
    if field.startswith("settings.breaker."):
        detail += f"; known breaker settings are: {', '.join(BREAKER_FIELDS)}"
    elif field.startswith("settings."):
        detail += f"; known queue settings are: {', '.join(SETTING_FIELDS)}"
    return detail


def _describe_validation_error(error: Any) -> dict[str, Any]:
    """Keep the JSON-safe parts of one pydantic error: field path, message, type.

    The path reads like `settings.max_attempts` or `entries[2].id`.
    """
    path = ""
    for part in error.get("loc", ()):
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return {
        "field": path.lstrip(".") or "request",
        "message": str(error.get("msg", "invalid value")),
        "type": str(error.get("type", "value_error")),
    }


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
