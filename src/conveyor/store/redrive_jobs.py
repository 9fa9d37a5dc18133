"""Redrive jobs, stored and run the same way by both stores.

A job moves a DLQ's dead messages back to their source queues in chunks,
in post order. Each chunk runs in one transaction that moves its messages
and advances the job's `cursor_seq` and `moved` together, so a crash
between chunks neither loses nor repeats a message. Messages keep their
seq, so FIFO order survives. A job only moves messages past its cursor:
one that is dead-lettered again after the job passed it stays dead, which
keeps a job from looping on a message that keeps failing.

Each function takes the transaction's `execute(query, params)` and the
store's module of flow statements, as `flow_rows` does.
"""

from __future__ import annotations

import logging
from types import ModuleType
from typing import Any, Callable

from ..errors import RedriveJobNotFound
from ..models import RedriveJob
from ..validation import new_message_id

logger = logging.getLogger(__name__)

Execute = Callable[[str, Any], Any]
# Moves the given (seq, id, source_queue) rows in the caller's transaction
# and returns how many moved; rows whose source queue is gone stay dead.
MoveRows = Callable[[list[tuple]], int]

ACTIVE = "active"
DONE = "done"
CANCELLED = "cancelled"
FAILED = "failed"
JOB_STATES = (ACTIVE, DONE, CANCELLED, FAILED)
# Finished jobs are deleted this long after they finished.
JOB_RETENTION_S = 30 * 86_400.0


def create_job(
    execute: Execute,
    sql: ModuleType,
    dlq: str,
    now: float,
    rate_per_s: float | None = None,
    limit: int | None = None,
    source_queue: str | None = None,
    dead_after: float | None = None,
) -> RedriveJob:
    """Store a new active job; a server's runner picks it up."""
    job_id = new_message_id()
    execute(
        sql.INSERT_JOB,
        (job_id, dlq, source_queue, dead_after, limit, rate_per_s, now, now),
    )
    logger.info(
        "Redrive job %s created for DLQ %s (source queue %s, dead after %s, limit %s, "
        "rate %s per second)",
        job_id, dlq, source_queue or "any", dead_after, limit or "none",
        rate_per_s or "unlimited",
    )
    return get_job(execute, sql, job_id)


def get_job(execute: Execute, sql: ModuleType, job_id: str, locked: bool = False) -> RedriveJob:
    """Return a job, or raise RedriveJobNotFound.

    With `locked`, the PostgreSQL statement locks the job's row.
    """
    query = sql.SELECT_JOB_LOCKED if locked else sql.SELECT_JOB
    row = execute(query, (job_id,)).fetchone()
    if row is None:
        raise RedriveJobNotFound(
            f"no redrive job with id {job_id!r} is stored; list jobs with "
            "'conveyor dlq jobs' or GET /v1/redrive-jobs"
        )
    return job_from_row(row)


def list_jobs(
    execute: Execute, sql: ModuleType, dlq: str | None, state: str | None, limit: int
) -> list[RedriveJob]:
    """Return jobs, newest first, optionally of one DLQ or in one state."""
    params = {"dlq": dlq, "state": state, "limit": limit}
    return [job_from_row(row) for row in execute(sql.SELECT_JOBS, params).fetchall()]


def cancel_job(execute: Execute, sql: ModuleType, job_id: str, now: float) -> RedriveJob:
    """Cancel an active job; a finished one is returned unchanged.

    The messages that earlier chunks moved stay moved.
    """
    get_job(execute, sql, job_id, locked=True)
    if execute(sql.CANCEL_JOB, (now, job_id)).rowcount:
        logger.info("Redrive job %s cancelled", job_id)
    return get_job(execute, sql, job_id)


def claim_jobs(
    execute: Execute, sql: ModuleType, owner: str, limit: int, lease_s: float, now: float
) -> list[RedriveJob]:
    """Claim up to `limit` active jobs that no server holds a lease on."""
    params = {"owner": owner, "lease_until": now + lease_s, "now": now, "limit": limit}
    jobs = [job_from_row(row) for row in execute(sql.CLAIM_JOBS, params).fetchall()]
    for job in jobs:
        logger.info(
            "Running redrive job %s of DLQ %s from post position %d (%d moved so far)",
            job.id, job.dlq, job.cursor_seq, job.moved,
        )
    return jobs


def release_jobs(execute: Execute, sql: ModuleType, owner: str) -> int:
    """Give up the leases of `owner`, so another server may claim its jobs at once."""
    return execute(sql.RELEASE_JOBS, (owner,)).rowcount


def delete_old_jobs(execute: Execute, sql: ModuleType, now: float) -> None:
    execute(sql.DELETE_OLD_JOBS, (now - JOB_RETENTION_S,))


def run_chunk(
    execute: Execute,
    sql: ModuleType,
    job_id: str,
    owner: str,
    max_messages: int,
    lease_s: float,
    now: float,
    dlq_exists: Callable[[str], bool],
    move_rows: MoveRows,
) -> RedriveJob:
    """Move up to `max_messages` of a job's messages and advance its cursor.

    Returns the job as stored after the chunk. A job that is no longer
    active, or whose lease `owner` no longer holds, is returned unchanged,
    and the caller stops running it. `max_messages` 0 only renews the lease.
    """
    row = execute(sql.SELECT_JOB_LOCKED, (job_id,)).fetchone()
    if row is None:
        raise RedriveJobNotFound(f"no redrive job with id {job_id!r} is stored")
    job = job_from_row(row)
    if job.state != ACTIVE or row[13] != owner:
        return job
    if not dlq_exists(job.dlq):
        return _finish(execute, sql, job, FAILED, now, f"DLQ {job.dlq!r} no longer exists")

    requested = max_messages
    if job.limit is not None:
        requested = min(requested, job.limit - job.moved)
    moved = 0
    cursor = job.cursor_seq
    finished = job.limit is not None and job.moved >= job.limit
    if requested > 0:
        params = {
            "dlq": job.dlq, "cursor": cursor, "source": job.source_queue,
            "after": job.dead_after, "limit": requested,
        }
        rows = execute(sql.SELECT_JOB_MESSAGES, params).fetchall()
        moved = move_rows(rows)
        cursor = rows[-1][0] if rows else cursor
        reached_limit = job.limit is not None and job.moved + moved >= job.limit
        finished = len(rows) < requested or reached_limit

    job.moved += moved
    job.cursor_seq = cursor
    if finished:
        return _finish(execute, sql, job, DONE, now)
    execute(
        sql.UPDATE_JOB,
        (ACTIVE, job.moved, cursor, None, owner, now + lease_s, now, job_id),
    )
    job.updated_at = now
    job.claimed_until = now + lease_s
    return job


def _finish(
    execute: Execute,
    sql: ModuleType,
    job: RedriveJob,
    state: str,
    now: float,
    error: str | None = None,
) -> RedriveJob:
    execute(
        sql.UPDATE_JOB,
        (state, job.moved, job.cursor_seq, error, None, None, now, job.id),
    )
    if state == DONE:
        logger.info(
            "Redrive job %s of DLQ %s is done: %d messages moved", job.id, job.dlq, job.moved
        )
    else:
        logger.warning("Redrive job %s of DLQ %s failed: %s", job.id, job.dlq, error)
    job.state = state
    job.error = error
    job.updated_at = now
    job.claimed_until = None
    return job


def job_from_row(row: tuple) -> RedriveJob:
    """Build a job from a row of JOB_COLUMNS; the owner column is left out."""
    return RedriveJob(
        id=row[0],
        dlq=row[1],
        source_queue=row[2],
        dead_after=row[3],
        limit=row[4],
        rate_per_s=row[5],
        state=row[6],
        moved=row[7],
        cursor_seq=row[8],
        error=row[9],
        created_at=row[10],
        updated_at=row[11],
        claimed_until=row[12],
    )
