"""`conveyor server`: serve the HTTP API on one store with uvicorn."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket

import click

from ..engine import Engine
from ..errors import ConveyorError, StoreUnavailable
from ..settings import DEFAULT_MAX_REQUEST_BYTES
from ..store.postgres_options import redact_store_url
from . import main

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_DATA_DIR = "./data"
STORE_FILE_NAME = "conveyor.db"


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
    help="Store URL: sqlite:///relative/path.db, sqlite:////absolute/path.db or "
    "postgresql://user@host:5432/dbname, which also takes Conveyor's pool_size, "
    "listen, poll_interval, prepare and maintenance parameters.",
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
    # Logs and the ready line show the URL without its password.
    shown_url = redact_store_url(store_url)
    if token is None and not is_loopback(host):
        raise click.UsageError(
            f"listening on {host} without a token is not allowed: anyone who can "
            "reach that address could read and delete messages. Pass --token (or "
            "set CONVEYOR_TOKEN), or listen on 127.0.0.1."
        )
    _check_port_free(host, port)
    try:
        # A server runs the store's background redrive jobs; other clients do not.
        engine = Engine(store_url, redrive_jobs=True, schedules=True)
    except StoreUnavailable as exc:
        # The URL may be right and the database down: not a usage error.
        raise click.ClickException(exc.detail) from exc
    except ConveyorError as exc:
        raise click.BadParameter(exc.detail, param_hint="'--store'") from exc

    logger.info(
        "Starting Conveyor server on %s port %d with store %s (authentication %s)",
        host,
        port,
        shown_url,
        "on" if token else "off",
    )
    # Imported here so that other commands start without loading the web stack.
    from ..server.serve import serve

    try:
        serve(engine, shown_url, host, port, token, max_request_bytes, access_log)
    finally:
        engine.close()
        logger.info("Conveyor server stopped; store %s closed", shown_url)


def _check_port_free(host: str, port: int) -> None:
    """Raise a usage error naming --port when another process listens there.

    uvicorn would otherwise log the bind error and exit 3 with no hint.
    """
    if port == 0:
        return
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return
        raise click.UsageError(
            f"port {port} on {host} is already in use; stop the process that "
            "uses it, or pick another port with --port or CONVEYOR_PORT"
        ) from exc
