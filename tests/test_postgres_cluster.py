"""Several `conveyor server` processes on one PostgreSQL schema, with real
workers, under load, a server SIGKILL and a PostgreSQL restart.

Each test creates its own schema, starts servers on their own loopback
ports and `conveyor worker` processes (tasks in cluster_tasks.py) attached
to them, and posts task messages through every server. Part of the load
goes to a FIFO queue in numbered groups, the rest to a standard queue. The
tasks append one line per run to a shared record file, in the order they
ran, and the tests read it to find lost, repeated and out-of-order messages.

Posters send a dedup id with every message, so a batch whose response was
lost can be posted again without storing it twice.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from conftest import POSTGRES_URL, create_postgres_schema
from http_fixtures import ServerProcess, conveyor_command, launch_server, start_server

pytestmark = pytest.mark.acceptance

logger = logging.getLogger(__name__)

TESTS_FOLDER = Path(__file__).resolve().parent
ORDERED = "ordered"
PLAIN = "plain"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
# Shorter than pytest's timeout of 300 s per test (pyproject.toml), so a
# stuck drain fails with a message that lists what did not run.
DRAIN_TIMEOUT_S = 200.0
POST_TIMEOUT_S = 60.0
PROGRESS_INTERVAL_S = 5.0
POLL_INTERVAL_S = 0.2
PROBLEM_STORE_UNAVAILABLE = "urn:conveyor:problem:store-unavailable"


# Load: what the posters send ------------------------------------------------


@dataclass(frozen=True)
class Load:
    """FIFO groups of numbered messages plus standard-queue messages.

    A message's key ("fifo g07 12", "plain p00042") is both its dedup id
    and the line its task writes to the record file.
    """

    groups: int
    per_group: int
    plain: int
    batch_size: int
    posters: int = 3

    def keys(self) -> set[str]:
        fifo = {
            fifo_key(g, s) for g in range(self.groups) for s in range(self.per_group)
        }
        return fifo | {plain_key(k) for k in range(self.plain)}

    def batches_of(self, poster: int) -> list[Batch]:
        """Return one poster's batches, FIFO and standard in turn.

        A poster owns every message of its groups and posts its batches one
        after another, so each group's post order is its seq order.
        """
        groups = range(poster, self.groups, self.posters)
        fifo = [fifo_message(g, s) for s in range(self.per_group) for g in groups]
        plain = [plain_message(k) for k in range(poster, self.plain, self.posters)]
        fifo_batches = [Batch(ORDERED, part) for part in chunks(fifo, self.batch_size)]
        plain_batches = [Batch(PLAIN, part) for part in chunks(plain, self.batch_size)]
        batches: list[Batch] = []
        for index in range(max(len(fifo_batches), len(plain_batches))):
            batches += (
                fifo_batches[index : index + 1] + plain_batches[index : index + 1]
            )
        return batches


@dataclass(frozen=True)
class Batch:
    queue: str
    messages: list[dict[str, Any]]

    def keys(self) -> list[str]:
        return [m["dedup_id"] for m in self.messages]


def fifo_key(group: int, seq: int) -> str:
    return f"fifo {group_name(group)} {seq}"


def plain_key(key: int) -> str:
    return f"plain p{key:05d}"


def group_name(group: int) -> str:
    return f"g{group:02d}"


def fifo_message(group: int, seq: int) -> dict[str, Any]:
    return {
        "body": {"task": "record_fifo", "args": [group_name(group), seq], "kwargs": {}},
        "group": group_name(group),
        "dedup_id": fifo_key(group, seq),
    }


def plain_message(key: int) -> dict[str, Any]:
    return {
        "body": {"task": "record_plain", "args": [f"p{key:05d}"], "kwargs": {}},
        "dedup_id": plain_key(key),
    }


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


# Posters ------------------------------------------------------------------


class Poster:
    """A thread that posts its batches in order, each through the next server.

    A batch that fails is posted again through the following server with
    the same dedup ids, until a server stores it. With `pause_after` the
    poster stops after that many batches until `resume` is set, so a test
    can line up a crash with posts in flight.
    """

    def __init__(
        self,
        index: int,
        urls: list[str],
        batches: list[Batch],
        pause_after: int | None = None,
    ) -> None:
        self.index = index
        self.urls = urls
        self.batches = batches
        self.pause_after = pause_after
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.confirmed: list[str] = []
        self.failures: collections.Counter[str] = collections.Counter()
        self.error: str | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"poster-{index}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"poster {self.index} did not finish"
        assert self.error is None, f"poster {self.index} gave up: {self.error}"

    def confirmed_keys(self) -> list[str]:
        with self._lock:
            return list(self.confirmed)

    def failure_counts(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self.failures)

    def _run(self) -> None:
        try:
            with httpx.Client(timeout=POST_TIMEOUT_S) as client:
                for number, batch in enumerate(self.batches):
                    if number == self.pause_after:
                        self.paused.set()
                        self.resume.wait(DRAIN_TIMEOUT_S)
                    self._post_until_stored(client, batch, self.index + number)
        except Exception as exc:  # noqa: BLE001 - reported by join()
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.paused.set()

    def _post_until_stored(self, client: httpx.Client, batch: Batch, turn: int) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        attempt = 0
        while True:
            url = self.urls[(turn + attempt) % len(self.urls)]
            outcome = post_batch(client, url, batch)
            if outcome is None:
                with self._lock:
                    self.confirmed.extend(batch.keys())
                return
            with self._lock:
                self.failures[outcome] += 1
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"batch not stored within {DRAIN_TIMEOUT_S} s: {outcome}"
                )
            attempt += 1
            time.sleep(min(1.0, 0.05 * 2 ** min(attempt, 5)))


def post_batch(client: httpx.Client, url: str, batch: Batch) -> str | None:
    """Post one batch and return None once stored, else a description of the failure.

    Raises on a response that retrying cannot fix, such as a 422.
    """
    try:
        response = client.post(
            f"{url}/v1/queues/{batch.queue}/messages", json={"messages": batch.messages}
        )
    except httpx.TransportError as exc:
        return type(exc).__name__
    if response.status_code == 201:
        return None
    if response.status_code != 503:
        raise AssertionError(
            f"POST to {url} returned {response.status_code}: {response.text[:500]}"
        )
    return f"{response.status_code} {response.json().get('type', '')}"


def start_posters(
    urls: list[str], load: Load, pause_after: int | None = None
) -> list[Poster]:
    posters = [
        Poster(index, urls, load.batches_of(index), pause_after)
        for index in range(load.posters)
    ]
    for poster in posters:
        poster.start()
    return posters


def confirmed_keys(posters: list[Poster]) -> set[str]:
    return {key for poster in posters for key in poster.confirmed_keys()}


def failure_counts(posters: list[Poster]) -> collections.Counter[str]:
    total: collections.Counter[str] = collections.Counter()
    for poster in posters:
        total.update(poster.failure_counts())
    return total


# Workers and the cluster -------------------------------------------------


@dataclass
class WorkerProcess:
    """A running `conveyor worker` on cluster_tasks.py and its log file."""

    process: subprocess.Popen
    log_path: Path
    server_index: int

    def log(self) -> str:
        return self.log_path.read_text()


@dataclass
class Cluster:
    """Servers on one schema, their workers, and the record file of the tasks."""

    folder: Path
    store_url: str
    servers: list[ServerProcess]
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    @property
    def record_path(self) -> Path:
        return self.folder / "record.txt"

    def records(self) -> list[str]:
        if not self.record_path.exists():
            return []
        return self.record_path.read_text().splitlines()

    def start_workers(self, server_indexes: list[int], *options: str) -> None:
        """Start a worker attached to each listed server, and wait until all serve."""
        started = [self._launch_worker(index, options) for index in server_indexes]
        for worker in started:
            wait_until(
                lambda worker=worker: (
                    "Worker started" in worker.log()
                    or worker.process.poll() is not None
                ),
                START_TIMEOUT_S,
                f"worker on server {worker.server_index} did not start",
            )
            assert worker.process.poll() is None, (
                f"worker exited at start:\n{worker.log()}"
            )

    def _launch_worker(
        self, server_index: int, options: tuple[str, ...]
    ) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(TESTS_FOLDER), env.get("PYTHONPATH", "")]
        )
        env["CLUSTER_RECORD"] = str(self.record_path)
        log_path = self.folder / f"worker-{len(self.workers)}.log"
        argv = [
            *conveyor_command(),
            "worker",
            "cluster_tasks:app",
            "--url",
            self.servers[server_index].url,
            "--poll-wait-s",
            "1",
            *options,
        ]
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder
            )
        worker = WorkerProcess(process, log_path, server_index)
        self.workers.append(worker)
        return worker

    def check_alive(self) -> None:
        """Raise with the log of any worker or server that exited."""
        for worker in self.workers:
            if worker.process.poll() is not None:
                raise AssertionError(f"a worker exited:\n{worker.log()[-3000:]}")
        for server in self.servers:
            if server.process.poll() is not None:
                raise AssertionError(f"a server exited:\n{server.output()[-3000:]}")

    def stop_workers(self) -> None:
        """SIGTERM every worker and check that each stops cleanly."""
        for worker in self.workers:
            worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                code = worker.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired as exc:
                worker.process.kill()
                worker.process.wait()
                log = worker.log()[-3000:]
                raise AssertionError(f"worker did not stop:\n{log}") from exc
            assert code == 0, f"worker exited with {code}:\n{worker.log()[-3000:]}"

    def restart_server(self, index: int) -> None:
        """Start server `index` again on its old port and wait until it is healthy."""
        old = self.servers[index]
        port = old.url.rsplit(":", 1)[1]
        folder = self.folder / f"server-{index}-restarted"
        folder.mkdir()
        process = launch_server(folder, "--store", self.store_url, "--port", port)
        server = ServerProcess(
            process,
            old.url,
            self.store_url,
            folder / "server.out",
            folder / "server.err",
        )
        self.servers[index] = server
        wait_until(
            lambda: is_healthy(server), START_TIMEOUT_S, "restarted server not healthy"
        )

    def close(self) -> None:
        """Kill the workers that still run, then stop every server."""
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
        errors = []
        for server in self.servers:
            try:
                server.stop()
            except (
                AssertionError
            ) as exc:  # stop() has killed this one. Stop the others too.
                errors.append(exc)
        if errors:
            raise errors[0]


def is_healthy(server: ServerProcess) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"server exited:\n{server.output()[-3000:]}")
    try:
        return httpx.get(server.url + "/v1/health", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture(autouse=True)
def quiet_httpx(caplog: pytest.LogCaptureFixture) -> None:
    """Keep httpx's line per request out of the captured log, which shows progress."""
    caplog.set_level(logging.WARNING, logger="httpx")
    caplog.set_level(logging.INFO, logger=__name__)


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[[int], Cluster]]:
    """Start N servers on a fresh schema. Teardown stops them and drops the schema."""
    clusters: list[Cluster] = []
    drops: list[Callable[[], None]] = []

    def make(server_count: int) -> Cluster:
        store_url, drop = create_postgres_schema()
        drops.append(drop)
        servers = []
        cluster = Cluster(tmp_path, store_url, servers)
        clusters.append(cluster)
        for index in range(server_count):
            servers.append(
                start_server(tmp_path / f"server-{index}", store_url=store_url)
            )
        return cluster

    yield make
    try:
        for cluster in clusters:
            cluster.close()
    finally:
        for drop in drops:
            drop()


def create_queues(cluster: Cluster, visibility_timeout_s: float) -> None:
    settings = {"visibility_timeout_s": visibility_timeout_s}
    with httpx.Client(base_url=cluster.urls[0], timeout=POST_TIMEOUT_S) as client:
        for name, extra in ((ORDERED, {"type": "fifo"}), (PLAIN, {})):
            body = {"name": name, "settings": {**settings, **extra}}
            response = client.post("/v1/queues", json=body)
            assert response.status_code == 201, response.text


# Waiting and reading what ran ----------------------------------------------


def wait_until(condition: Callable[[], Any], timeout_s: float, failure: str) -> None:
    """Poll condition until it is true, and raise AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{failure} within {timeout_s} s")
        time.sleep(POLL_INTERVAL_S)


def wait_until_all_ran(
    cluster: Cluster, expected: set[str], posters: list[Poster]
) -> None:
    """Wait until every expected key ran at least once, and log progress meanwhile."""
    started = time.monotonic()
    last_log = started
    while True:
        ran = set(cluster.records())
        missing = expected - ran
        if not missing:
            logger.info(
                "All %d messages ran after %.1f s",
                len(expected),
                time.monotonic() - started,
            )
            return
        cluster.check_alive()
        now = time.monotonic()
        if now - started > DRAIN_TIMEOUT_S:
            raise AssertionError(
                f"after {DRAIN_TIMEOUT_S} s, {len(missing)} of {len(expected)} "
                f"messages have not run: {sample(missing)}. Posters confirmed "
                f"{len(confirmed_keys(posters))} and saw failures "
                f"{dict(failure_counts(posters))}. Worker tracebacks: "
                f"{worker_tracebacks(cluster)[:3]}"
            )
        if now - last_log >= PROGRESS_INTERVAL_S:
            last_log = now
            logger.info(
                "%d of %d messages ran, %d posted, after %.0f s",
                len(expected) - len(missing),
                len(expected),
                len(confirmed_keys(posters)),
                now - started,
            )
        time.sleep(POLL_INTERVAL_S)


def wait_until_queues_empty(cluster: Cluster) -> None:
    """Wait until no message is ready, delayed or reserved, so every ack has arrived."""
    with httpx.Client(base_url=cluster.urls[0], timeout=POST_TIMEOUT_S) as client:

        def empty() -> bool:
            for queue in (ORDERED, PLAIN):
                stats = client.get(f"/v1/queues/{queue}/stats").json()
                if stats["ready"] + stats["delayed"] + stats["reserved"]:
                    return False
            return True

        wait_until(empty, DRAIN_TIMEOUT_S, "queues did not empty")


def dead_count(cluster: Cluster) -> int:
    with httpx.Client(base_url=cluster.urls[0], timeout=POST_TIMEOUT_S) as client:
        return sum(
            client.get(f"/v1/queues/{queue}/stats").json()["dead"]
            for queue in (ORDERED, PLAIN)
        )


def reserved_keys(url: str) -> set[str]:
    """Return the keys of every message now reserved, read through one server."""
    keys: set[str] = set()
    with httpx.Client(base_url=url, timeout=POST_TIMEOUT_S) as client:
        for queue in (ORDERED, PLAIN):
            offset = 0
            while True:
                response = client.get(
                    f"/v1/queues/{queue}/messages",
                    params={"state": "reserved", "limit": 1000, "offset": offset},
                )
                response.raise_for_status()
                page = response.json()["messages"]
                keys.update(m["dedup_id"] for m in page)
                if len(page) < 1000:
                    break
                offset += len(page)
    return keys


def repeated(records: list[str]) -> dict[str, int]:
    """Return the keys that ran more than once, with their run counts."""
    return {key: n for key, n in collections.Counter(records).items() if n > 1}


def fifo_order_errors(records: list[str], load: Load) -> list[str]:
    """Describe each group whose runs are not its seqs in post order.

    A run repeated right after itself (a redelivered head) counts once.
    """
    runs: dict[str, list[int]] = collections.defaultdict(list)
    for line in records:
        kind, *rest = line.split()
        if kind == "fifo":
            group, seq = rest[0], int(rest[1])
            if not runs[group] or runs[group][-1] != seq:
                runs[group].append(seq)
    errors = []
    for group in map(group_name, range(load.groups)):
        seqs = runs.get(group, [])
        if seqs != list(range(load.per_group)):
            position = next(
                (
                    i
                    for i, (a, b) in enumerate(
                        zip(seqs, range(load.per_group), strict=False)
                    )
                    if a != b
                ),
                min(len(seqs), load.per_group),
            )
            errors.append(
                f"group {group} ran {len(seqs)} times; first wrong at run {position}: "
                f"{seqs[max(0, position - 3) : position + 4]}"
            )
    return errors


def check_runs(
    records: list[str], expected: set[str], load: Load, may_repeat: set[str]
) -> None:
    """Assert that each expected key ran, nothing else ran, and FIFO groups kept order.

    A key may run more than once only if it is in may_repeat: the messages
    whose lease was in flight when the test killed a server or restarted
    the database.
    """
    ran = set(records)
    never_ran = expected - ran
    assert not never_ran, f"{len(never_ran)} messages never ran: {sample(never_ran)}"
    unknown = ran - expected
    assert not unknown, (
        f"{len(unknown)} keys ran that were never posted: {sample(unknown)}"
    )

    repeats = repeated(records)
    unexplained = {key: n for key, n in repeats.items() if key not in may_repeat}
    assert not unexplained, (
        f"{len(unexplained)} messages without a lease in flight ran more than once: "
        f"{sample(f'{key} ({runs} runs)' for key, runs in unexplained.items())}"
    )
    order_errors = fifo_order_errors(records, load)
    assert not order_errors, (
        f"{len(order_errors)} FIFO groups ran out of post order:\n"
        + "\n".join(order_errors[:10])
    )


def sample(keys: Any, count: int = 10) -> str:
    """Return up to count keys, sorted, for a failure message."""
    return ", ".join(map(str, sorted(keys)[:count]))


def worker_tracebacks(cluster: Cluster) -> list[str]:
    """Return the start of each traceback in the worker logs."""
    found = []
    for worker in cluster.workers:
        log = worker.log()
        start = log.find("Traceback")
        if start >= 0:
            found.append(log[max(0, start - 300) : start + 1500])
    return found


def store_failures(cluster: Cluster) -> int:
    """Count the requests and sweeps that failed because the store was unavailable."""
    pattern = re.compile(r"Request \S+ \S+ failed: |Sweep failed")
    return sum(len(pattern.findall(server.output())) for server in cluster.servers)


def unexpected_server_errors(cluster: Cluster) -> list[str]:
    """Return the server log lines that show a 500 response or a traceback."""
    return [
        line
        for server in cluster.servers
        for line in server.output().splitlines()
        if "failed unexpectedly" in line or "Traceback" in line
    ]


# Multi-server acceptance ---------------------------------------------------


def test_three_servers_drain_load_in_order(make_cluster) -> None:
    load = Load(groups=50, per_group=100, plain=15_000, batch_size=500)
    cluster = make_cluster(3)
    create_queues(cluster, visibility_timeout_s=30.0)
    first_probe = post_probe(cluster.urls[0])
    second_probe = post_probe(cluster.urls[1])
    cluster.start_workers([0, 0, 1, 2], "--concurrency", "4")

    posting_started = time.monotonic()
    posters = start_posters(cluster.urls, load)
    for poster in posters:
        poster.join(DRAIN_TIMEOUT_S)
    logger.info(
        "Posted %d messages in %.1f s",
        len(load.keys()),
        time.monotonic() - posting_started,
    )
    expected = load.keys() | {PROBE_KEY}
    wait_until_all_ran(cluster, expected, posters)
    wait_until_queues_empty(cluster)
    third_probe = post_probe(cluster.urls[2])
    cluster.stop_workers()
    records = cluster.records()

    assert first_probe[1] is False
    assert second_probe == (first_probe[0], True), "dedup across servers failed"
    assert third_probe == (first_probe[0], True), "dedup after the ack failed"
    assert confirmed_keys(posters) == load.keys()
    check_runs(records, expected, load, may_repeat=set())
    assert failure_counts(posters) == {}
    assert dead_count(cluster) == 0
    assert unexpected_server_errors(cluster) == []
    assert worker_tracebacks(cluster) == []


PROBE_KEY = "plain dedup-probe"


def post_probe(url: str) -> tuple[str, bool]:
    """Post the dedup probe and return its id and whether it was deduplicated."""
    message = {
        "body": {"task": "record_plain", "args": ["dedup-probe"], "kwargs": {}},
        "dedup_id": PROBE_KEY,
    }
    response = httpx.post(
        f"{url}/v1/queues/{PLAIN}/messages",
        json={"messages": [message]},
        timeout=POST_TIMEOUT_S,
    )
    assert response.status_code == 201, response.text
    [posted] = response.json()["messages"]
    return posted["id"], posted["deduplicated"]


# A server killed mid-stream ------------------------------------------------

# Short leases, so that a lease lost with a killed server or a restarted
# database ends, and its message is delivered again, within the test.
CRASH_LEASE_S = 10.0
CRASH_WORKER_OPTIONS = ("--concurrency", "4", "--prefetch", "20")


def start_paused_load(cluster: Cluster, load: Load) -> list[Poster]:
    """Post half of each poster's batches and wait until workers ran some."""
    posters = start_posters(
        cluster.urls, load, pause_after=len(load.batches_of(0)) // 2
    )
    for poster in posters:
        assert poster.paused.wait(DRAIN_TIMEOUT_S), (
            f"poster {poster.index} did not pause"
        )
    for poster in posters:
        assert poster.error is None, f"poster {poster.index} gave up: {poster.error}"
    wait_until(
        lambda: len(cluster.records()) >= 500,
        DRAIN_TIMEOUT_S,
        "workers ran no messages",
    )
    return posters


def resume(posters: list[Poster]) -> None:
    for poster in posters:
        poster.resume.set()


def test_server_sigkill_loses_no_message(make_cluster) -> None:
    load = Load(groups=30, per_group=60, plain=4_200, batch_size=100)
    cluster = make_cluster(3)
    create_queues(cluster, visibility_timeout_s=CRASH_LEASE_S)
    cluster.start_workers([0, 0, 1, 2], *CRASH_WORKER_OPTIONS)
    posters = start_paused_load(cluster, load)
    posted_before_kill = confirmed_keys(posters)

    resume(posters)
    cluster.servers[0].stop(signal.SIGKILL)
    in_flight = reserved_keys(cluster.urls[1])
    logger.info("Killed server 0 with %d messages reserved", len(in_flight))
    cluster.restart_server(0)
    for poster in posters:
        poster.join(DRAIN_TIMEOUT_S)
    wait_until_all_ran(cluster, load.keys(), posters)
    wait_until_queues_empty(cluster)
    cluster.stop_workers()
    records = cluster.records()
    duplicates = repeated(records)
    logger.info(
        "%d messages ran more than once; %d were reserved at the kill; "
        "poster failures: %s",
        len(duplicates),
        len(in_flight),
        dict(failure_counts(posters)),
    )

    assert in_flight, "no message was reserved when the server was killed"
    lost = posted_before_kill - set(records)
    assert not lost, (
        f"{len(lost)} messages posted before the kill never ran: {sample(lost)}"
    )
    check_runs(records, load.keys(), load, may_repeat=in_flight)
    assert dead_count(cluster) == 0
    assert unexpected_server_errors(cluster) == []
    assert worker_tracebacks(cluster) == []
    for worker in cluster.workers:
        if worker.server_index == 0:
            assert "works again" in worker.log(), (
                "a worker of the killed server did not recover"
            )


# PostgreSQL restarted mid-stream -----------------------------------------


@dataclass(frozen=True)
class LocalPostgres:
    """The PostgreSQL cluster on this machine that serves the tests' database."""

    version: str
    name: str

    def ctl(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "pg_ctlcluster",
                "--skip-systemctl-redirect",
                self.version,
                self.name,
                action,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def restart(self) -> None:
        done = self.ctl("restart")
        assert done.returncode == 0, f"pg_ctlcluster restart failed: {done.stderr}"

    def ensure_running(self) -> None:
        """Start the cluster unless it runs, and wait until it accepts connections."""
        self.ctl("start")  # pg_ctlcluster exits 2 when the cluster is already running
        wait_until(
            postgres_accepts_connections, 60.0, "PostgreSQL did not accept connections"
        )


def postgres_accepts_connections() -> bool:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def local_postgres_or_skip() -> LocalPostgres:
    """Return the local cluster that listens on the tests' port, or skip the test."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        pytest.skip("pg_ctlcluster is missing, so this test cannot restart PostgreSQL")
    if os.geteuid() != 0:
        pytest.skip("restarting PostgreSQL with pg_ctlcluster needs root")
    params = conninfo_to_dict(POSTGRES_URL)
    if params.get("host") not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip(f"the test database at {params.get('host')} is not on this machine")
    port = str(params.get("port") or "5432")
    listing = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True
    ).stdout
    for line in listing.splitlines():
        version, name, cluster_port, status = line.split()[:4]
        if cluster_port == port and status == "online":
            return LocalPostgres(version, name)
    pytest.skip(f"pg_lsclusters lists no online cluster on port {port}")


class Prober:
    """A thread that reads queue stats from every server in turn and counts outcomes."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.outcomes: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(POST_TIMEOUT_S + 5.0)

    def _run(self) -> None:
        with httpx.Client(timeout=POST_TIMEOUT_S) as client:
            while not self._stop.is_set():
                for url in self.urls:
                    self.outcomes[probe(client, url)] += 1
                self._stop.wait(0.02)


def probe(client: httpx.Client, url: str) -> str:
    try:
        response = client.get(f"{url}/v1/queues/{PLAIN}/stats")
    except httpx.TransportError as exc:
        return type(exc).__name__
    if response.status_code == 200:
        return "200"
    return f"{response.status_code} {response.json().get('type', '')}"


def reserved_keys_when_back(url: str) -> set[str]:
    """Read the reserved keys, retrying while the server still reports 503."""
    found: list[set[str]] = []

    def read() -> bool:
        try:
            found.append(reserved_keys(url))
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 503:
                raise
            return False
        return True

    wait_until(read, DRAIN_TIMEOUT_S, "the server did not serve reads again")
    return found[0]


def test_postgres_restart_loses_no_message(make_cluster) -> None:
    postgres = local_postgres_or_skip()
    load = Load(groups=30, per_group=60, plain=4_200, batch_size=50)
    cluster = make_cluster(2)
    create_queues(cluster, visibility_timeout_s=CRASH_LEASE_S)
    cluster.start_workers([0, 0, 1], *CRASH_WORKER_OPTIONS)
    posters = start_paused_load(cluster, load)
    posted_before_restart = confirmed_keys(posters)
    in_flight = reserved_keys(cluster.urls[0])
    prober = Prober(cluster.urls)
    prober.start()

    resume(posters)
    try:
        postgres.restart()
    finally:
        postgres.ensure_running()
    logger.info("PostgreSQL restarted")
    in_flight |= reserved_keys_when_back(cluster.urls[1])
    for server in cluster.servers:
        wait_until(
            lambda server=server: "reconnected" in server.output(),
            DRAIN_TIMEOUT_S,
            "a server's listener did not reconnect",
        )
    prober.stop()
    for poster in posters:
        poster.join(DRAIN_TIMEOUT_S)
    wait_until_all_ran(cluster, load.keys(), posters)
    wait_until_queues_empty(cluster)
    cluster.stop_workers()
    records = cluster.records()
    duplicates = repeated(records)
    unavailable = f"503 {PROBLEM_STORE_UNAVAILABLE}"
    logger.info(
        "%d messages ran more than once; %d failed store calls on the servers; "
        "probes: %s; poster failures: %s",
        len(duplicates),
        store_failures(cluster),
        dict(prober.outcomes),
        dict(failure_counts(posters)),
    )

    assert store_failures(cluster) > 0, "no server noticed the restart"
    assert set(prober.outcomes) <= {"200", unavailable}
    assert set(failure_counts(posters)) <= {unavailable}
    lost = posted_before_restart - set(records)
    assert not lost, (
        f"{len(lost)} messages posted before the restart never ran: {sample(lost)}"
    )
    check_runs(records, load.keys(), load, may_repeat=in_flight)
    assert dead_count(cluster) == 0
    assert unexpected_server_errors(cluster) == []
    assert worker_tracebacks(cluster) == []
