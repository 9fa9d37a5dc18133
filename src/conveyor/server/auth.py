"""Bearer-token authentication for every path except the health check."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import Unauthorized
from .problems import send_problem

OPEN_PATHS = frozenset({"/v1/health"})


class BearerAuthMiddleware:
    """Reject HTTP requests without `Authorization: Bearer <token>` with 401.

    The token is compared with `hmac.compare_digest`, so the time taken does
    not reveal how much of a guess was right. The token is never logged.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self._authorized(scope):
            await self.app(scope, receive, send)
            return
        await _send_unauthorized(scope, send)

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                # The scheme name is case-insensitive (RFC 9110, section 11.1).
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    return False
                return hmac.compare_digest(credentials.strip(), self._expected)
        return False


async def _send_unauthorized(scope: Scope, send: Send) -> None:
    error = Unauthorized(
        "missing or wrong bearer token; send the header "
        "'Authorization: Bearer <token>' with the server's token"
    )
    await send_problem(scope, send, error, [(b"www-authenticate", b"Bearer")])
