"""TaskHandle.result and WorkflowHandle.result wait through a server restart.

A real `conveyor server` process is killed with SIGKILL while a result is
awaited, and started again on the same port and store file.
"""

from __future__ import annotations

import logging
import signal
import threading
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from http_fixtures import ServerProcess, _wait_healthy, launch_server, start_server

from conveyor import Conveyor, Worker, chain
from conveyor.errors import TransportError

RESULT_TIMEOUT_S = 20.0
EVENT_TIMEOUT_S = 10.0


class FailedReadSeen(logging.Handler):
    """Sets `seen` when a result poller logs a failed read."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "conveyor.tasks.polling" and "failed" in record.getMessage():
            self.seen.set()


@pytest.fixture
def failed_read() -> Iterator[threading.Event]:
    handler = FailedReadSeen()
    poll_logger = logging.getLogger("conveyor.tasks.polling")
    poll_logger.addHandler(handler)
    poll_logger.setLevel(logging.DEBUG)
    yield handler.seen
    poll_logger.removeHandler(handler)
    poll_logger.setLevel(logging.NOTSET)



def start_again(server: ServerProcess) -> ServerProcess:
    """Start a stopped server again on its port and store file."""
    port = server.url.rsplit(":", 1)[1]
    process = launch_server(
        server.stdout_path.parent, "--store", server.store_url, "--port", port
    )
    again = ServerProcess(
        process, server.url, server.store_url, server.stdout_path, server.stderr_path
    )
    assert _wait_healthy(again), again.output()
    return again


def wait_in_thread(wait: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = wait()
        except Exception as exc:  # noqa: BLE001 - the test checks it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def run_worker_until(app: Conveyor, thread: threading.Thread) -> None:
    worker = Worker(app, poll_wait_s=0.2)
    worker_thread = threading.Thread(target=worker.run, daemon=True)
    worker_thread.start()
    try:
        thread.join(RESULT_TIMEOUT_S)
    finally:
        worker.stop()
        worker_thread.join(30)


def define_add(app: Conveyor) -> Any:
    queue = "p-" + uuid.uuid4().hex[:8]
    app.client.create_queue(queue)

    @app.task(queue=queue, name=f"{queue}.add")
    def add(value: int, extra: int = 0) -> int:
        return value + extra

    return add


@pytest.mark.parametrize("kind", ["task", "workflow"])
def test_result_survives_server_restart(tmp_path, failed_read, kind):
    server = start_server(tmp_path / "server")
    app = Conveyor(server.url)
    try:
        add = define_add(app)
        if kind == "task":
            handle = add.enqueue(2, extra=3)
        else:
            handle = chain(add.step(2, extra=3)).start()
        thread, outcome = wait_in_thread(lambda: handle.result(timeout_s=RESULT_TIMEOUT_S))
        server.stop(signal.SIGKILL)
        assert failed_read.wait(EVENT_TIMEOUT_S)
        server = start_again(server)
        run_worker_until(app, thread)
        assert not thread.is_alive()
        assert outcome.get("error") is None
        assert outcome["value"] == 5
    finally:
        app.close()
        server.stop()


@pytest.mark.parametrize("kind", ["task", "workflow"])
def test_result_raises_last_error_at_deadline(tmp_path, kind):
    server = start_server(tmp_path / "server")
    app = Conveyor(server.url)
    try:
        add = define_add(app)
        handle = add.enqueue(1) if kind == "task" else chain(add.step(1)).start()
        server.stop(signal.SIGKILL)
        with pytest.raises(TransportError):
            handle.result(timeout_s=1.0)
    finally:
        app.close()
        server.stop()
