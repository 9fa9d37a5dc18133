"""The FastAPI application that serves an engine over HTTP under /v1."""

from __future__ import annotations

import threading

from fastapi import FastAPI

from .. import __version__
from ..engine import Engine
from .auth import BearerAuthMiddleware
from .limits import DEFAULT_MAX_REQUEST_BYTES, RequestSizeLimitMiddleware
from .openapi import install_openapi
from .problems import install_problem_handlers
from .routes.dlq import dlq_routes
from .routes.health import health_routes
from .routes.leases import lease_routes
from .routes.messages import message_routes
from .routes.queues import queue_routes
from .routes.redrive_jobs import redrive_job_routes
from .routes.workflows import workflow_routes
from .routes.runs import run_routes
from .routes.schedules import schedule_routes

API_PREFIX = "/v1"

DESCRIPTION = """\
Persistent queues over HTTP: batches, long polls, leases with receipts,
acks and nacks, delays, priorities, FIFO groups, dedup, retention and
dead-letter queues with redrive; for task runs, completion records,
progress, cancellation and logs per attempt; schedules that post
messages on cron ticks in a time zone or at fixed intervals.

Every error is an RFC 9457 problem document (`application/problem+json`).
With a token configured, every path but `/v1/health` needs the header
`Authorization: Bearer <token>`. Durations are in seconds, times are Unix
timestamps in seconds and sizes are in bytes.
"""


def create_app(
    engine: Engine,
    token: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> FastAPI:
    """Build the API for an engine. The caller owns and closes the engine.

    `app.state.stopping` is a threading.Event: set it when the server begins
    to shut down, so open long polls return within about a second.
    """
    # The Swagger and ReDoc pages load their scripts from a CDN, which a
    # self-hosted server should not depend on, so only /openapi.json is served.
    app = FastAPI(
        title="Conveyor",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.stopping = threading.Event()

    app.include_router(health_routes(), prefix=API_PREFIX)
    app.include_router(queue_routes(engine), prefix=API_PREFIX)
    app.include_router(message_routes(engine), prefix=API_PREFIX)
    app.include_router(lease_routes(engine, app.state.stopping), prefix=API_PREFIX)
    app.include_router(dlq_routes(engine), prefix=API_PREFIX)
    app.include_router(redrive_job_routes(engine), prefix=API_PREFIX)
    app.include_router(run_routes(engine), prefix=API_PREFIX)
    app.include_router(schedule_routes(engine), prefix=API_PREFIX)
    app.include_router(workflow_routes(engine), prefix=API_PREFIX)

    install_problem_handlers(app)
    install_openapi(app)
    # The last middleware added runs first: authentication, then the size limit.
    app.add_middleware(RequestSizeLimitMiddleware, max_request_bytes=max_request_bytes)
    if token:
        app.add_middleware(BearerAuthMiddleware, token=token)
    return app
