"""The `conveyor` command line.

Each command group lives in its own module of this package and registers
itself on `main` when imported below.
"""

from __future__ import annotations

import importlib
import logging

import click

from .. import __version__
from ..log_format import configure_logging

COMMAND_MODULES = (
    "server", "migrate", "queues", "messages", "message", "dlq", "schedules",
    "schedule_changes",
    "workflows", "worker",
    "demo",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="conveyor")
@click.option(
    "--log-level",
    envvar="CONVEYOR_LOG_LEVEL",
    show_envvar=True,
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="Lowest level of log records printed to stderr.",
)
@click.option(
    "--config",
    "config_path",
    envvar="CONVEYOR_CONFIG",
    show_envvar=True,
    default=None,
    type=click.Path(dir_okay=False),
    help="TOML file with option defaults, one table per command "
    "(e.g. [server] port = 9000); flags and environment variables override it. "
    "Default: none.",
)
@click.pass_context
def main(ctx: click.Context, log_level: str, config_path: str | None) -> None:
    """Conveyor: a persistent queue service and a Python task framework."""
    if config_path is not None:
        from .config import load_default_map

        ctx.default_map = load_default_map(config_path, main)
    configure_logging(log_level.upper(), "%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO, which would drown the worker's and
    # the CLI's own records; its warnings and errors still show.
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise


_register_commands()
