"""Dramatiq with a Redis broker and its default middleware."""

from __future__ import annotations

import sys

import dramatiq

from peers.base import Peer
from worker_apps import QUEUE_NAME


class DramatiqPeer(Peer):
    """Dramatiq with the CLI's default of 8 worker threads per process."""

    name = "dramatiq"
    label = "Dramatiq (Redis broker, 8 threads per process)"
    packages = ("dramatiq", "redis")
    batch_api = "dramatiq.group(messages).run(); the Redis broker still enqueues one message per call"
    threads = 8

    def settings(self) -> dict[str, object]:
        return {
            "worker": " ".join(["dramatiq"] + self.worker_argv()[3:]),
            "pool": f"{self.ctx.concurrency} processes x {self.threads} threads",
            "options": "default middleware, no results middleware; "
            "messages are acknowledged after the actor returns",
        }

    def setup(self) -> None:
        super().setup()
        module = self.import_app("worker_apps.dramatiq_app")
        self.broker = module.broker
        self.actors = {"noop": module.noop, "record_latency": module.record_latency}

    def post_one(self, task: str, args: tuple) -> None:
        self.actors[task].send(*args)

    def post_batch(self, task: str, args_list: list[tuple]) -> None:
        actor = self.actors[task]
        dramatiq.group(actor.message(*args) for args in args_list).run()

    def purge(self) -> None:
        self.broker.flush(QUEUE_NAME)

    def outstanding_messages(self) -> int:
        # The Redis broker keeps every message in a ".msgs" hash until it is
        # acknowledged. The ".DQ" hash contains the delayed messages.
        prefix = f"{self.broker.namespace}:{QUEUE_NAME}"
        client = self.broker.client
        return int(client.hlen(f"{prefix}.msgs")) + int(client.hlen(f"{prefix}.DQ.msgs"))

    def worker_argv(self) -> list[str]:
        return [
            sys.executable, "-m", "dramatiq",
            "worker_apps.dramatiq_app",
            "--processes", str(self.ctx.concurrency),
            "--threads", str(self.threads),
            "--queues", QUEUE_NAME,
        ]

    def cleanup(self) -> None:
        broker = getattr(self, "broker", None)
        if broker is not None:
            broker.client.close()
        super().cleanup()


class DramatiqOneThreadPeer(DramatiqPeer):
    """Dramatiq with one worker thread per process, one task at a time like the others."""

    name = "dramatiq-1thread"
    label = "Dramatiq (Redis broker, 1 thread per process)"
    threads = 1
