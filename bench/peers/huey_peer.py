"""Huey on SQLite storage and on Redis storage, with a process worker pool."""

from __future__ import annotations

from peers.base import Peer, venv_script
from worker_apps import HUEY_SQLITE_PATH_ENV, HUEY_STORAGE_ENV


class _HueyPeer(Peer):
    packages = ("huey",)
    batch_api = "TaskWrapper.map(args), which enqueues one message per call"
    storage: str

    def settings(self) -> dict[str, object]:
        return {
            "worker": " ".join(["huey_consumer"] + self.worker_argv()[1:]),
            "pool": f"{self.ctx.concurrency} worker processes",
            "options": "results=False; " + self.storage_options,
        }

    def worker_env(self) -> dict[str, str]:
        env = super().worker_env()
        env[HUEY_STORAGE_ENV] = self.storage
        return env

    def setup(self) -> None:
        super().setup()
        module = self.import_app("worker_apps.huey_app")
        self.huey = module.huey
        self.tasks = {"noop": module.noop, "record_latency": module.record_latency}

    def post_one(self, task: str, args: tuple) -> None:
        self.tasks[task](*args)

    def post_batch(self, task: str, args_list: list[tuple]) -> None:
        self.tasks[task].map(args_list)

    def purge(self) -> None:
        self.huey.flush()

    def outstanding_messages(self) -> int:
        # Huey deletes a message when a worker takes it, so only queued ones count.
        return self.huey.pending_count()

    def worker_argv(self) -> list[str]:
        return [
            venv_script("huey_consumer"),
            "worker_apps.huey_app.huey",
            "-w", str(self.ctx.concurrency),
            "-k", "process",
            "-q",
        ]


class HueySqlitePeer(_HueyPeer):
    name = "huey-sqlite"
    label = "Huey (SQLite storage)"
    storage = "sqlite"
    uses_redis_broker = False
    # NOTE: One SqliteHuey instance per thread, each with its own connection,
    # posted about half as fast in a check with 16 threads on 2 CPUs (huey
    # 3.5.4, SQLite 3.40.1), so the threads share the one instance.
    producer_client = (
        "one SqliteHuey instance shared by all threads; it has one SQLite "
        "connection behind a lock, so the posts commit one at a time"
    )
    storage_options = (
        "SqliteHuey defaults (WAL journal); the consumer polls every 0.1 s and "
        "backs off by 1.15x up to 10 s while the queue is empty (defaults)"
    )

    @property
    def sqlite_path(self) -> str:
        return str(self.ctx.work_dir / "huey.db")

    def worker_env(self) -> dict[str, str]:
        env = super().worker_env()
        env[HUEY_SQLITE_PATH_ENV] = self.sqlite_path
        return env

    def cleanup(self) -> None:
        huey = getattr(self, "huey", None)
        if huey is not None:
            huey.storage.close()
        super().cleanup()


class HueyRedisPeer(_HueyPeer):
    name = "huey-redis"
    label = "Huey (Redis storage)"
    packages = ("huey", "redis")
    storage = "redis"
    storage_options = "RedisHuey defaults: blocking BRPOP with a 1 s read timeout"
