"""Run the HTTP API with uvicorn in this process until a stop signal."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from types import FrameType

import click
import uvicorn

from ..engine import Engine
from .app import create_app

logger = logging.getLogger(__name__)

# Requests still running after a stop signal get this long to finish. Long
# polls end within about a second once the server is stopping.
GRACEFUL_SHUTDOWN_S = 10
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(
    engine: Engine,
    store_url: str,
    host: str,
    port: int,
    token: str | None,
    max_request_bytes: int,
    access_log: bool,
) -> None:
    app = create_app(engine, token=token, max_request_bytes=max_request_bytes)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        lifespan="off",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = _ConveyorServer(config, app.state.stopping, store_url)
    # uvicorn (0.55, Server.capture_signals) re-raises the stop signal after
    # its graceful shutdown, so these handlers absorb it and the caller can
    # close the engine and exit 0.
    previous = {sig: signal.signal(sig, _ignore_signal) for sig in HANDLED_SIGNALS}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _ConveyorServer(uvicorn.Server):
    """uvicorn's server, plus a ready line and a stop flag for long polls."""

    def __init__(
        self, config: uvicorn.Config, stopping: threading.Event, store_url: str
    ) -> None:
        super().__init__(config)
        self._stopping = stopping
        self._store_url = store_url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            click.echo(
                f"Conveyor listening on {self._base_url()} (store {self._store_url})"
            )

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self._stopping.is_set():
            logger.info("Received %s; stopping the server", signal.Signals(sig).name)
        self._stopping.set()
        super().handle_exit(sig, frame)

    def _base_url(self) -> str:
        host, port = self.config.host, self.config.port
        for listener in self.servers:
            for sock in listener.sockets:
                port = sock.getsockname()[1]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"


def _ignore_signal(sig: int, frame: FrameType | None) -> None:
    """Absorb a stop signal that arrives after the server has shut down."""
