"""Flow control end to end: a real `conveyor server`, real `conveyor worker`
processes, and a threaded HTTP stub on 127.0.0.1 standing in for the
third-party service the tasks call (see flow_tasks.py).

The stub records when each call starts, its status and how many calls run
at once, so the tests judge the limits by what the dependency saw. Waits
poll for a condition with a generous deadline; only the rate test measures
time, because a rate is what it checks.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from http_fixtures import ServerProcess, launch_server, start_server
from task_workers import WorkerProcess, start_worker, stop_worker

import flow_tasks
from conveyor.client import connect

pytestmark = pytest.mark.acceptance

WAIT_S = 90.0
RATE_PER_S = 20
# Seconds after the first delivery before the rate is measured, so the
# bucket's initial burst and the workers' start-up are left out.
WARM_UP_S = 3.0
WINDOW_S = 10.0


@dataclass
class Call:
    scenario: str
    key: str
    started: float
    status: int


@dataclass
class Stub:
    """The stub's record of calls and its status per scenario, guarded by `lock`."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: list[Call] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    delay_s: dict[str, float] = field(default_factory=dict)
    running: Counter = field(default_factory=Counter)
    peak: Counter = field(default_factory=Counter)
    deferred: set[str] = field(default_factory=set)
    url: str = ""

    def answer(self, scenario: str, key: str) -> int:
        """Return the status of a call; in the retry scenario each key gets one 429 first."""
        if scenario == "retry" and key not in self.deferred:
            self.deferred.add(key)
            return 429
        return self.status.get(scenario, 200)

    def succeeded(self, scenario: str) -> set[str]:
        with self.lock:
            return {c.key for c in self.calls if c.scenario == scenario and c.status == 200}

    def starts(self, scenario: str) -> list[float]:
        with self.lock:
            return [c.started for c in self.calls if c.scenario == scenario]


def make_handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            started = time.time()
            parsed = urllib.parse.urlsplit(self.path)
            scenario = parsed.path.strip("/")
            key = urllib.parse.parse_qs(parsed.query)["key"][0]
            with stub.lock:
                stub.running[scenario] += 1
                stub.peak[scenario] = max(stub.peak[scenario], stub.running[scenario])
                status = stub.answer(scenario, key)
                delay_s = stub.delay_s.get(scenario, 0.0)
            time.sleep(delay_s)
            with stub.lock:
                stub.running[scenario] -= 1
                stub.calls.append(Call(scenario, key, started, status))
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@dataclass
class Setup:
    folder: Path
    stub: Stub
    server: ServerProcess
    workers: list[WorkerProcess] = field(default_factory=list)

    def client(self) -> Any:
        return connect(self.server.url)

    def start_workers(self, count: int, queue: str, *args: str) -> None:
        for _ in range(count):
            name = f"worker-{len(self.workers)}"
            worker = start_worker(
                self.folder, "flow_tasks:app", self.server.url, "--queues", queue, *args,
                name=name,
            )
            self.workers.append(worker)

    def logs(self) -> str:
        parts = [f"--- {w.log_path.name}\n{w.log()}" for w in self.workers]
        return "\n".join([f"--- server\n{self.server.output()}", *parts])


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    stub = Stub()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(stub))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("FLOW_STUB_URL", stub.url)

    server = start_server(tmp_path / "server")
    flow_tasks.app.configure(url=server.url)
    running = Setup(tmp_path, stub, server)
    try:
        yield running
    finally:
        for worker in running.workers:
            if worker.alive():
                stop_worker(worker)
        flow_tasks.app.close()
        running.server.stop()
        httpd.shutdown()
        httpd.server_close()


def wait_for(
    condition: Callable[[], Any], description: str, setup: Setup, timeout_s: float = WAIT_S
) -> Any:
    """Poll `condition` until it returns a true value; fail with the logs after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s:g} s waiting for {description}\n{setup.logs()}"
            )
        time.sleep(0.05)


def enqueue(task: Any, prefix: str, count: int) -> set[str]:
    keys = [f"{prefix}-{i}" for i in range(count)]
    task.enqueue_many([((key,), {}) for key in keys])
    return set(keys)


def deliveries_in_window(stub: Stub, scenario: str, after: float) -> tuple[int, float]:
    """Wait out a warm-up from the first call after `after`, then count a window."""
    starts = [t for t in stub.starts(scenario) if t > after]
    start = min(starts) + WARM_UP_S
    end = start + WINDOW_S
    while time.time() < end + 1.0:
        time.sleep(0.1)
    count = sum(1 for t in stub.starts(scenario) if start <= t < end)
    return count, start


def restart_server(setup: Setup) -> None:
    """Stop the server and start it again on the same port and store."""
    port = urllib.parse.urlsplit(setup.server.url).port
    setup.server.stop()
    folder = setup.folder / "server"
    process = launch_server(folder, "--store", setup.server.store_url, "--port", str(port))
    setup.server = ServerProcess(
        process, setup.server.url, setup.server.store_url,
        folder / "server.out", folder / "server.err",
    )

    def healthy() -> bool:
        try:
            return httpx.get(setup.server.url + "/v1/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, "the restarted server", setup)


# Rate limit ------------------------------------------------------------------


def test_rate_limit_holds_across_workers_and_restart(setup: Setup) -> None:
    with setup.client() as client:
        client.create_queue("flow-rate", {"rate_limit_per_s": RATE_PER_S})
    enqueue(flow_tasks.rate, "r", 800)
    setup.start_workers(3, "flow-rate", "--concurrency", "8")
    wait_for(lambda: setup.stub.starts("rate"), "the first delivery", setup)

    count, _ = deliveries_in_window(setup.stub, "rate", 0.0)
    expected = RATE_PER_S * WINDOW_S
    assert abs(count - expected) <= 0.1 * expected, (count, setup.logs())

    restarted_at = time.time()
    restart_server(setup)
    with setup.client() as client:
        assert client.get_queue("flow-rate").settings["rate_limit_per_s"] == RATE_PER_S
    wait_for(
        lambda: [t for t in setup.stub.starts("rate") if t > restarted_at],
        "a delivery after the restart", setup,
    )
    count, _ = deliveries_in_window(setup.stub, "rate", restarted_at)
    assert abs(count - expected) <= 0.1 * expected, (count, setup.logs())


# Concurrency limit -------------------------------------------------------------


def test_concurrency_limit_across_workers(setup: Setup) -> None:
    with setup.client() as client:
        client.create_queue("flow-conc", {"max_in_flight": 3})
    setup.stub.delay_s["conc"] = 0.3
    keys = enqueue(flow_tasks.conc, "c", 30)
    setup.start_workers(3, "flow-conc", "--concurrency", "8")

    wait_for(lambda: setup.stub.succeeded("conc") == keys, "30 successful calls", setup)
    assert setup.stub.peak["conc"] <= 3
    # Several workers ran calls at once, so the limit was what held them back.
    assert setup.stub.peak["conc"] >= 2


# Circuit breaker and recovery ----------------------------------------------------

BREAKER = {
    "failure_ratio": 0.5,
    "window_s": 10,
    "min_attempts": 5,
    "cooldown_s": 2,
    "max_cooldown_s": 4,
    "probes": 2,
    "redrive_on_close": True,
    "redrive_rate_per_s": 20,
}


def breaker_events(client: Any) -> list[Any]:
    return list(reversed(client.breaker("flow-breaker", limit=100).events))


def calls_while_open(stub: Stub, events: list[Any], slack_s: float) -> list[float]:
    """Return the start times of calls inside an open spell, after `slack_s`.

    A call in the first `slack_s` of a spell may come from a message
    reserved just before the breaker opened.
    """
    starts = stub.starts("breaker")
    spells = [
        (event.at + slack_s, following.at)
        for event, following in zip(events, events[1:])
        if event.to_state == "open"
    ]
    return [t for t in starts for begin, end in spells if begin <= t < end]


def test_breaker_stops_calls_and_recovers(setup: Setup) -> None:
    settings = {
        "max_attempts": 2,
        "backoff_base_s": 10,
        "backoff_jitter": "none",
        "breaker": BREAKER,
    }
    with setup.client() as client:
        client.create_queue("flow-breaker", settings)
    setup.start_workers(2, "flow-breaker", "--concurrency", "1", "--prefetch", "0")
    healthy_keys = enqueue(flow_tasks.breaker, "ok", 10)
    wait_for(lambda: healthy_keys <= setup.stub.succeeded("breaker"), "healthy calls", setup)

    # The dependency fails: the breaker opens within its window.
    with setup.stub.lock:
        setup.stub.status["breaker"] = 500
    failing_since = time.time()
    failing_keys = enqueue(flow_tasks.breaker, "fail", 20)
    with setup.client() as client:
        wait_for(lambda: client.stats("flow-breaker").breaker["state"] == "open",
                 "the breaker to open", setup)
        opened = breaker_events(client)[0]
        assert (opened.from_state, opened.to_state) == ("closed", "open")
        assert opened.at - failing_since <= BREAKER["window_s"]

        # It stays failing through two cool-downs: only probes reach it.
        wait_for(
            lambda: sum(e.to_state == "half_open" for e in breaker_events(client)) >= 2,
            "two rounds of probes", setup,
        )
        with setup.stub.lock:
            setup.stub.status["breaker"] = 200
        recovered_at = time.time()
        wait_for(lambda: client.stats("flow-breaker").breaker["state"] == "closed",
                 "the breaker to close", setup)

        events = breaker_events(client)
        failing = [e for e in events if e.at < recovered_at]
        assert calls_while_open(setup.stub, failing, slack_s=0.5) == []
        rounds = sum(e.to_state == "half_open" for e in failing)
        calls_after_open = [
            t for t in setup.stub.starts("breaker") if opened.at < t < recovered_at
        ]
        # Probes, plus at most one call per worker that was already leased.
        assert len(calls_after_open) <= BREAKER["probes"] * rounds + 2

        # The incident's dead messages come back through a redrive job.
        [job] = client.list_redrive_jobs(dlq="flow-breaker.dlq")
        assert job.source_queue == "flow-breaker"
        assert job.dead_after == opened.at
        wait_for(lambda: client.get_redrive_job(job.id).state == "done",
                 "the recovery job", setup)

        # Nothing is lost: every message succeeds, and nothing stays dead.
        all_keys = healthy_keys | failing_keys
        wait_for(lambda: all_keys <= setup.stub.succeeded("breaker"),
                 "every message to succeed", setup)
        wait_for(lambda: _drained(client, "flow-breaker"), "the queue to drain", setup)
        assert client.stats("flow-breaker.dlq").dead == 0


def _drained(client: Any, queue: str) -> bool:
    stats = client.stats(queue)
    return stats.ready + stats.delayed + stats.reserved + stats.dead == 0


# RetryAfter ----------------------------------------------------------------------


def test_retry_after_keeps_attempts(setup: Setup) -> None:
    with setup.client() as client:
        client.create_queue("flow-retry", {"max_attempts": 1})
    keys = enqueue(flow_tasks.retry, "t", 5)
    setup.start_workers(1, "flow-retry", "--processes", "1")

    wait_for(lambda: setup.stub.succeeded("retry") == keys, "every message to succeed", setup)
    with setup.stub.lock:
        per_key = Counter(c.key for c in setup.stub.calls if c.scenario == "retry")
    assert set(per_key.values()) == {2}
    with setup.client() as client:
        wait_for(lambda: _drained(client, "flow-retry"), "the queue to drain", setup)
        assert client.stats("flow-retry.dlq").dead == 0
    logs = setup.logs()
    assert "(RetryAfter); attempt 1 is not counted" in logs
    assert "failed (attempt 1 of 1" not in logs
