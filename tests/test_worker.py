"""`conveyor worker` as a real subprocess: running tasks, leases, signals,
crashes and server restarts.

Each test writes a tasks module to its tmp_path, runs the worker on it, and
reads what the tasks did from an append-only record file (one line per task
start and end). The test process enqueues through the same module, loaded
under a unique name. The `url` fixture runs a test on an in-process SQLite
store shared with the worker, or on a real `conveyor server` subprocess.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import logging
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from http_fixtures import ServerProcess, conveyor_command, launch_server, start_server

from conveyor import Conveyor, NewMessage, Worker
from conveyor.engine import Engine
from conveyor.worker import jobs as outcomes
from conveyor.worker.jobs import Job
from conveyor.worker.reporter import Reporter

pytestmark = pytest.mark.acceptance

TASKS_SOURCE = '''
import asyncio
import os
import time

from conveyor import Conveyor, NewMessage, Worker
from conveyor.engine import Engine
from conveyor.worker import jobs as outcomes
from conveyor.worker.jobs import Job
from conveyor.worker.reporter import Reporter

app = Conveyor()


def record(line):
    with open(os.environ["TASKS_RECORD"], "a") as file:
        file.write(line + "\\n")


@app.task(name="add")
def add(a, b):
    return a + b


@app.task(name="async_add")
async def async_add(a, b):
    await asyncio.sleep(0.01)
    return a + b


@app.task(name="sleep_and_record")
def sleep_and_record(index, seconds):
    record(f"start {index}")
    time.sleep(seconds)
    record(f"end {index}")
    return index
'''

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
DONE_TIMEOUT_S = 60.0


@dataclass
class WorkerProcess:
    """A running `conveyor worker` and its log file."""

    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()

    def send(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker did not exit within {timeout_s} s:\n{self.log()}")


@dataclass
class Project:
    """A tmp_path with the tasks module, the record file and the queue URL."""

    folder: Path
    url: str
    tasks: ModuleType
    server: ServerProcess | None
    workers: list[WorkerProcess]

    @property
    def app(self) -> Conveyor:
        return self.tasks.app

    def start_worker(self, *args: str) -> WorkerProcess:
        """Start `conveyor worker` on the tasks module and wait until it serves."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env["PYTHONPATH"] = os.pathsep.join([str(self.folder), env.get("PYTHONPATH", "")])
        env["TASKS_RECORD"] = str(self.folder / "record.txt")
        log_path = self.folder / f"worker-{len(self.workers)}.log"
        argv = [
            *conveyor_command(), "worker", "worker_tasks:app",
            "--url", self.url, "--poll-wait-s", "0.5", *args,
        ]
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder
            )
        worker = WorkerProcess(process, log_path)
        self.workers.append(worker)
        wait_until(lambda: "Worker started" in worker.log() or process.poll() is not None,
                   START_TIMEOUT_S)
        assert process.poll() is None, f"worker exited at start:\n{worker.log()}"
        return worker

    def records(self) -> list[str]:
        path = self.folder / "record.txt"
        return path.read_text().splitlines() if path.exists() else []

    def count(self, kind: str) -> collections.Counter:
        """Count record lines of one kind ('start' or 'end') per task index."""
        return collections.Counter(
            int(line.split()[1]) for line in self.records() if line.startswith(kind + " ")
        )


def wait_until(condition: Callable[[], Any], timeout_s: float = DONE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def load_tasks(folder: Path) -> ModuleType:
    """Import worker_tasks.py from folder under a name unique to this test."""
    path = folder / "worker_tasks.py"
    path.write_text(TASKS_SOURCE)
    spec = importlib.util.spec_from_file_location(f"worker_tasks_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_project(tmp_path: Path, transport: str) -> Project:
    server = None
    if transport == "sqlite":
        url = f"sqlite:///{tmp_path}/worker.db"
    else:
        server = start_server(tmp_path / "server")
        url = server.url
    tasks = load_tasks(tmp_path)
    tasks.app.configure(url=url)
    return Project(tmp_path, url, tasks, server, [])


def close_project(project: Project) -> None:
    for worker in project.workers:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
    project.app.close()
    if project.server is not None:
        project.server.stop()


@pytest.fixture(params=["sqlite", "http"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """A project on each transport."""
    made = make_project(tmp_path, request.param)
    yield made
    close_project(made)


@pytest.fixture
def sqlite_project(tmp_path: Path) -> Iterator[Project]:
    """A project on an in-process SQLite store, for tests of the worker alone."""
    made = make_project(tmp_path, "sqlite")
    yield made
    close_project(made)


def queue_is_empty(app: Conveyor, queue: str = "default") -> bool:
    stats = app.client.stats(queue)
    return stats.ready + stats.delayed + stats.reserved == 0


# Running tasks ------------------------------------------------------------


def test_worker_runs_sync_and_async_tasks(project: Project) -> None:
    sync_handles = [project.tasks.add.enqueue(i, 1) for i in range(20)]
    async_handles = [project.tasks.async_add.enqueue(i, 2) for i in range(20)]
    worker = project.start_worker("--concurrency", "4")

    sync_results = [h.result(timeout_s=DONE_TIMEOUT_S) for h in sync_handles]
    async_results = [h.result(timeout_s=DONE_TIMEOUT_S) for h in async_handles]
    worker.send(signal.SIGTERM)
    exit_code = worker.wait()

    assert sync_results == [i + 1 for i in range(20)]
    assert async_results == [i + 2 for i in range(20)]
    assert exit_code == 0, worker.log()
    assert worker.log().count("succeeded in") == 40
    assert "Worker stopped" in worker.log()


def test_worker_extends_lease_of_long_task(project: Project) -> None:
    project.app.client.create_queue("default", {"visibility_timeout_s": 1.5})
    handle = project.tasks.sleep_and_record.enqueue(0, 4.5)
    worker = project.start_worker()

    value = handle.result(timeout_s=DONE_TIMEOUT_S)
    time.sleep(1.5)

    assert value == 0
    assert project.records() == ["start 0", "end 0"]
    assert "Lost the lease" not in worker.log()


def test_worker_rejects_bad_app_path(sqlite_project: Project) -> None:
    project = sqlite_project
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = str(project.folder)
    cases = {
        "missing_module:app": "module 'missing_module' not found",
        "worker_tasks:nothing": "has no attribute 'nothing'",
        "worker_tasks:record": "not a conveyor.Conveyor app",
    }
    for app_path, expected in cases.items():
        completed = subprocess.run(
            [*conveyor_command(), "worker", app_path, "--url", project.url],
            capture_output=True, text=True, env=env, cwd=project.folder, timeout=60, check=False,
        )

        assert completed.returncode == 2, completed.stderr
        assert expected in completed.stderr


# Stopping -----------------------------------------------------------------


def test_sigterm_finishes_running_tasks(project: Project) -> None:
    handles = [project.tasks.sleep_and_record.enqueue(i, 2.0) for i in range(6)]
    worker = project.start_worker("--concurrency", "2", "--prefetch", "3")
    wait_until(lambda: len(project.count("start")) == 2)

    worker.send(signal.SIGTERM)
    exit_code = worker.wait()
    started = set(project.count("start"))
    ready = project.app.client.peek("default", limit=100, state="ready")

    assert exit_code == 0, worker.log()
    assert set(project.count("end")) == started
    assert all(handles[i].status() == "succeeded" for i in started)
    # Two tasks start at once; a third could start only if the signal came
    # after the first two ended, 2 s later.
    assert len(ready) == 6 - len(started)
    assert all(m.receive_count == 0 for m in ready)
    assert project.app.client.stats("default").reserved == 0
    # Each waiting message is released once: a poll in flight at the signal
    # must not lease a released message again, so the count cannot exceed
    # the messages now ready.
    released = re.search(r"Worker stopped: (\d+) messages? released", worker.log())
    assert released is not None
    assert 1 <= int(released.group(1)) <= len(ready)


def test_sigterm_releases_tasks_after_grace(sqlite_project: Project) -> None:
    project = sqlite_project
    for i in range(3):
        project.tasks.sleep_and_record.enqueue(i, 30.0)
    worker = project.start_worker(
        "--concurrency", "2", "--prefetch", "0", "--grace-period-s", "0.5"
    )
    wait_until(lambda: len(project.count("start")) == 2)

    worker.send(signal.SIGTERM)
    exit_code = worker.wait()
    ready = project.app.client.peek("default", limit=100, state="ready")

    assert exit_code == 0, worker.log()
    assert project.count("end") == {}
    assert len(ready) == 3
    assert [m.receive_count for m in ready] == [0, 0, 0]
    assert "Released 2 tasks that did not finish" in worker.log()


def test_second_sigint_forces_stop(sqlite_project: Project) -> None:
    project = sqlite_project
    for i in range(2):
        project.tasks.sleep_and_record.enqueue(i, 30.0)
    worker = project.start_worker("--concurrency", "2", "--grace-period-s", "600")
    wait_until(lambda: len(project.count("start")) == 2)

    worker.send(signal.SIGINT)
    wait_until(lambda: "Worker stopping" in worker.log())
    worker.send(signal.SIGINT)
    exit_code = worker.wait()
    ready = project.app.client.peek("default", limit=100, state="ready")

    assert exit_code == 0, worker.log()
    assert "forcing a fast stop" in worker.log()
    assert [m.receive_count for m in ready] == [0, 0]


# Crashes and restarts -----------------------------------------------------


def test_sigkill_then_new_worker_completes_all(project: Project) -> None:
    project.app.client.create_queue("default", {"visibility_timeout_s": 2.0})
    count = 200
    project.tasks.sleep_and_record.enqueue_many([((i, 0.02), {}) for i in range(count)])
    first = project.start_worker("--concurrency", "4", "--prefetch", "8")
    wait_until(lambda: len(project.count("end")) >= 60)

    first.send(signal.SIGKILL)
    first.wait()
    in_flight = {
        m.body["args"][0]
        for m in project.app.client.peek("default", limit=1000, state="reserved")
    }
    second = project.start_worker("--concurrency", "4")
    wait_until(lambda: queue_is_empty(project.app))
    starts = project.count("start")
    repeated = {i for i, n in starts.items() if n > 1}
    second.send(signal.SIGTERM)

    assert in_flight, "the killed worker held no messages"
    assert set(project.count("end")) == set(range(count))
    assert repeated <= in_flight
    assert project.app.client.stats("default").dead == 0
    assert second.wait() == 0, second.log()


def test_worker_survives_server_restart(tmp_path: Path) -> None:
    project = make_project(tmp_path, "http")
    try:
        _check_server_restart(project)
    finally:
        close_project(project)


def _check_server_restart(project: Project) -> None:
    server = project.server
    assert server is not None
    handles = [project.tasks.sleep_and_record.enqueue(i, 1.0) for i in range(3)]
    worker = project.start_worker("--concurrency", "4")
    wait_until(lambda: len(project.count("start")) == 3)

    assert server.stop() == 0
    wait_until(lambda: len(project.count("end")) == 3)
    time.sleep(0.5)
    port = server.url.rsplit(":", 1)[1]
    project.server = _restart_server(project.folder / "server", server.store_url, port)
    results = [h.result(timeout_s=DONE_TIMEOUT_S) for h in handles]
    after_restart = project.tasks.add.enqueue(20, 22)

    assert after_restart.result(timeout_s=DONE_TIMEOUT_S) == 42
    assert results == [0, 1, 2]
    assert project.count("start") == {0: 1, 1: 1, 2: 1}
    assert worker.process.poll() is None
    assert "works again" in worker.log()
    worker.send(signal.SIGTERM)
    assert worker.wait() == 0, worker.log()


def _restart_server(folder: Path, store_url: str, port: str) -> ServerProcess:
    """Start a server on the same port and store as before and wait until it is healthy."""
    process = launch_server(folder, "--store", store_url, "--port", port)
    server = ServerProcess(
        process, f"http://127.0.0.1:{port}", store_url,
        folder / "server.out", folder / "server.err",
    )
    client = Conveyor(server.url)
    try:
        wait_until(lambda: _healthy(client), START_TIMEOUT_S)
    finally:
        client.close()
    return server


def _healthy(app: Conveyor) -> bool:
    try:
        app.client.list_queues()
    except Exception:  # noqa: BLE001 - any failure means not ready yet
        return False
    return True


# The worker in this process, on a real engine ------------------------------


@contextlib.contextmanager
def worker_thread(worker: Worker) -> Iterator[Worker]:
    """Run a real Worker in a thread for the duration of the block."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(STOP_TIMEOUT_S)
        assert not thread.is_alive(), "worker did not stop"


def test_worker_holds_concurrency_plus_prefetch(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/limit.db")
    started = threading.Semaphore(0)
    release = threading.Event()

    @app.task(queue="limit")
    def blocked(index: int) -> int:
        started.release()
        release.wait(DONE_TIMEOUT_S)
        return index

    handles = blocked.enqueue_many([((i,), {}) for i in range(20)])
    worker = Worker(app, concurrency=2, prefetch=3, poll_wait_s=0.2)
    try:
        with worker_thread(worker):
            assert started.acquire(timeout=DONE_TIMEOUT_S)
            assert started.acquire(timeout=DONE_TIMEOUT_S)
            time.sleep(0.5)
            reserved_while_blocked = app.client.stats("limit").reserved
            release.set()
            results = [h.result(timeout_s=DONE_TIMEOUT_S) for h in handles]
    finally:
        release.set()
        app.close()

    assert reserved_while_blocked == 5
    assert results == list(range(20))


def test_worker_serves_several_queues(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/queues.db")

    @app.task(queue="first")
    def first(index: int) -> str:
        return f"first {index}"

    @app.task(queue="second")
    async def second(index: int) -> str:
        return f"second {index}"

    first_handles = first.enqueue_many([((i,), {}) for i in range(50)])
    second_handles = second.enqueue_many([((i,), {}) for i in range(50)])
    try:
        with worker_thread(Worker(app, concurrency=2, prefetch=4, poll_wait_s=0.2)):
            first_results = [h.result(timeout_s=DONE_TIMEOUT_S) for h in first_handles]
            second_results = [h.result(timeout_s=DONE_TIMEOUT_S) for h in second_handles]
    finally:
        app.close()

    assert first_results == [f"first {i}" for i in range(50)]
    assert second_results == [f"second {i}" for i in range(50)]


def test_worker_dead_letters_non_task_message(tmp_path: Path) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/invalid.db")

    @app.task(queue="mixed")
    def known() -> None:
        pass

    app.ensure_queue("mixed")
    posted = app.client.post(
        "mixed", [NewMessage({"not": "a task"}), NewMessage(b"\x00raw"), NewMessage([1, 2])]
    )
    try:
        with worker_thread(Worker(app, poll_wait_s=0.2)):
            wait_until(lambda: app.client.stats("mixed.dlq").dead == 3)
        messages = [app.client.get_message(result.id) for result in posted]
    finally:
        app.close()

    assert [m.receive_count for m in messages] == [1, 1, 1]
    assert all(m.last_error.startswith("invalid task message:") for m in messages)


def test_reporter_logs_stale_receipt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(f"sqlite:///{tmp_path}/stale.db")
    engine.create_queue("stale")
    engine.post("stale", [NewMessage({"task": "x", "args": [], "kwargs": {}})])
    message = engine.reserve("stale")[0]
    message.receipt = "not-the-receipt"
    job = Job(message, None, None, None, 5, time.monotonic() + 30, time.monotonic() + 12)
    delivered: list[Job] = []
    reporter = Reporter(engine, on_delivered=delivered.append)
    reporter.start()
    try:
        with caplog.at_level(logging.WARNING, logger="conveyor.worker.reporter"):
            reporter.add(outcomes.success(job, None, 1.0))
            unsent = reporter.close(10.0)
    finally:
        engine.close()

    assert unsent == 0
    assert delivered == [job]
    assert f"Could not ack message {message.id}" in caplog.text
    assert "stale-receipt" in caplog.text


def test_reporter_isolates_rejected_ack(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = start_server(tmp_path / "small", "--max-request-bytes", "100000")
    app = Conveyor(server.url)
    together = threading.Barrier(5, timeout=DONE_TIMEOUT_S)

    @app.task(queue="results", max_attempts=1)
    def produce(size: int) -> str:
        together.wait()
        return "x" * size

    app.client.create_queue("results", {"visibility_timeout_s": 1.0})
    large = produce.enqueue(200_000)
    small = [produce.enqueue(i) for i in range(4)]
    try:
        worker = Worker(app, concurrency=5, prefetch=0, poll_wait_s=0.2)
        with (
            caplog.at_level(logging.ERROR, logger="conveyor.worker.reporter"),
            worker_thread(worker),
        ):
            small_results = [h.result(timeout_s=DONE_TIMEOUT_S) for h in small]
            wait_until(lambda: large.status() == "failed")
    finally:
        app.close()
        server.stop()

    assert small_results == ["x" * i for i in range(4)]
    assert f"rejected the ack of message {large.id}" in caplog.text
    assert caplog.text.count("rejected the ack") == 1


def test_reporter_drops_outcomes_of_deleted_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(f"sqlite:///{tmp_path}/gone.db")
    engine.create_queue("gone")
    body = {"task": "x", "args": [], "kwargs": {}}
    engine.post("gone", [NewMessage(body) for _ in range(8)])
    leased = engine.reserve("gone", 8)
    engine.delete_queue("gone")
    jobs = [Job(m, None, None, None, 5, time.monotonic() + 30, time.monotonic() + 12) for m in leased]
    delivered: list[Job] = []
    reporter = Reporter(engine, on_delivered=delivered.append)
    reporter.start()
    try:
        with caplog.at_level(logging.INFO, logger="conveyor.worker.reporter"):
            for job in jobs:
                reporter.add(outcomes.success(job, None, 1.0))
            unsent = reporter.close(10.0)
    finally:
        engine.close()

    assert unsent == 0
    assert sorted(j.message_id for j in delivered) == sorted(j.message_id for j in jobs)
    assert "Queue gone no longer exists, so 8 outcomes for it were dropped" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_worker_serves_recreated_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = Conveyor(f"sqlite:///{tmp_path}/again.db")

    @app.task(queue="again")
    def echo(value: int) -> int:
        return value

    app.ensure_queue("again")
    try:
        with caplog.at_level(logging.ERROR, logger="conveyor.worker.fetcher"):
            with worker_thread(Worker(app, poll_wait_s=0.2)):
                app.client.delete_queue("again")
                wait_until(lambda: "retrying will not help" in caplog.text)
                app.client.create_queue("again")
                handle = echo.enqueue(7)
                # One pause after the error is at most 5 s.
                value = handle.result(timeout_s=10)
    finally:
        app.close()

    assert value == 7
    assert caplog.text.count("retrying will not help") == 1
