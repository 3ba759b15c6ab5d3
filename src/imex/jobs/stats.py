"""How each queue stands, read from the database (so every process reports the same): jobs by state, how
long the oldest due job has waited, how many due jobs are retries. For `imex jobs`, the admin page and
/metrics."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from imex.db import utcnow
from imex.jobs.queue import JobQueue


@dataclass(frozen=True)
class QueueStats:
    """One queue at one moment."""

    name: str
    description: str
    by_state: dict[str, int] = field(default_factory=dict)
    due: int = 0  # due now and not held by a worker
    running: int = 0
    dead: int = 0
    retrying: int = 0  # waiting jobs that failed before
    oldest_due_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(
            name=self.name,
            description=self.description,
            by_state=self.by_state,
            due=self.due,
            running=self.running,
            dead=self.dead,
            retrying=self.retrying,
            oldest_due_seconds=round(self.oldest_due_seconds, 1),
        )


def read(conn: Connection, queue: JobQueue, now: dt.datetime | None = None) -> QueueStats:
    """The stats of one queue."""
    now = now or utcnow()
    t = queue.table
    if queue.state_column is not None:
        state = t.c[queue.state_column]
        by_state = {str(s): int(n) for s, n in conn.execute(select(state, func.count()).group_by(state)).all()}
        waiting = state == queue.due_state
    else:
        by_state = {queue.due_state: int(conn.execute(select(func.count()).select_from(t)).scalar_one())}
        waiting = t.c.id.is_not(None)
    due_now = or_(queue.due.is_(None), queue.due <= now) if queue.null_is_due else queue.due <= now
    if queue.where is not None:
        waiting = and_(waiting, queue.where(t))
    due, oldest = conn.execute(select(func.count(), func.min(queue.due)).where(waiting, due_now)).one()
    retrying = 0
    if queue.attempts is not None:
        retrying = int(conn.execute(select(func.count()).where(waiting, queue.attempts > 0)).scalar_one())
    if queue.holds_by_state:
        running = by_state.get(queue.running_state or "", 0)
    elif "claimed_by" in t.c:  # held by pushing the due time: a claimed row is one not yet due again
        running = int(
            conn.execute(select(func.count()).where(waiting, t.c.claimed_by.is_not(None), queue.due > now)).scalar_one()
        )
    else:
        running = 0
    age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    return QueueStats(
        queue.name,
        queue.description,
        by_state,
        int(due or 0),
        running,
        by_state.get(queue.dead_state or "", 0),
        retrying,
        age,
    )


def prometheus_text(conn: Connection, queues: list[JobQueue]) -> str:
    """The queues as Prometheus gauges (text format), computed at scrape time."""
    rows = [read(conn, q) for q in queues]
    lines = ["# HELP imex_jobs Jobs of each durable queue by state.", "# TYPE imex_jobs gauge"]
    lines += [
        f'imex_jobs{{queue="{s.name}",state="{state}"}} {n}' for s in rows for state, n in sorted(s.by_state.items())
    ]
    lines += ["# HELP imex_jobs_due Jobs due now and not held by a worker.", "# TYPE imex_jobs_due gauge"]
    lines += [f'imex_jobs_due{{queue="{s.name}"}} {s.due}' for s in rows]
    lines += [
        "# HELP imex_jobs_oldest_due_seconds How long the oldest due job has waited.",
        "# TYPE imex_jobs_oldest_due_seconds gauge",
    ]
    lines += [f'imex_jobs_oldest_due_seconds{{queue="{s.name}"}} {s.oldest_due_seconds:.1f}' for s in rows]
    lines += [
        "# HELP imex_jobs_retrying Waiting jobs that have failed at least once.",
        "# TYPE imex_jobs_retrying gauge",
    ]
    lines += [f'imex_jobs_retrying{{queue="{s.name}"}} {s.retrying}' for s in rows]
    lines += [
        "# HELP imex_jobs_dead Jobs given up (dead letters) until an operator retries them.",
        "# TYPE imex_jobs_dead gauge",
    ]
    lines += [f'imex_jobs_dead{{queue="{s.name}"}} {s.dead}' for s in rows]
    return "\n".join(lines) + "\n"
