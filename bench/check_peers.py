"""Check each adapter's post, count and purge calls against its real system.

Run ``.venv/bin/python check_peers.py [SYSTEM ...]`` from bench/ after
``run.sh`` has built the environment. No worker runs, so every posted message
must show up in ``outstanding_messages`` until ``purge`` removes it.
"""

from __future__ import annotations

import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from peers import PEERS, load_peer_class
from peers.base import BenchContext, SystemUnavailable
from run import PROBE_DB_OFFSET, REDIS_DB_OFFSETS, RESULTS_DIR

REDIS_URL = "redis://127.0.0.1:6379"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_DB_BASE = 10
MESSAGES_PER_MODE = 5


def check_system(name: str, work_root: Path) -> str:
    """Return "ok", or a description of the first failed check."""
    ctx = BenchContext(
        redis_url=REDIS_URL,
        broker_db=REDIS_DB_BASE + REDIS_DB_OFFSETS.get(name, 0),
        probe_url=f"{REDIS_URL}/{REDIS_DB_BASE + PROBE_DB_OFFSET}",
        probe_prefix=f"conveyor-bench:check:{name}",
        concurrency=1,
        work_dir=work_root / name,
        log_dir=RESULTS_DIR / "logs",
        postgres_url=POSTGRES_URL,
    )
    ctx.work_dir.mkdir(parents=True)
    peer = load_peer_class(name)(ctx)
    try:
        peer.setup()
        for index in range(MESSAGES_PER_MODE):
            peer.post_one("noop", (index,))
        peer.post_batch("noop", [(index,) for index in range(MESSAGES_PER_MODE)])
        # W1's concurrent mode posts through open_producer from other threads.
        with ThreadPoolExecutor(max_workers=2) as executor:
            for future in [executor.submit(_post_through_producer, peer) for _ in range(2)]:
                future.result()
        expected = 4 * MESSAGES_PER_MODE + _post_workload_tasks(peer)
        outstanding = peer.outstanding_messages()
        if outstanding != expected:
            return f"outstanding_messages() returned {outstanding} after {expected} posts"
        peer.purge()
        outstanding = peer.outstanding_messages()
        if outstanding != 0:
            return f"outstanding_messages() returned {outstanding} after purge()"
        return "ok"
    finally:
        peer.cleanup()


def _post_workload_tasks(peer) -> int:
    """Post a batch of each task that W4 and the batch comparison use; return how many."""
    tasks = []
    if peer.supports_cpu_drain:
        tasks.append(("cpu_work", (1,)))
    if peer.supports_batch_tasks:
        tasks.extend([("add_item", (1,)), ("add_items", (1,))])
    for task, args in tasks:
        peer.post_batch(task, [args] * MESSAGES_PER_MODE)
    return len(tasks) * MESSAGES_PER_MODE


def _post_through_producer(peer) -> None:
    with peer.open_producer() as post_one:
        for index in range(MESSAGES_PER_MODE):
            post_one("noop", (index,))


def main(argv: list[str]) -> int:
    names = argv[1:] or list(PEERS)
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        print(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
        return 2
    failures = 0
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-check-") as work_root:
        for name in names:
            try:
                outcome = check_system(name, Path(work_root))
            except SystemUnavailable as error:
                outcome = f"not available: {error}"
            if outcome != "ok" and not outcome.startswith("not available"):
                failures += 1
            print(f"{name}: {outcome}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
