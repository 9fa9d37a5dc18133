"""Defaults for command options from a TOML file.

A table per command contains option names with underscores, for example
`[server] port = 9000` or `[queue.create] max_attempts = 3`. Flags and
`CONVEYOR_*` environment variables override the file.
"""

from __future__ import annotations

import tomllib
from typing import Any

import click


def load_default_map(path: str, group: click.Group) -> dict[str, Any]:
    """Read the file and return click's default_map, rejecting unknown keys."""
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise click.BadParameter(
            f"could not read config file {path!r}: {exc.strerror}", param_hint="'--config'"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(
            f"config file {path!r} is not valid TOML: {exc}", param_hint="'--config'"
        ) from exc

    _check_table(path, data, group, [])
    return data


def _check_table(path: str, table: dict[str, Any], command: click.Command, where: list[str]) -> None:
    if isinstance(command, click.Group):
        for key, value in table.items():
            sub = command.commands.get(key)
            if sub is None or not isinstance(value, dict):
                _reject(path, where + [key], sorted(command.commands))
            _check_table(path, value, sub, where + [key])
        return

    names = sorted(p.name for p in command.params if isinstance(p, click.Option) and p.name)
    for key in table:
        if key not in names:
            _reject(path, where + [key], names)


def _reject(path: str, keys: list[str], known: list[str]) -> None:
    raise click.BadParameter(
        f"config file {path!r} has unknown key {'.'.join(keys)!r}; "
        f"known keys there are: {', '.join(known)}",
        param_hint="'--config'",
    )
