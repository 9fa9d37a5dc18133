"""Start and stop the demo's server and worker processes.

Each child runs the real `conveyor` command in its own session, so a Ctrl-C
in the terminal reaches only the demo, which then stops the workers before
the server. Their output goes to log files in the run folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
SERVER_START_TIMEOUT_S = 30.0
SERVER_START_ATTEMPTS = 3
HEALTH_POLL_INTERVAL_S = 0.1
# Workers have a 30 s grace period by default, plus time to release messages.
WORKER_STOP_TIMEOUT_S = 40.0
SERVER_STOP_TIMEOUT_S = 15.0
LOG_TAIL_LINES = 20
WORKER_START_TIMEOUT_S = 30.0
WORKER_STARTED_LINE = "Worker started:"


class DemoError(Exception):
    """The demo cannot go on. The message names what failed and where to look."""


@dataclass
class ChildProcess:
    """A `conveyor` subprocess and the file that receives its output."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last lines of the process's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def command_for_display() -> str:
    """Return how a user in the current folder types the `conveyor` command.

    `conveyor` when the shell finds this installation on PATH, otherwise its
    absolute path (such as `/repo/.venv-demo/bin/conveyor` after
    `scripts/demo.sh`, which runs from the repository root whatever folder
    the user started it in).
    """
    command = conveyor_command()
    if len(command) > 1:
        return " ".join(command)
    script = Path(command[0])
    found = shutil.which("conveyor")
    if found is not None and Path(found).resolve() == script.resolve():
        return "conveyor"
    return str(script.absolute())


def conveyor_command() -> list[str]:
    """Return the argv prefix that runs the `conveyor` command of this Python.

    The console script next to the interpreter is preferred, because that
    is what a user runs; `python -m conveyor` is the fallback.
    """
    script = Path(sys.executable).with_name("conveyor")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("conveyor")
    if found is not None and Path(found).parent == Path(sys.executable).parent:
        return [found]
    return [sys.executable, "-m", "conveyor"]


def find_free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def child_environment(url: str) -> dict[str, str]:
    """Return the environment for children: this one, aimed at the demo server."""
    env = dict(os.environ)
    env["CONVEYOR_URL"] = url
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_child(name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> ChildProcess:
    """Start `conveyor` with argv in a new session, output to log_path."""
    command = conveyor_command() + argv
    logger.debug("Starting %s: %s", name, " ".join(command))
    with open(log_path, "ab") as log_file:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return ChildProcess(name, popen, log_path)


def start_server(store_url: str, run_dir: Path) -> tuple[ChildProcess, str]:
    """Start `conveyor server` on a free loopback port and wait for its health.

    Returns the process and its base URL. Another program may take the port
    between the check and the bind, so a server that exits during start-up
    is started again on a new port, up to SERVER_START_ATTEMPTS times in
    all. Raises DemoError with the end of the server log when the last
    attempt exits, or when a server is not healthy within
    SERVER_START_TIMEOUT_S.
    """
    for attempt in range(1, SERVER_START_ATTEMPTS + 1):
        port = find_free_port()
        url = f"http://{HOST}:{port}"
        argv = ["server", "--store", store_url, "--host", HOST, "--port", str(port)]
        server = start_child("server", argv, run_dir / "server.log", child_environment(url))
        try:
            wait_for_health(server, url, SERVER_START_TIMEOUT_S)
        except KeyboardInterrupt:
            stop_child(server, SERVER_STOP_TIMEOUT_S)
            raise
        except DemoError:
            exited_early = not server.is_running()
            stop_child(server, SERVER_STOP_TIMEOUT_S)
            if not exited_early or attempt == SERVER_START_ATTEMPTS:
                raise
            logger.warning(
                "conveyor server on port %d exited during start-up; retrying on another port",
                port,
            )
            continue
        return server, url
    raise AssertionError("unreachable: the last attempt returns or raises")


def wait_for_health(server: ChildProcess, url: str, timeout_s: float) -> None:
    """Poll GET /v1/health until it returns 200, or raise DemoError."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=HEALTH_POLL_INTERVAL_S * 10) as http:
        while time.monotonic() < deadline:
            if not server.is_running():
                raise DemoError(
                    f"conveyor server exited with code {server.popen.returncode} "
                    f"before it was ready; end of {server.log_path}:\n{server.log_tail()}"
                )
            try:
                if http.get(f"{url}/v1/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(HEALTH_POLL_INTERVAL_S)
    raise DemoError(
        f"conveyor server at {url} was not healthy within {timeout_s:.0f} s; "
        f"end of {server.log_path}:\n{server.log_tail()}"
    )


def start_workers(
    count: int, concurrency: int, url: str, app_path: str, queue: str, run_dir: Path
) -> list[ChildProcess]:
    """Start `count` worker processes of app_path that consume queue.

    Each worker prefetches only as many messages as it runs at once, so the
    workers finish the backlog at about the same time.
    """
    env = child_environment(url)
    workers = []
    for number in range(1, count + 1):
        argv = [
            "worker", app_path,
            "--url", url,
            "--queues", queue,
            "--concurrency", str(concurrency),
            "--prefetch", str(concurrency),
        ]
        log_path = run_dir / f"worker-{number}.log"
        workers.append(start_child(f"worker {number}", argv, log_path, env))
    return workers


def wait_for_workers(workers: list[ChildProcess], timeout_s: float) -> bool:
    """Wait until every worker logged that it started; return whether all did.

    Raises DemoError if a worker exits first. A worker that stays silent
    for timeout_s does not stop the demo, because it may still start.
    """
    # NOTE: this matches the worker's start-up log line, so rewording that
    # line makes the demo wait timeout_s before it enqueues.
    deadline = time.monotonic() + timeout_s
    waiting = list(workers)
    while waiting and time.monotonic() < deadline:
        for worker in list(waiting):
            if not worker.is_running():
                raise DemoError(
                    f"{worker.name} exited with code {worker.popen.returncode} during "
                    f"start-up; end of {worker.log_path}:\n{worker.log_tail()}"
                )
            if WORKER_STARTED_LINE in worker.log_path.read_text(errors="replace"):
                waiting.remove(worker)
        time.sleep(HEALTH_POLL_INTERVAL_S)
    return not waiting


def stop_children(children: list[ChildProcess], timeout_s: float) -> None:
    """Send SIGTERM to every child, wait up to timeout_s and kill those still running."""
    for child in children:
        if child.is_running():
            child.popen.send_signal(signal.SIGTERM)
    for child in children:
        _wait_or_kill(child, timeout_s)


def stop_child(child: ChildProcess, timeout_s: float) -> None:
    """Stop one child gracefully with SIGTERM, or kill it after timeout_s."""
    stop_children([child], timeout_s)


def _wait_or_kill(child: ChildProcess, timeout_s: float) -> None:
    try:
        code = child.popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning(
            "%s (pid %d) did not stop within %.0f s of SIGTERM; killing it",
            child.name, child.popen.pid, timeout_s,
        )
        child.popen.kill()
        code = child.popen.wait()
    if code not in (0, -signal.SIGTERM):
        logger.warning(
            "%s (pid %d) exited with code %s; see %s",
            child.name, child.popen.pid, code, child.log_path,
        )


class DemoCluster:
    """The demo's server and workers, which stop together.

    Workers stop first, so they can release unfinished messages and flush
    their acks to a server that is still up.
    """

    def __init__(self) -> None:
        self.server: ChildProcess | None = None
        self.workers: list[ChildProcess] = []

    def check_running(self) -> None:
        """Raise DemoError if the server or every worker has exited."""
        if self.server is not None and not self.server.is_running():
            raise DemoError(
                f"conveyor server exited with code {self.server.popen.returncode}; "
                f"end of {self.server.log_path}:\n{self.server.log_tail()}"
            )
        if self.workers and not any(worker.is_running() for worker in self.workers):
            last = self.workers[-1]
            raise DemoError(
                f"every worker exited (the last with code {last.popen.returncode}); "
                f"end of {last.log_path}:\n{last.log_tail()}"
            )

    def stop(self) -> None:
        """Stop the workers gracefully, then the server.

        A second Ctrl-C during the stop kills every child that is still
        running, because children in their own sessions would outlive the demo.
        """
        children = self.workers + ([self.server] if self.server is not None else [])
        try:
            stop_children(self.workers, WORKER_STOP_TIMEOUT_S)
            if self.server is not None:
                stop_child(self.server, SERVER_STOP_TIMEOUT_S)
        except KeyboardInterrupt:
            for child in children:
                if child.is_running():
                    child.popen.kill()
                    child.popen.wait()
            raise
