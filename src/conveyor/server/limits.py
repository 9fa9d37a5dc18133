"""A request body size limit that rejects oversize bodies before reading them."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLarge
from ..settings import DEFAULT_MAX_REQUEST_BYTES
from .problems import send_problem


class RequestSizeLimitMiddleware:
    """Respond with 413 to any request whose body exceeds `max_request_bytes`.

    A declared `Content-Length` above the limit is rejected before any of the
    body is read. A body without one (chunked) is counted as it streams: once
    the count passes the limit, the middleware sends the 413 itself, tells
    the application the client disconnected, and drops whatever response the
    application still tries to send.
    """

    def __init__(
        self, app: ASGIApp, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    ) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_request_bytes:
            await self.send_too_large(scope, send, declared)
            return
        guard = _StreamGuard(self, scope, receive, send)
        await self.app(scope, guard.receive, guard.send)

    async def send_too_large(self, scope: Scope, send: Send, size: int | None) -> None:
        limit = f"the server's limit of {self.max_request_bytes} bytes"
        size_text = f"has {size} bytes, above {limit}" if size else f"is larger than {limit}"
        error = PayloadTooLarge(
            f"request body {size_text}; send smaller batches or start the "
            "server with a larger --max-request-bytes",
            max_request_bytes=self.max_request_bytes,
        )
        await send_problem(scope, send, error, [(b"connection", b"close")])


class _StreamGuard:
    """Counts streamed body bytes of one request and cuts it off at the limit."""

    __slots__ = (
        "_limits",
        "_scope",
        "_receive",
        "_send",
        "_received",
        "_started",
        "_rejected",
    )

    def __init__(
        self,
        limits: RequestSizeLimitMiddleware,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self._limits = limits
        self._scope = scope
        self._receive = receive
        self._send = send
        self._received = 0
        self._started = False
        self._rejected = False

    async def receive(self) -> Message:
        if self._rejected:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        self._received += len(message.get("body", b""))
        if self._received <= self._limits.max_request_bytes:
            return message

        self._rejected = True
        if not self._started:
            self._started = True
            await self._limits.send_too_large(self._scope, self._send, None)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self._rejected:
            return
        if message["type"] == "http.response.start":
            self._started = True
        await self._send(message)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
