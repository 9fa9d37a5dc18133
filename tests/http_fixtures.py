"""Helpers and fixtures that run a real `conveyor server` subprocess.

Test modules import the fixtures they use from here:
`from http_fixtures import http_server, start_server`.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
# The token of the `auth_server` fixture, new for each test run.
TOKEN = "tok-" + uuid.uuid4().hex


def conveyor_command() -> list[str]:
    """Return the argv prefix that runs the `conveyor` console script."""
    script = Path(sys.executable).with_name("conveyor")
    if script.exists():
        return [str(script)]
    found = shutil.which("conveyor")
    if found:
        return [found]
    return [sys.executable, "-c", "from conveyor.cli import main; main()"]


def free_port() -> int:
    """Return a random TCP port in 20000-40000 on 127.0.0.1 that was free a moment ago."""
    for _attempt in range(100):
        port = random.randint(20000, 40000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("found no free port in 20000-40000 on 127.0.0.1")


@dataclass
class ServerProcess:
    """A running `conveyor server` and where its output goes."""

    process: subprocess.Popen
    url: str
    store_url: str
    stdout_path: Path
    stderr_path: Path

    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send a stop signal and return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"server did not stop within {STOP_TIMEOUT_S}s:\n{self.output()}"
            ) from exc


def launch_server(
    folder: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start `conveyor server ARGS` with output in folder/server.{out,err}."""
    # Settings of the shell that runs pytest must not reach the server.
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    full_env.update(env or {})
    stdout = open(folder / "server.out", "w")
    stderr = open(folder / "server.err", "w")
    with stdout, stderr:
        return subprocess.Popen(
            [*conveyor_command(), "server", *args],
            stdout=stdout,
            stderr=stderr,
            env=full_env,
            cwd=folder,
        )


def start_server(
    folder: Path,
    *args: str,
    store_url: str | None = None,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    """Start a server on a free port and wait until /v1/health returns 200."""
    folder.mkdir(parents=True, exist_ok=True)
    store_url = store_url or f"sqlite:///{folder}/x.db"
    for _attempt in range(3):
        port = free_port()
        process = launch_server(
            folder, "--store", store_url, "--port", str(port), *args, env=env
        )
        server = ServerProcess(
            process,
            f"http://127.0.0.1:{port}",
            store_url,
            folder / "server.out",
            folder / "server.err",
        )
        if _wait_healthy(server):
            return server
        server.stop(signal.SIGKILL)
        if "already in use" not in server.output():
            break
    raise AssertionError(f"server did not become healthy:\n{server.output()}")


def _wait_healthy(server: ServerProcess) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            if httpx.get(server.url + "/v1/health", timeout=1.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server without a token, shared by a module's tests."""
    server = start_server(tmp_path_factory.mktemp("server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that needs TOKEN, given as CONVEYOR_TOKEN (the flag's env twin)."""
    server = start_server(
        tmp_path_factory.mktemp("auth"), env={"CONVEYOR_TOKEN": TOKEN}
    )
    yield server
    server.stop()
