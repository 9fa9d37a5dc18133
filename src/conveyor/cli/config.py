"""Defaults for command options from a TOML file.

A table per command contains option names with underscores, for example
`[server] port = 9000` or `[queue.create] max_attempts = 3`. Keys of the
`[defaults]` table apply to every command that has that option, such as
`url` and `token`. Flags and `CONVEYOR_*` environment variables override
the file.
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

    shared = data.pop(SHARED_TABLE, {})
    if not isinstance(shared, dict):
        _reject(path, [SHARED_TABLE], ["a table of option names"])
    default_map = _command_table(path, data, group, [])
    _apply_shared(path, shared, group, default_map)
    return default_map


SHARED_TABLE = "defaults"


def _option_names(command: click.Command) -> dict[str, str]:
    """Map each accepted key (parameter or long flag name) to the parameter name."""
    names: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or not param.name:
            continue
        names[param.name] = param.name
        for flag in param.opts:
            if flag.startswith("--"):
                names[flag[2:].replace("-", "_")] = param.name
    return names


def _command_table(
    path: str, table: dict[str, Any], command: click.Command, where: list[str]
) -> dict[str, Any]:
    """Check a table against a command and key it by parameter names."""
    if isinstance(command, click.Group):
        checked = {}
        for key, value in table.items():
            sub = command.commands.get(key)
            if sub is None or not isinstance(value, dict):
                tables = sorted(command.commands) + ([] if where else [SHARED_TABLE])
                _reject(path, where + [key], tables)
            checked[key] = _command_table(path, value, sub, where + [key])
        return checked

    names = _option_names(command)
    for key in table:
        if key not in names:
            _reject(path, where + [key], sorted(names))
    return {names[key]: value for key, value in table.items()}


def _apply_shared(
    path: str, shared: dict[str, Any], group: click.Group, default_map: dict[str, Any]
) -> None:
    """Copy [defaults] keys into every command that has the option."""
    used: set[str] = set()
    for command_path, command in _leaf_commands(group, []):
        names = _option_names(command)
        table = default_map
        for part in command_path:
            table = table.setdefault(part, {})
        for key, value in shared.items():
            if key in names:
                table.setdefault(names[key], value)
                used.add(key)
    known = sorted({name for _, command in _leaf_commands(group, []) for name in _option_names(command)})
    for key in shared:
        if key not in used:
            _reject(path, [SHARED_TABLE, key], known)


def _leaf_commands(
    command: click.Command, where: list[str]
) -> list[tuple[list[str], click.Command]]:
    if not isinstance(command, click.Group):
        return [(where, command)]
    leaves = []
    for name, sub in command.commands.items():
        leaves += _leaf_commands(sub, where + [name])
    return leaves


def _reject(path: str, keys: list[str], known: list[str]) -> None:
    raise click.BadParameter(
        f"config file {path!r} has unknown key {'.'.join(keys)!r}; "
        f"known keys there are: {', '.join(known)}",
        param_hint="'--config'",
    )
