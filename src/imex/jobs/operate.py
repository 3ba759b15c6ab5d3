"""What operators do with the queues, for `imex jobs` and the admin page: see how every queue stands, list
its dead letters, and retry them (one, or all). The views show ids, attempts and errors, never the jobs'
contents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select

from imex.db import Database
from imex.errors import Conflict, NotFound
from imex.jobs import engine, registry, stats
from imex.jobs.queue import JobQueue


@dataclass(frozen=True)
class DeadJob:
    """A job given up until someone retries it."""

    queue: str
    id: int
    attempts: int | None
    error: str

    def as_dict(self) -> dict[str, Any]:
        return dict(queue=self.queue, id=self.id, attempts=self.attempts, error=self.error)


def queue_named(name: str) -> JobQueue:
    queue = registry.get(name)
    if queue is None:
        known = ", ".join(q.name for q in registry.queues())
        raise NotFound(f"there is no job queue {name!r}; the queues are {known}")
    return queue


def overview(db: Database) -> list[stats.QueueStats]:
    """Every queue's figures, read in one transaction."""
    with db.reader() as conn:
        found = [stats.read(conn, q) for q in registry.queues()]
        conn.rollback()
    return found


def dead_jobs(db: Database, name: str, limit: int = 100) -> list[DeadJob]:
    """The newest dead letters of a queue."""
    queue = queue_named(name)
    if queue.dead_state is None or queue.state_column is None:
        return []
    t = queue.table
    columns: list[ColumnElement[Any]] = [t.c.id]
    if queue.attempts_column:
        columns.append(queue.attempts.label("attempts"))
    if queue.error_column:
        columns.append(t.c[queue.error_column].label("error"))
    with db.reader() as conn:
        rows = conn.execute(
            select(*columns)
            .where(queue.column(queue.state_column) == queue.dead_state)
            .order_by(t.c.id.desc())
            .limit(limit)
        ).all()
        conn.rollback()
    return [
        DeadJob(queue.name, int(r.id), getattr(r, "attempts", None), str(getattr(r, "error", "") or "")) for r in rows
    ]


def retry(db: Database, name: str, job_id: int) -> None:
    """Retry one dead job now, attempts from zero."""
    queue = queue_named(name)
    if queue.dead_state is None:
        raise Conflict(f"the {queue.name} queue never gives up a job, so there is nothing to retry")
    done = queue.requeue(db, job_id) if queue.requeue is not None else engine.requeue(db, queue, job_id)
    if not done:
        raise Conflict(f"{queue.name} job {job_id} is not a dead letter (it may have been retried already)")


def retry_all(db: Database, name: str) -> int:
    """Retry every dead job of a queue; how many."""
    count = 0
    for job in dead_jobs(db, name, limit=10_000):
        try:
            retry(db, name, job.id)
            count += 1
        except Conflict:  # retried meanwhile by someone else
            continue
    return count
