"""Helpers that run `conveyor worker` subprocesses on a task module in tests/.

The task modules (process_tasks.py, batch_tasks.py, hook_tasks.py) write
what their tasks and hooks did to the file named by TASKS_RECORD, one line
per event, so a test can read what happened in the worker and its child
processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from http_fixtures import conveyor_command

TESTS_FOLDER = Path(__file__).resolve().parent
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
DONE_TIMEOUT_S = 60.0


@dataclass
class WorkerProcess:
    """A running `conveyor worker` and its log file."""

    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker did not exit within {timeout_s} s:\n{self.log()}")

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()


def worker_env(record_path: Path) -> dict[str, str]:
    """Return an environment without CONVEYOR_ settings that imports tests/ modules."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_FOLDER), env.get("PYTHONPATH", "")])
    env["TASKS_RECORD"] = str(record_path)
    return env


def launch_worker(
    folder: Path, app_path: str, url: str, *args: str, name: str = "worker"
) -> WorkerProcess:
    """Start `conveyor worker APP --url URL ARGS` with its log in folder/NAME.log."""
    log_path = folder / f"{name}.log"
    argv = [*conveyor_command(), "worker", app_path, "--url", url, "--poll-wait-s", "0.5", *args]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT,
            env=worker_env(folder / "record.txt"), cwd=folder,
        )
    return WorkerProcess(process, log_path)


def start_worker(
    folder: Path, app_path: str, url: str, *args: str, name: str = "worker"
) -> WorkerProcess:
    """Launch a worker and wait until it logs that it serves its queues."""
    worker = launch_worker(folder, app_path, url, *args, name=name)
    wait_until(lambda: "Worker started" in worker.log() or not worker.alive(), START_TIMEOUT_S)
    assert worker.alive(), f"worker exited at start:\n{worker.log()}"
    return worker


def stop_worker(worker: WorkerProcess) -> int:
    """Send SIGTERM and return the exit code."""
    if worker.alive():
        worker.send(signal.SIGTERM)
    return worker.wait()


def wait_until(condition: Callable[[], Any], timeout_s: float = DONE_TIMEOUT_S) -> None:
    """Poll condition every 20 ms until it is true; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.02)


def read_records(folder: Path) -> list[dict[str, Any]]:
    """Return the JSON records the task module wrote, in order."""
    path = folder / "record.txt"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]
