"""`conveyor server`: serve the HTTP API on one store with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import socket
import threading
from types import FrameType

import click
import uvicorn

from ..engine import Engine
from ..errors import ConveyorError
from ..server import create_app
from ..server.limits import DEFAULT_MAX_REQUEST_BYTES
from . import main

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_DATA_DIR = "./data"
STORE_FILE_NAME = "conveyor.db"
# Requests still running after a stop signal get this long to finish. Long
# polls end within about a second once the server is stopping.
GRACEFUL_SHUTDOWN_S = 10
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def default_store_url() -> str:
    """Return `sqlite:///` plus conveyor.db in $CONVEYOR_DATA_DIR (default ./data)."""
    data_dir = os.environ.get("CONVEYOR_DATA_DIR") or DEFAULT_DATA_DIR
    path = os.path.normpath(os.path.join(data_dir, STORE_FILE_NAME))
    return "sqlite:///" + path


def is_loopback(host: str) -> bool:
    """Tell whether a listen address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@main.command()
@click.option(
    "--store",
    envvar="CONVEYOR_STORE",
    default=None,
    show_default="sqlite:///$CONVEYOR_DATA_DIR/conveyor.db, with CONVEYOR_DATA_DIR "
    "defaulting to ./data",
    show_envvar=True,
    help="Store URL: sqlite:///relative/path.db or sqlite:////absolute/path.db.",
)
@click.option(
    "--host",
    envvar="CONVEYOR_HOST",
    default=DEFAULT_HOST,
    show_default=True,
    show_envvar=True,
    help="IP address or host name to listen on; a non-loopback address needs --token.",
)
@click.option(
    "--port",
    envvar="CONVEYOR_PORT",
    default=DEFAULT_PORT,
    type=click.IntRange(0, 65535),
    show_default=True,
    show_envvar=True,
    help="TCP port to listen on; 0 picks a free port and prints it.",
)
@click.option(
    "--token",
    envvar="CONVEYOR_TOKEN",
    default=None,
    show_default="none: no authentication, loopback addresses only",
    show_envvar=True,
    help="Bearer token that every request except GET /v1/health must send.",
)
@click.option(
    "--max-request-bytes",
    envvar="CONVEYOR_MAX_REQUEST_BYTES",
    default=DEFAULT_MAX_REQUEST_BYTES,
    type=click.IntRange(1024, None),
    show_default=True,
    show_envvar=True,
    help="Maximum request body size in bytes (default 32 MiB); larger requests get "
    "413 before being read.",
)
@click.option(
    "--access-log/--no-access-log",
    envvar="CONVEYOR_ACCESS_LOG",
    default=False,
    show_default=True,
    show_envvar=True,
    help="Log one line per HTTP request; it costs throughput.",
)
def server(
    store: str | None,
    host: str,
    port: int,
    token: str | None,
    max_request_bytes: int,
    access_log: bool,
) -> None:
    """Serve the queue API over HTTP until SIGINT or SIGTERM.

    On a stop signal the server stops accepting connections, lets running
    requests finish, then closes the store after its pending writes commit.
    """
    token = token or None
    store_url = store or default_store_url()
    if token is None and not is_loopback(host):
        raise click.UsageError(
            f"listening on {host} without a token is not allowed: anyone who can "
            "reach that address could read and delete messages. Pass --token (or "
            "set CONVEYOR_TOKEN), or listen on 127.0.0.1."
        )
    try:
        engine = Engine(store_url)
    except ConveyorError as exc:
        raise click.BadParameter(exc.detail, param_hint="'--store'") from exc

    logger.info(
        "Starting Conveyor server on %s port %d with store %s (authentication %s)",
        host,
        port,
        store_url,
        "on" if token else "off",
    )
    try:
        _serve(engine, store_url, host, port, token, max_request_bytes, access_log)
    finally:
        engine.close()
        logger.info("Conveyor server stopped; store %s closed", store_url)


def _serve(
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
