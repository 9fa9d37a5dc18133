"""GET /v1/health: liveness, open without a token."""

from __future__ import annotations

from fastapi import APIRouter

from ... import __version__
from ..schemas import Health
from ..wire import json_response


def health_routes() -> APIRouter:
    router = APIRouter(tags=["service"])

    @router.get(
        "/health", response_model=Health, summary="Report that the server is up"
    )
    async def health():
        return json_response({"status": "ok", "version": __version__})

    return router
