"""Start worker and server subprocesses in their own process groups and stop them."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

log = logging.getLogger("bench")

BENCH_DIR = Path(__file__).resolve().parent


class ProcessGroup:
    """One subprocess started in a new session, so its children share its group id.

    ``stop`` signals the whole group, which also reaches the pool processes that
    worker CLIs fork, except a child that moves to a group of its own (RQ's work
    horse does).
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        child_env = dict(os.environ)
        child_env.update(env)
        # Worker CLIs import worker_apps.* and probe from the bench directory.
        child_env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(BENCH_DIR), child_env.get("PYTHONPATH", "")])
        )
        child_env["PYTHONUNBUFFERED"] = "1"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(log_path, "ab")
        self._log_file.write(f"\n$ {' '.join(argv)}\n".encode())
        self._log_file.flush()
        self.process = subprocess.Popen(
            argv,
            cwd=BENCH_DIR,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.debug("started %s pid=%d: %s", name, self.process.pid, " ".join(argv))

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_running(self) -> None:
        """Raise RuntimeError with the log tail if the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(
                f"{self.name} (pid {self.pid}) exited with code {code}; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(log not readable: {error})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Send SIGTERM to the group, then SIGKILL to whatever is left after the grace period."""
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None and not self._group_alive():
                break
            time.sleep(0.05)
        else:
            log.warning("%s (pid %d) did not stop within %.0f s; sending SIGKILL",
                        self.name, self.pid, grace_seconds)
        self._signal_group(signal.SIGKILL)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) survived SIGKILL", self.name, self.pid)
        self._log_file.close()

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        return True
