"""The one durable job engine: claim, lease, heartbeat, reap, reschedule with backoff, dead letters.

Every queue's claim goes through `claim` here, so there is one answer to "can two processes take the same
job?": on PostgreSQL the candidate rows are read `FOR UPDATE SKIP LOCKED` (another process skips them
instead of waiting), and every UPDATE re-checks that the row is still due; on SQLite every write
transaction is BEGIN IMMEDIATE (imex.db.session), which serialises claims. The idle check ("is anything
due?") runs on a read-only connection so a quiet queue never takes SQLite's write lock from ingest.

A job is owned by `claimed_by`; every change a worker makes at the end (`finish`, `retry_later`,
`release`) only applies while it still owns the row, so a worker whose lease was taken over, or whose job
an operator cancelled, changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, and_, or_, select, update
from sqlalchemy.sql import ColumnElement

from imex.db import Database, utcnow
from imex.jobs.queue import JobQueue, RetryPolicy

log = logging.getLogger("imex.jobs")

Admit = Callable[[Connection, Row[Any]], bool]


def _due_clause(queue: JobQueue, now: dt.datetime) -> ColumnElement[bool]:
    due = or_(queue.due.is_(None), queue.due <= now) if queue.null_is_due else queue.due <= now
    clause = and_(_waiting(queue), due)
    if queue.where is not None:
        clause = and_(clause, queue.where(queue.table))
    return clause


def _waiting(queue: JobQueue) -> ColumnElement[bool]:
    """Rows in the state of a job that waits for its time (every row, for a queue that keeps no state)."""
    if queue.state_column is None:
        return queue.column("id").is_not(None)
    return queue.column(queue.state_column) == queue.due_state


def _state(queue: JobQueue, value: str) -> dict[str, Any]:
    return {queue.state_column: value} if queue.state_column is not None else {}


def any_due(db: Database, queue: JobQueue) -> bool:
    """Whether a job is due, read without taking a write lock."""
    now = utcnow()
    with db.reader() as conn:
        found = conn.execute(select(queue.column("id")).where(_due_clause(queue, now)).limit(1)).first()
        conn.rollback()
    return found is not None


def claim(
    db: Database,
    queue: JobQueue,
    worker: str,
    lease_seconds: float,
    *,
    limit: int = 1,
    admit: Admit | None = None,
    scan: int = 20,
    values: dict[str, Any] | None = None,
) -> list[Row[Any]]:
    """Claim up to `limit` due jobs for `worker` for `lease_seconds`; returns their rows as they are after
    the claim (attempts already counted). `admit(conn, row)`, run in the claiming transaction, may refuse a
    candidate (a destination at its concurrency limit) or settle it otherwise (mark it superseded).
    `values` are further columns set on each claimed row."""
    if not any_due(db, queue):
        return []
    now = utcnow()
    lease_until = now + dt.timedelta(seconds=lease_seconds)
    t = queue.table
    order = list(queue.order(t)) if queue.order is not None else [queue.due, t.c.id]
    with db.engine.begin() as conn:
        query = select(t).where(_due_clause(queue, now)).order_by(*order).limit(max(scan, limit))
        if db.is_postgres:
            query = query.with_for_update(of=t, skip_locked=True)
        taken: list[int] = []
        for row in conn.execute(query).all():
            if len(taken) >= limit:
                break
            if admit is not None and not admit(conn, row):
                continue
            claimed: dict[str, Any] = dict(values or {})
            if queue.holds_by_state:
                claimed.update(state=queue.running_state, claimed_by=worker, lease_until=lease_until)
            else:
                claimed[queue.due_column] = lease_until
                if "claimed_by" in t.c:
                    claimed["claimed_by"] = worker
            if queue.attempts_column:
                claimed[queue.attempts_column] = queue.attempts + 1
            done = conn.execute(
                update(t).where(t.c.id == row.id, _due_clause(queue, now)).values(**queue.stamped(claimed, now))
            ).rowcount
            if done:
                taken.append(row.id)
        if not taken:
            return []
        return list(conn.execute(select(t).where(t.c.id.in_(taken)).order_by(*order)).all())


def _owned(queue: JobQueue, job_id: int, worker: str | None) -> ColumnElement[bool]:
    """The job while `worker` holds it; with no worker, the job whoever holds it (an operator's action, an
    answer that arrives on another association, a job waiting outside any claim)."""
    t = queue.table
    if not queue.holds_by_state:  # held by its due time: still waiting in the due state
        clause = and_(t.c.id == job_id, _waiting(queue))
        return and_(clause, t.c.claimed_by == worker) if worker is not None and "claimed_by" in t.c else clause
    if worker is None:
        return t.c.id == job_id
    return and_(t.c.id == job_id, t.c.claimed_by == worker, t.c.state == queue.running_state)


def renew(db: Database, queue: JobQueue, job_id: int, worker: str, lease_seconds: float) -> bool:
    """Extend the lease of a job `worker` still holds; False when it no longer does."""
    until = utcnow() + dt.timedelta(seconds=lease_seconds)
    column = "lease_until" if queue.holds_by_state else queue.due_column
    with db.engine.begin() as conn:
        return bool(
            conn.execute(update(queue.table).where(_owned(queue, job_id, worker)).values({column: until})).rowcount
        )


def renew_in(conn: Connection, queue: JobQueue, job_id: int, worker: str, lease_seconds: float) -> bool:
    """`renew` inside the caller's transaction (with the progress it commits)."""
    until = utcnow() + dt.timedelta(seconds=lease_seconds)
    column = "lease_until" if queue.holds_by_state else queue.due_column
    return bool(conn.execute(update(queue.table).where(_owned(queue, job_id, worker)).values({column: until})).rowcount)


class Heartbeat:
    """Renews a job's lease from a thread while the job runs, even while one step (a large instance, a
    slow C-MOVE) takes minutes, so that only a worker that died loses its job."""

    def __init__(self, db: Database, queue: JobQueue, job_id: int, worker: str, lease_seconds: float) -> None:
        self.db, self.queue, self.job_id, self.worker, self.lease = db, queue, job_id, worker, lease_seconds
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"lease-{queue.name}-{job_id}")

    def _beat(self) -> None:
        while not self._done.wait(max(self.lease / 3, 0.1)):
            try:
                renew(self.db, self.queue, self.job_id, self.worker, self.lease)
            except Exception:
                log.exception("could not renew the lease of %s job %s", self.queue.name, self.job_id)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=max(self.lease, 5.0))


def reap(
    db: Database,
    queue: JobQueue,
    *,
    values: Callable[[], dict[str, Any]] | None = None,
    on_reaped: Callable[[Connection, Row[Any]], None] | None = None,
) -> int:
    """Put back the jobs whose worker stopped renewing its lease (its process died): due again at once.
    `values` adds columns to set on each (a new transaction UID); `on_reaped` records why, in the same
    transaction. Only queues that hold claims by state have anything to reap."""
    if not queue.holds_by_state:
        return 0
    t = queue.table
    now = utcnow()
    expired = and_(t.c.state == queue.running_state, t.c.lease_until < now)
    with db.reader() as conn:
        found = conn.execute(select(t.c.id).where(expired).limit(1)).first()
        conn.rollback()
    if found is None:
        return 0
    count = 0
    with db.engine.begin() as conn:
        query = select(t).where(expired)
        if db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        for row in conn.execute(query).all():
            back = {
                "state": queue.due_state,
                "claimed_by": None,
                "lease_until": None,
                queue.due_column: now,
                **(values() if values is not None else {}),
            }
            if conn.execute(update(t).where(t.c.id == row.id, expired).values(**queue.stamped(back, now))).rowcount:
                count += 1
                if on_reaped is not None:
                    on_reaped(conn, row)
    return count


def finish(conn: Connection, queue: JobQueue, job_id: int, worker: str | None, state: str, **values: Any) -> bool:
    """End a job the worker still owns in `state` (delivered, done, sent, ...); False when it no longer
    owns it (cancelled, or taken over after a lost lease)."""
    now = utcnow()
    release = (
        {"claimed_by": None, "lease_until": None}
        if queue.holds_by_state
        else ({"claimed_by": None} if "claimed_by" in queue.table.c else {})
    )
    return bool(
        conn.execute(
            update(queue.table)
            .where(_owned(queue, job_id, worker))
            .values(**queue.stamped({**_state(queue, state), **release, **values}, now))
        ).rowcount
    )


@dataclass(frozen=True)
class Outcome:
    """What became of a failed attempt: scheduled again after `delay` seconds, or given up (`dead`)."""

    dead: bool
    delay: float
    attempts: int


def retry_later(
    conn: Connection,
    queue: JobQueue,
    job_id: int,
    worker: str | None,
    error: str,
    policy: RetryPolicy,
    *,
    give_up: bool = False,
    **values: Any,
) -> Outcome | None:
    """After a failed attempt: due again after the policy's backoff, or the dead-letter state once the
    attempts are spent (or `give_up`: a failure that will not change). None when the worker no longer owns
    the job."""
    t = queue.table
    row = conn.execute(select(t).where(_owned(queue, job_id, worker))).first()
    if row is None:
        return None
    attempts = int(getattr(row, queue.attempts_column) or 0) if queue.attempts_column else 1
    now = utcnow()
    if queue.error_column:
        values[queue.error_column] = error[:2000]
    dead = queue.dead_state is not None and (give_up or policy.exhausted(attempts))
    delay = 0.0 if dead else policy.delay(attempts)
    if dead:
        assert queue.dead_state is not None
        finish(conn, queue, job_id, worker, queue.dead_state, **values)
    else:
        release = {"claimed_by": None, "lease_until": None} if queue.holds_by_state else {}
        conn.execute(
            update(t)
            .where(_owned(queue, job_id, worker))
            .values(
                **queue.stamped(
                    {
                        **_state(queue, queue.due_state),
                        queue.due_column: now + dt.timedelta(seconds=delay),
                        **release,
                        **values,
                    },
                    now,
                )
            )
        )
    return Outcome(dead, delay, attempts)


def release(
    conn: Connection, queue: JobQueue, job_id: int, worker: str, *, uncount: bool = True, **values: Any
) -> bool:
    """Hand a job back, due now, without counting the attempt (the hub is stopping; a step was held)."""
    now = utcnow()
    back: dict[str, Any] = {**_state(queue, queue.due_state), queue.due_column: now, **values}
    if queue.holds_by_state:
        back.update(claimed_by=None, lease_until=None)
    elif "claimed_by" in queue.table.c:
        back["claimed_by"] = None
    if uncount and queue.attempts_column:
        back[queue.attempts_column] = queue.attempts - 1
    return bool(
        conn.execute(
            update(queue.table).where(_owned(queue, job_id, worker)).values(**queue.stamped(back, now))
        ).rowcount
    )


def reopen(conn: Connection, queue: JobQueue, job_id: int, **values: Any) -> bool:
    """Make a job due now with its attempts from zero, whoever held it (an operator's retry)."""
    now = utcnow()
    back: dict[str, Any] = {**_state(queue, queue.due_state), queue.due_column: now, **values}
    if queue.attempts_column:
        back[queue.attempts_column] = 0
    if queue.holds_by_state:
        back.update(claimed_by=None, lease_until=None)
    return bool(
        conn.execute(update(queue.table).where(queue.table.c.id == job_id).values(**queue.stamped(back, now))).rowcount
    )


def requeue(db: Database, queue: JobQueue, job_id: int, **values: Any) -> bool:
    """Operator retry of a dead job: due now, attempts from zero. False when the job is not dead."""
    if queue.dead_state is None or queue.state_column is None:
        return False
    with db.engine.begin() as conn:
        dead = conn.execute(
            select(queue.table.c.id)
            .where(queue.table.c.id == job_id, queue.column(queue.state_column) == queue.dead_state)
            .with_for_update()
        ).first()
        return dead is not None and reopen(conn, queue, job_id, **values)
