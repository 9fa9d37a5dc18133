"""Benchmark Conveyor and its peers on this machine in one run.

Runs three workloads for each selected system, one system at a time: W1 post
throughput, W2 drain of pre-posted no-op tasks and W3 pickup latency at a steady
rate. The systems that support them then run W4, a drain of CPU-bound tasks,
and the batch comparison, a batch task against a plain task (see
worker_modes.py). For the Conveyor stores it then runs the backlog test (see
backlog.py). ``--workloads`` selects among them. Writes the results as JSON
and renders docs/benchmarks.md from them. Start it with bench/run.sh, which
prepares the virtual environment.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import logging
import os
import platform
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import traceback
from pathlib import Path
from urllib.parse import urlsplit

import redis
from rich.logging import RichHandler

import psycopg

import backlog
import cpu_work
import postgres
from peers import PEERS, load_peer_class
from peers.base import BenchContext, SystemUnavailable
from probe import Probe
from procs import BENCH_DIR
import report
import worker_modes
import workloads

log = logging.getLogger("bench")
console = workloads.console

DEFAULT_SYSTEMS = list(PEERS)
# Offset of each system's broker database from --redis-db-base. Fixed per system
# so that a database always contains the same system's keys.
# The two Dramatiq variants share one database, which is flushed between systems.
REDIS_DB_OFFSETS = {"celery": 0, "dramatiq": 1, "dramatiq-1thread": 1, "rq": 2, "huey-redis": 3}
PROBE_DB_OFFSET = 4
FULL_SIZES = {"n": 20000, "post_n": 10000, "latency_seconds": 10.0,
              "backlog_levels": "0,100000,1000000", "backlog_dequeues": 20000,
              "cpu_n": 2000, "batch_items": 20000}
QUICK_SIZES = {"n": 2000, "post_n": 1000, "latency_seconds": 3.0,
               "backlog_levels": "0,10000", "backlog_dequeues": 2000,
               "cpu_n": 500, "batch_items": 5000}
# Every workload, in the order in which each system runs them.
WORKLOADS = ("w1", "w2", "w3", "w4", "batch", "backlog")
# Threads that reserve and ack while the backlog test drains its queue. The
# drain is not part of any reported rate, so more threads only save time.
BACKLOG_DRAIN_THREADS = 4
# Fraction of all CPUs' time that counts as a quiet machine before a system starts.
QUIET_CPU_THRESHOLD = 0.2
RESULTS_DIR = BENCH_DIR / "results"
DOCS_PATH = BENCH_DIR.parent / "docs" / "benchmarks.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure post throughput, drain rate and pickup latency of "
        "Conveyor and its peers on this machine.",
    )
    parser.add_argument(
        "--systems", default=",".join(DEFAULT_SYSTEMS),
        help=f"comma-separated systems to run, in order (default: all of {', '.join(PEERS)})",
    )
    parser.add_argument("--n", type=int, default=None,
                        help="W2: no-op tasks posted before the workers start (default: 20000)")
    parser.add_argument("--post-n", type=int, default=None,
                        help="W1: messages posted in each mode: one per call, one per call "
                        "from concurrent threads, and batched (default: 10000)")
    parser.add_argument("--producers", type=int, default=16,
                        help="W1: producer threads that post one message per call at the "
                        "same time (default: 16)")
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="messages per batch post call in W1 and W2 (default: 1000)")
    parser.add_argument("--latency-rate", type=float, default=200.0,
                        help="W3: tasks posted per second (default: 200)")
    parser.add_argument("--latency-seconds", type=float, default=None,
                        help="W3: seconds of posting at that rate (default: 10)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1,
                        help="worker processes per system, task threads of the one "
                        "Conveyor worker process, and task slots that conveyor-processes "
                        "splits over one child process per CPU (default: the number of CPUs, "
                        f"{os.cpu_count()} here)")
    parser.add_argument("--drain-timeout", type=float, default=300.0,
                        help="W2: seconds to wait for the drain before giving up (default: 300)")
    parser.add_argument("--settle-timeout", type=float, default=60.0,
                        help="W3: seconds to wait for the last tasks after posting stops (default: 60)")
    parser.add_argument("--quiet-wait", type=float, default=30.0,
                        help="seconds to wait before each system for the CPUs to be less than "
                        f"{QUIET_CPU_THRESHOLD * 100:.0f}%% busy with other work; 0 disables the wait (default: 30)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run with smaller defaults (--n 2000, --post-n 1000, "
                        "--latency-seconds 3, --backlog-levels 0,10000, --backlog-dequeues "
                        "2000, --cpu-n 500, --batch-items 5000), results to "
                        "bench/results/quick.json and no docs update; "
                        "explicit options still apply")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379",
                        help="Redis server on a loopback address, without a database number "
                        "(default: redis://127.0.0.1:6379)")
    parser.add_argument("--redis-db-base", type=int, default=10,
                        help="first of the 5 Redis databases the benchmark flushes and uses "
                        "(default: 10, so databases 10-14)")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="PostgreSQL database on a loopback address, without options; "
                        "each PostgreSQL-based system creates a schema with a random name "
                        "in it and drops it afterwards "
                        "(default: postgresql://postgres@127.0.0.1:5432/test)")
    parser.add_argument("--postgres-analyze", action=argparse.BooleanOptionalAction,
                        default=True,
                        help="run ANALYZE on a PostgreSQL-based system's tables after W2's "
                        "pre-post and after each backlog post, in place of the auto-analyze "
                        "of a server whose autovacuum is on (default: on)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated workloads to run: w1 (post), w2 (drain), "
                        "w3 (latency), w4 (drain of CPU-bound tasks; conveyor, "
                        "conveyor-processes and celery), batch (batch task against plain "
                        "task; conveyor and conveyor-processes), backlog (conveyor and "
                        "conveyor-postgres). A system that runs none of them is skipped "
                        f"(default: all, {','.join(WORKLOADS)})")
    parser.add_argument("--cpu-n", type=int, default=None,
                        help="W4: CPU-bound tasks posted before the workers start "
                        "(default: 2000)")
    parser.add_argument("--cpu-iterations", type=int, default=cpu_work.DEFAULT_ITERATIONS,
                        help="W4: iterations of the pure-Python loop in each task "
                        f"(default: {cpu_work.DEFAULT_ITERATIONS}, about 2 ms of one core "
                        "of the machine where W4 was written; the report shows the time "
                        "measured in the run)")
    parser.add_argument("--batch-items", type=int, default=None,
                        help="batch comparison: items posted for the plain task and again "
                        "for the batch task (default: 20000)")
    parser.add_argument("--backlog", action=argparse.BooleanOptionalAction, default=None,
                        help="add the backlog test to --workloads, or with --no-backlog "
                        "remove it (default: as --workloads says)")
    parser.add_argument("--backlog-only", action="store_true",
                        help="run only the backlog test, and only for the selected systems "
                        "that support it; the same as --workloads backlog")
    parser.add_argument("--backlog-levels", default=None,
                        help="backlog test: comma-separated numbers of messages waiting in "
                        "the queue while the dequeues are measured (default: 0,100000,1000000)")
    parser.add_argument("--backlog-dequeues", type=int, default=None,
                        help="backlog test: messages reserved and acked at each level "
                        "(default: 20000)")
    parser.add_argument("--no-churn", dest="churn", action="store_false",
                        help="backlog test: skip draining the queue and the last measurement "
                        "on the drained table")
    parser.add_argument("--json", type=Path, default=None,
                        help="results file (default: bench/results/latest.json, "
                        "or quick.json with --quick)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="Markdown page to render (default: docs/benchmarks.md; "
                        "not written with --quick unless given)")
    parser.add_argument("--no-docs", action="store_true", help="do not render the Markdown page")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)

    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    for option, value in sizes.items():
        if getattr(args, option) is None:
            setattr(args, option, value)
    if args.json is None:
        args.json = RESULTS_DIR / ("quick.json" if args.quick else "latest.json")
    if args.docs is None and not args.quick:
        args.docs = DOCS_PATH
    if args.no_docs:
        args.docs = None

    args.systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = [name for name in args.systems if name not in PEERS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    for option in ("n", "post_n", "producers", "batch_size", "concurrency", "backlog_dequeues",
                   "cpu_n", "cpu_iterations", "batch_items"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, "
                         f"not {getattr(args, option)}")
    if args.latency_rate <= 0 or args.latency_seconds <= 0:
        parser.error("--latency-rate and --latency-seconds must be positive")
    try:
        validate_loopback_redis_url(args.redis_url)
        postgres.validate_loopback_postgres_url(args.postgres_url)
        args.backlog_levels = parse_backlog_levels(args.backlog_levels)
        args.workloads = parse_workloads(args.workloads)
    except ValueError as error:
        parser.error(str(error))
    if args.backlog is True and "backlog" not in args.workloads:
        args.workloads.append("backlog")
    if args.backlog is False and "backlog" in args.workloads:
        args.workloads.remove("backlog")
    if args.backlog_only:
        args.workloads = ["backlog"]
    args.backlog = "backlog" in args.workloads
    args.backlog_only = args.workloads == ["backlog"]
    return args


def parse_workloads(text: str) -> list[str]:
    """Return the workloads of ``--workloads`` in the order they run, or raise ValueError."""
    names = {item.strip().lower() for item in text.split(",") if item.strip()}
    unknown = sorted(names - set(WORKLOADS))
    if unknown:
        raise ValueError(f"invalid --workloads {text!r}: unknown {', '.join(unknown)}; "
                         f"choose from {','.join(WORKLOADS)}")
    if not names:
        raise ValueError(f"invalid --workloads {text!r}: name at least one of "
                         f"{','.join(WORKLOADS)}")
    return [name for name in WORKLOADS if name in names]


def parse_backlog_levels(text: str) -> list[int]:
    """Return the levels of ``--backlog-levels`` in ascending order, or raise ValueError."""
    try:
        levels = sorted({int(item.replace("_", "")) for item in text.split(",") if item.strip()})
    except ValueError:
        raise ValueError(f"invalid --backlog-levels {text!r}: expected comma-separated "
                         "whole numbers such as 0,100000,1000000") from None
    if not levels or levels[0] < 0:
        raise ValueError(f"invalid --backlog-levels {text!r}: give one or more numbers, "
                         "none negative")
    return levels


def validate_loopback_redis_url(url: str) -> None:
    """Raise ValueError unless ``url`` is a redis:// URL on a loopback address without a database."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"invalid --redis-url {url!r}: expected redis://HOST:PORT")
    if parts.path.strip("/"):
        raise ValueError(f"invalid --redis-url {url!r}: leave out the database number, "
                         "use --redis-db-base instead")
    host = parts.hostname or ""
    if host != "localhost":
        try:
            is_loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            is_loopback = False
        if not is_loopback:
            raise ValueError(f"invalid --redis-url {url!r}: the benchmark only loads "
                             "loopback addresses such as 127.0.0.1")


def filesystem_of(path: Path) -> str:
    """Return the type and device of the mount that contains ``path``, from /proc/mounts."""
    target = str(path.resolve())
    best_mount, best = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mount_point, fs_type = fields[0], fields[1], fields[2]
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best_mount):
            best_mount, best = mount_point, f"{fs_type} on {device}, mounted at {mount_point}"
    return best


def postgres_machine_info(url: str) -> dict:
    """Return the PostgreSQL server's version and settings, or the error that prevented it."""
    try:
        info = postgres.server_info(url)
    except psycopg.Error as error:
        return {"error": f"{type(error).__name__}: {error}".strip()}
    data_dir = Path(info["data_directory"])
    if data_dir.is_absolute():
        info["data_directory_filesystem"] = filesystem_of(data_dir)
    return info


def machine_info(redis_url: str, postgres_url: str, work_root: Path) -> dict:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    client = redis.Redis.from_url(redis_url)
    try:
        redis_version = client.info("server").get("redis_version", "unknown")
        persistence = client.config_get("appendonly")
        persistence.update(client.config_get("appendfsync"))
        persistence.update(client.config_get("save"))
    finally:
        client.close()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_gib": memory_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": redis_version,
        # CONFIG GET values, which show whether Redis writes anything to disk.
        "redis_persistence": persistence,
        "sqlite": sqlite3.sqlite_version,
        "postgres": postgres_machine_info(postgres_url),
        # Where the SQLite-based systems keep their files, which sets their fsync cost.
        "state_dir": str(work_root.parent),
        "state_dir_filesystem": filesystem_of(work_root),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def read_cpu_times() -> tuple[int, int]:
    """Return the busy and total jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    total = sum(fields[:8])  # user through steal; guest time is already in user
    return total - idle, total


def sample_cpu_busy(seconds: float = 1.0) -> float:
    """Return the fraction of all CPUs' time spent busy during the next ``seconds``."""
    busy_before, total_before = read_cpu_times()
    time.sleep(seconds)
    busy_after, total_after = read_cpu_times()
    elapsed = total_after - total_before
    return (busy_after - busy_before) / elapsed if elapsed else 0.0


def wait_for_quiet_machine(max_wait: float, threshold: float) -> float:
    """Sample CPU use until it drops below ``threshold`` or ``max_wait`` runs out.

    Returns the last sample. Other processes on the machine compete with the
    system under test, so the runner records this value for every system.
    """
    deadline = time.monotonic() + max_wait
    busy = sample_cpu_busy()
    while busy >= threshold and time.monotonic() < deadline:
        log.info("CPUs are %.0f%% busy before the next system; waiting for other work "
                 "to finish (up to %.0f s more)", busy * 100, deadline - time.monotonic())
        busy = sample_cpu_busy(2.0)
    return busy


def run_workloads(peer, probe: Probe, options: workloads.WorkloadOptions,
                  selected: set[str], record: dict) -> None:
    """Run the selected ones of W1-W3 on a set-up peer and store their results in ``record``."""
    if "w1" in selected:
        record["w1_post"] = post = workloads.measure_post(peer, options)
        console.print(f"  W1 post: {post['single']['messages_per_second']:,.0f} msg/s one per "
                      f"call, {post['concurrent']['messages_per_second']:,.0f} msg/s one per "
                      f"call from {options.producers} threads, "
                      f"{post['batch']['messages_per_second']:,.0f} msg/s batched")

    if "w2" in selected:
        record["w2_drain"] = drain = workloads.measure_drain(peer, probe, options)
        console.print(f"  W2 drain: {drain['tasks_per_second'] or 0:,.0f} tasks/s "
                      f"({drain['completed']} of {drain['tasks']})")
        if drain.get("timed_out"):
            # Leftover no-op tasks would delay the latency tasks, so start W3 on an
            # empty queue.
            peer.stop_workers()
            peer.purge()

    if "w3" in selected:
        if peer.workers is None:
            peer.start_workers()
        record["w3_latency"] = latency = workloads.measure_latency(peer, probe, options)
        console.print(f"  W3 latency: p50 {latency['p50_ms']:.1f} ms, "
                      f"p99 {latency['p99_ms']:.1f} ms")


def run_system(name: str, args: argparse.Namespace, options: workloads.WorkloadOptions,
               mode_options: worker_modes.WorkerModeOptions,
               backlog_options: backlog.BacklogOptions, work_root: Path, log_dir: Path) -> dict:
    """Run the selected workloads that one system supports and return its result record.

    Returns a record also after a failure.
    """
    db_base = args.redis_db_base
    ctx = BenchContext(
        redis_url=args.redis_url,
        broker_db=db_base + REDIS_DB_OFFSETS.get(name, 0),
        probe_url=f"{args.redis_url.rstrip('/')}/{db_base + PROBE_DB_OFFSET}",
        probe_prefix=f"conveyor-bench:probe:{name}",
        concurrency=args.concurrency,
        work_dir=work_root / name,
        log_dir=log_dir,
        postgres_url=args.postgres_url,
        postgres_analyze=args.postgres_analyze,
    )
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    record: dict = {"status": "running"}
    record["cpu_busy_before"] = round(
        wait_for_quiet_machine(args.quiet_wait, QUIET_CPU_THRESHOLD), 3
    )
    probe = Probe(ctx.probe_url, ctx.probe_prefix)
    peer = None
    started = time.monotonic()
    try:
        peer_class = load_peer_class(name)
        peer = peer_class(ctx)
        record["label"] = peer.label
        record["versions"] = peer.versions()
        record["settings"] = peer.settings()
        record["batch_api"] = peer.batch_api
        record["producer_client"] = peer.producer_client
        console.print(f"[bold]{peer.label}[/bold]: setting up")
        peer.setup()
        selected = set(args.workloads)
        run_workloads(peer, probe, options, selected, record)
        worker_modes.run_worker_modes(peer, probe, mode_options, selected, record)
        if args.backlog and peer.supports_backlog:
            record["backlog"] = backlog.measure_backlog(peer, backlog_options)
        record["status"] = "ok"
    except SystemUnavailable as error:
        record["status"] = "not available"
        record["error"] = str(error)
        console.print(f"  [yellow]not available:[/yellow] {error}")
    except Exception as error:
        record["status"] = "failed"
        record["error"] = f"{type(error).__name__}: {error}"
        log.error("%s failed:\n%s", name, traceback.format_exc())
    finally:
        if peer is not None:
            try:
                peer.cleanup()
            except Exception:
                log.exception("cleanup of %s failed; check for leftover processes", name)
        try:
            probe.reset()
        finally:
            probe.client.close()
        record["elapsed_seconds"] = round(time.monotonic() - started, 1)
        # Sampled after this system's workers stopped, so it shows other work only.
        record["cpu_busy_after"] = round(sample_cpu_busy(), 3)
    return record


def runs_any_workload(name: str, selected: list[str]) -> bool:
    """Return whether a system supports one of the selected workloads.

    Returns True for a system whose adapter cannot be imported, so that it
    stays selected and the run reports it as not available.
    """
    if {"w1", "w2", "w3"} & set(selected):
        return True
    try:
        peer_class = load_peer_class(name)
    except SystemUnavailable:
        return True
    supported = {"w4": peer_class.supports_cpu_drain,
                 "batch": peer_class.supports_batch_tasks,
                 "backlog": peer_class.supports_backlog}
    return any(supported[workload] for workload in selected)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"received signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Libraries log at WARNING and above only. The SDK clients log every
    # request at INFO, which would slow the posting loops down.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # SIGTERM unwinds like Ctrl-C, so every system's cleanup still stops its workers.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)

    options = workloads.WorkloadOptions(
        drain_n=args.n,
        post_n=args.post_n,
        batch_size=args.batch_size,
        producers=args.producers,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds,
        drain_timeout=args.drain_timeout,
        settle_timeout=args.settle_timeout,
    )
    mode_options = worker_modes.WorkerModeOptions(
        cpu_n=args.cpu_n,
        cpu_iterations=args.cpu_iterations,
        batch_items=args.batch_items,
        drain=options,
    )
    backlog_options = backlog.BacklogOptions(
        levels=args.backlog_levels,
        dequeues=args.backlog_dequeues,
        batch_size=args.batch_size,
        churn=args.churn,
        drain_threads=BACKLOG_DRAIN_THREADS,
    )
    args.systems = [name for name in args.systems if runs_any_workload(name, args.workloads)]
    if not args.systems:
        log.error("none of the selected systems supports the workloads %s; see --help",
                  ",".join(args.workloads))
        return 2
    work_root = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    try:
        machine = machine_info(args.redis_url, args.postgres_url, work_root)
    except redis.ConnectionError as error:
        log.error("cannot connect to Redis at %s: %s; start redis-server or pass --redis-url",
                  args.redis_url, error)
        shutil.rmtree(work_root, ignore_errors=True)
        return 2
    results = {
        "machine": machine,
        "run": {
            "quick": args.quick,
            "systems": args.systems,
            "concurrency": args.concurrency,
            "workloads": args.workloads,
            "w1_post_n": args.post_n,
            "w1_producers": args.producers,
            "w2_n": args.n,
            "batch_size": args.batch_size,
            "w3_rate": args.latency_rate,
            "w3_seconds": args.latency_seconds,
            "w4_n": args.cpu_n,
            "w4_iterations": args.cpu_iterations,
            "batch_items": args.batch_items,
            "quiet_cpu_threshold": QUIET_CPU_THRESHOLD,
            "postgres_analyze": args.postgres_analyze,
            "backlog": args.backlog,
            "backlog_only": args.backlog_only,
            "backlog_levels": args.backlog_levels,
            "backlog_dequeues": args.backlog_dequeues,
            "backlog_churn": args.churn,
            "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        },
        "systems": {},
    }
    console.print(f"Benchmark of {', '.join(args.systems)} on {results['machine']['nproc']} CPUs "
                  f"({results['machine']['cpu_model']}), concurrency {args.concurrency}")

    log_dir = RESULTS_DIR / "logs"
    # Each run starts with empty worker logs. Within a run, logs are appended to.
    for old_log in log_dir.glob("*.log"):
        old_log.unlink()
    started = time.monotonic()
    try:
        for name in args.systems:
            results["systems"][name] = run_system(name, args, options, mode_options,
                                                  backlog_options, work_root, log_dir)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    results["run"]["elapsed_seconds"] = round(time.monotonic() - started, 1)
    if "error" in machine["postgres"]:
        # The server may have been restarting when the run started.
        machine["postgres"] = postgres_machine_info(args.postgres_url)

    write_json(args.json, results)
    console.print(f"Results written to {args.json}")
    if args.docs is not None:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(report.render(results))
        console.print(f"Report written to {args.docs}")
    return 0 if all(r["status"] in ("ok", "not available") for r in results["systems"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
