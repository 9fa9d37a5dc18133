"""RQ with its forking worker class, run as a worker pool."""

from __future__ import annotations

import redis

from peers.base import Peer, venv_script
from worker_apps import QUEUE_NAME


class RQPeer(Peer):
    name = "rq"
    label = "RQ"
    packages = ("rq", "redis")
    batch_api = "Queue.enqueue_many(Queue.prepare_data(...)), one Redis pipeline per call"

    def settings(self) -> dict[str, object]:
        return {
            "worker": " ".join(["rq"] + self.worker_argv()[1:]),
            "pool": f"rq worker-pool with {self.ctx.concurrency} workers; the default "
            "Worker class forks a work horse for each job",
            "options": "result_ttl=0 on every job, so no results are kept",
        }

    def setup(self) -> None:
        super().setup()
        from rq import Queue

        module = self.import_app("worker_apps.rq_tasks")
        self.connection = redis.Redis.from_url(self.ctx.broker_url)
        self.queue = Queue(QUEUE_NAME, connection=self.connection)
        self.functions = {"noop": module.noop, "record_latency": module.record_latency}

    def post_one(self, task: str, args: tuple) -> None:
        self.queue.enqueue_call(self.functions[task], args=args, result_ttl=0)

    def post_batch(self, task: str, args_list: list[tuple]) -> None:
        from rq import Queue

        function = self.functions[task]
        self.queue.enqueue_many(
            [Queue.prepare_data(function, args=args, result_ttl=0) for args in args_list]
        )

    def purge(self) -> None:
        self.queue.empty()

    def outstanding_messages(self) -> int:
        return self.queue.count + self.queue.started_job_registry.count

    def worker_argv(self) -> list[str]:
        # NOTE: RQ's work horse calls os.setpgrp(), so stopping the worker group
        # does not signal a horse directly. A horse exits after its one job, and
        # the workers' warm shutdown on SIGTERM waits for it.
        return [
            venv_script("rq"), "worker-pool",
            "-n", str(self.ctx.concurrency),
            "-u", self.ctx.broker_url,
            "-l", "WARNING",
            QUEUE_NAME,
        ]

    def cleanup(self) -> None:
        connection = getattr(self, "connection", None)
        if connection is not None:
            connection.close()
        super().cleanup()
