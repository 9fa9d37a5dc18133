"""`conveyor --config FILE`: option defaults from TOML, under flags and env."""

from __future__ import annotations

import json
import os
import subprocess

from http_fixtures import conveyor_command


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    clean.update(env or {})
    return subprocess.run(
        [*conveyor_command(), *args], capture_output=True, text=True, env=clean, timeout=60
    )


def create(tmp_path, config: str, name: str, *flags: str, env=None) -> subprocess.CompletedProcess:
    path = tmp_path / "conveyor.toml"
    path.write_text(config)
    store = f"sqlite:///{tmp_path}/c.db"
    return run("--config", str(path), "queue", "create", name, "--url", store, "--json", *flags, env=env)


def test_config_sets_default(tmp_path):
    result = create(tmp_path, "[queue.create]\nmax_attempts = 7\n", "a")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["settings"]["max_attempts"] == 7


def test_env_overrides_config(tmp_path):
    env = {"CONVEYOR_CREATE_MAX_ATTEMPTS": "9"}
    result = create(tmp_path, "[queue.create]\nmax_attempts = 7\n", "b", env=env)
    assert json.loads(result.stdout)["settings"]["max_attempts"] == 9


def test_flag_overrides_config(tmp_path):
    result = create(tmp_path, "[queue.create]\nmax_attempts = 7\n", "c", "--max-attempts", "2")
    assert json.loads(result.stdout)["settings"]["max_attempts"] == 2


def test_config_unknown_key(tmp_path):
    result = create(tmp_path, "[queue.create]\nmax_atempts = 7\n", "d")
    assert result.returncode == 2
    assert "unknown key 'queue.create.max_atempts'" in result.stderr
    assert not (tmp_path / "c.db").exists()


def test_config_invalid_toml(tmp_path):
    result = create(tmp_path, "[queue.create\n", "e")
    assert result.returncode == 2
    assert "is not valid TOML" in result.stderr


def test_config_missing_file(tmp_path):
    result = run("--config", str(tmp_path / "absent.toml"), "queue", "list")
    assert result.returncode == 2
    assert "could not read config file" in result.stderr


def test_config_accepts_flag_name(tmp_path):
    path = tmp_path / "conveyor.toml"
    path.write_text(f'[queue.list]\njson = true\nurl = "sqlite:///{tmp_path}/c.db"\n')
    result = run("--config", str(path), "queue", "list")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_config_shared_defaults(tmp_path):
    path = tmp_path / "conveyor.toml"
    path.write_text(f'[defaults]\nurl = "sqlite:///{tmp_path}/c.db"\njson = true\n')
    created = run("--config", str(path), "queue", "create", "shared")
    listed = run("--config", str(path), "queue", "list")
    assert created.returncode == 0, created.stderr
    assert [q["name"] for q in json.loads(listed.stdout)] == ["shared", "shared.dlq"]


def test_config_command_table_beats_defaults(tmp_path):
    path = tmp_path / "conveyor.toml"
    path.write_text(
        f'[defaults]\nurl = "sqlite:///{tmp_path}/unused.db"\n'
        f'[queue.create]\nurl = "sqlite:///{tmp_path}/c.db"\njson = true\n'
    )
    result = run("--config", str(path), "queue", "create", "mine")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "c.db").exists()
    assert not (tmp_path / "unused.db").exists()


def test_config_shared_unknown_key(tmp_path):
    path = tmp_path / "conveyor.toml"
    path.write_text("[defaults]\nurll = 'x'\n")
    result = run("--config", str(path), "queue", "list")
    assert result.returncode == 2
    assert "unknown key 'defaults.urll'" in result.stderr
    assert "known keys there are: " in result.stderr
    assert " url," in result.stderr
