"""Celery with a Redis broker, a prefork pool and no result backend."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

from peers.base import Peer
from worker_apps import QUEUE_NAME

BATCH_MAX_COMMANDS = 1000


class CeleryPeer(Peer):
    name = "celery"
    label = "Celery (Redis broker)"
    packages = ("celery", "kombu", "redis")
    batch_api = (
        "apply_async(producer=...) inside kombu Producer.batch(), which sends "
        f"the LPUSH commands in Redis pipelines of up to {BATCH_MAX_COMMANDS}"
    )
    producer_client = (
        "one kombu connection and Producer per thread, passed to "
        "apply_async(producer=...)"
    )
    # Its prefork pool runs tasks in processes, as Conveyor's --processes does.
    supports_cpu_drain = True

    def settings(self) -> dict[str, object]:
        return {
            "worker": " ".join(["celery"] + self.worker_argv()[3:]),
            "pool": f"prefork, {self.ctx.concurrency} processes",
            "options": "task_acks_late=True, task_ignore_result=True, no result backend, "
            "prefetch multiplier 4 (default)",
        }

    def setup(self) -> None:
        super().setup()
        module = self.import_app("worker_apps.celery_app")
        self.app = module.app
        self.tasks = {"noop": module.noop, "record_latency": module.record_latency,
                      "cpu_work": module.cpu_work}

    def post_one(self, task: str, args: tuple) -> None:
        self.tasks[task].apply_async(args)

    @contextlib.contextmanager
    def open_producer(self) -> Iterator[Callable[[str, tuple], None]]:
        # Plain apply_async() would borrow a producer from the app's pool,
        # which keeps at most broker_pool_limit (default 10) connections, so
        # more threads than that would wait for one.
        connection = self.app.connection_for_write()
        try:
            connection.ensure_connection(max_retries=1)
            producer = self.app.amqp.Producer(connection)
            yield lambda task, args: self.tasks[task].apply_async(args, producer=producer)
        finally:
            connection.release()

    def post_batch(self, task: str, args_list: list[tuple]) -> None:
        signature = self.tasks[task]
        with self.app.producer_or_acquire() as producer:
            with producer.batch(max_size=BATCH_MAX_COMMANDS):
                for args in args_list:
                    signature.apply_async(args, producer=producer)

    def purge(self) -> None:
        with self.app.connection_for_write() as connection:
            connection.default_channel.queue_purge(QUEUE_NAME)

    def outstanding_messages(self) -> int:
        # kombu's Redis transport keeps a queue in a list named after it and
        # keeps delivered, unacknowledged messages in the "unacked" hash.
        with self.app.connection_for_write() as connection:
            client = connection.default_channel.client
            return int(client.llen(QUEUE_NAME)) + int(client.hlen("unacked"))

    def worker_argv(self) -> list[str]:
        return [
            sys.executable, "-m", "celery",
            "-A", "worker_apps.celery_app", "worker",
            "-P", "prefork", "-c", str(self.ctx.concurrency),
            "-Q", QUEUE_NAME,
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            "-l", "WARNING", "-n", "bench-celery@%h",
        ]

    def cleanup(self) -> None:
        app = getattr(self, "app", None)
        if app is not None:
            app.pool.force_close_all()
        super().cleanup()
