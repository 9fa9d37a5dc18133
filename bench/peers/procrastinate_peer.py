"""Procrastinate on PostgreSQL, in a schema of its own, with its worker CLI."""

from __future__ import annotations

from peers.base import Peer, SystemUnavailable, create_postgres_schema, venv_script
from worker_apps import PROCRASTINATE_CONNINFO_ENV, QUEUE_NAME

# Messages per batch_defer call, the same as Conveyor's batch post.
BATCH_SIZE = 1000
# The worker logs every job at INFO. The other systems' workers run at warning
# level, so Procrastinate does too.
LOG_LEVEL = "warning"
# Job states that still count as queued or taken but not yet finished.
OUTSTANDING_STATES = ("todo", "doing")


class ProcrastinatePeer(Peer):
    """Procrastinate with one worker process that runs as many jobs at once as the others have processes."""

    name = "procrastinate"
    label = "Procrastinate (PostgreSQL)"
    packages = ("procrastinate", "psycopg", "psycopg-pool")
    batch_api = (
        f"task.batch_defer(*kwargs) in chunks of {BATCH_SIZE}, one INSERT through "
        "procrastinate_defer_jobs_v1 per call"
    )
    producer_client = (
        "one App shared by all threads; its psycopg ConnectionPool (up to 32 "
        "connections) gives each call in flight its own connection"
    )
    uses_redis_broker = False

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.schema = None
        self.conn = None
        self.app = None

    def settings(self) -> dict[str, object]:
        return {
            "worker": " ".join(["procrastinate"] + self.worker_argv()[1:]),
            "pool": f"one worker process that runs up to {self.ctx.concurrency} jobs at "
            "once; sync task functions run in threads (asgiref sync_to_async)",
            "options": "--delete-jobs successful, so a finished job's row is deleted "
            "like an acked Conveyor message and no results are kept; LISTEN/NOTIFY "
            "on (default), polling every 5 s as a fallback (default); a fresh "
            "schema with a random name, created with the schema manager's "
            "apply_schema() and dropped after the run",
        }

    def worker_env(self) -> dict[str, str]:
        env = super().worker_env()
        env[PROCRASTINATE_CONNINFO_ENV] = self.schema.url
        return env

    def setup(self) -> None:
        super().setup()
        self.schema = create_postgres_schema(self.ctx, "bench_procrastinate")
        try:
            module = self.import_app("worker_apps.procrastinate_app")
        except ImportError as error:
            raise SystemUnavailable(f"cannot import procrastinate: {error}") from error
        # Opened synchronously, the app defers through a sync connection pool.
        # The worker process opens its own async pool.
        self.app = module.app.open()
        self.app.schema_manager.apply_schema()
        self.tasks = {"noop": module.noop, "record_latency": module.record_latency}
        self.conn = self.schema.connect()

    def post_one(self, task: str, args: tuple) -> None:
        self.tasks[task].defer(**self._kwargs(task, args))

    def post_batch(self, task: str, args_list: list[tuple]) -> None:
        task_object = self.tasks[task]
        for start in range(0, len(args_list), BATCH_SIZE):
            chunk = args_list[start:start + BATCH_SIZE]
            task_object.batch_defer(*[self._kwargs(task, args) for args in chunk])

    def after_bulk_post(self) -> None:
        if self.ctx.postgres_analyze:
            self.schema.analyze()

    @staticmethod
    def _kwargs(task: str, args: tuple) -> dict:
        name = "index" if task == "noop" else "enqueued_at"
        return {name: args[0]}

    def purge(self) -> None:
        self.conn.execute("DELETE FROM procrastinate_jobs WHERE queue_name = %s", (QUEUE_NAME,))

    def outstanding_messages(self) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM procrastinate_jobs "
            "WHERE queue_name = %s AND status = ANY(%s::procrastinate_job_status[])",
            (QUEUE_NAME, list(OUTSTANDING_STATES)),
        ).fetchone()
        return int(row[0])

    def worker_argv(self) -> list[str]:
        return [
            venv_script("procrastinate"),
            "--app", "worker_apps.procrastinate_app.app",
            "--log-level", LOG_LEVEL,
            "worker",
            "--queues", QUEUE_NAME,
            "--concurrency", str(self.ctx.concurrency),
            "--delete-jobs", "successful",
        ]

    def cleanup(self) -> None:
        try:
            self.stop_workers()
            if self.app is not None:
                app, self.app = self.app, None
                app.close()
            if self.conn is not None:
                conn, self.conn = self.conn, None
                conn.close()
        finally:
            # Drop the schema last, because the worker and the pools use it.
            if self.schema is not None:
                self.schema.drop()
            super().cleanup()
