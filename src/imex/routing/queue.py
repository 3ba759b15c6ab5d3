"""The delivery queue is the transfers table: creating transfers, claiming them for a worker, taking back
those whose worker died, and the operators' retry and cancel.

The claim, its lease and the backoff are the job engine's (imex.jobs); this module adds what is
particular to deliveries: a destination's concurrency limit, the transfer's event log, and the
operators' retry and cancel.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Row, Table, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from imex.db import Database, utcnow
from imex.db.models import events, instances, items, nodes, transfers
from imex.errors import Conflict
from imex.jobs import engine
from imex.jobs.queue import JobQueue, RetrySettings
from imex.jobs.registry import register
from imex.routing.priority import name as priority_name

ACTIVE = ("pending", "sending")
FINAL = ("delivered", "confirmed", "failed", "cancelled")


class QueueError(Conflict, ValueError):
    """An operator action that does not apply (e.g. retrying a delivered transfer)."""


def record(conn: Connection, transfer_id: int, event: str, detail: str = "") -> None:
    conn.execute(insert(events).values(transfer_id=transfer_id, at=utcnow(), event=event, detail=detail[:2000]))


def _insert_ignore(conn: Connection, table: Table, rows: list[dict]) -> int:
    if not rows:
        return 0
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # the rows RETURNING gives, not rowcount: on PostgreSQL a one-row insert reports rowcount -1
    return len(conn.execute(dialect.insert(table).values(rows).on_conflict_do_nothing().returning(table.c.id)).all())


def new_transfer(
    study_id: int, node_id: int, state: str, priority: int, reason: str, recipient: str, now: dt.datetime
) -> dict:
    """The row of a transfer not yet started: the queue's, and the on-demand retrieves' (on_demand.py)."""
    return dict(
        study_id=study_id,
        destination_node_id=node_id,
        state=state,
        priority=priority,
        reason=reason[:200],
        recipient=recipient or None,
        attempts=0,
        next_attempt_at=now,
        instances_total=0,
        instances_sent=0,
        bytes_sent=0,
        created_at=now,
        updated_at=now,
    )


def queue_study(
    conn: Connection, study_id: int, destinations: dict[int, str], priority: int = 0, recipient: str = ""
) -> list[int]:
    """Make sure each destination node has a transfer of the study with an item for every instance.

    New transfers are created; existing ones get items for instances they lack and are reopened if
    they had finished (a late instance or a replaced one), except those an operator cancelled. An
    existing transfer's priority only rises, and a recipient already named is kept.
    Returns the ids of transfers that have work to do."""
    now = utcnow()
    work: list[int] = []
    for node_id, reason in destinations.items():
        created = _insert_ignore(
            conn, transfers, [new_transfer(study_id, node_id, "pending", priority, reason, recipient, now)]
        )
        row = conn.execute(
            select(transfers.c.id, transfers.c.state, transfers.c.priority, transfers.c.recipient).where(
                transfers.c.study_id == study_id, transfers.c.destination_node_id == node_id
            )
        ).one()
        missing = (
            conn.execute(
                select(instances.c.id)
                .where(instances.c.study_id == study_id)
                .where(~instances.c.id.in_(select(items.c.instance_id).where(items.c.transfer_id == row.id)))
            )
            .scalars()
            .all()
        )
        added = _insert_ignore(conn, items, [dict(transfer_id=row.id, instance_id=i, state="pending") for i in missing])
        pending = conn.execute(
            select(func.count()).select_from(items).where(items.c.transfer_id == row.id, items.c.state == "pending")
        ).scalar_one()
        total = conn.execute(select(func.count()).select_from(items).where(items.c.transfer_id == row.id)).scalar_one()
        values: dict = dict(instances_total=total, updated_at=now)
        if not created and priority > (row.priority or 0):
            values.update(priority=priority)
            record(conn, row.id, "priority", f"raised to {priority_name(priority)}")
        if not created and recipient and not row.recipient:
            values.update(recipient=recipient)
        if created:
            record(conn, row.id, "queued", f"{reason}; {total} instances")
        elif added:
            record(conn, row.id, "follow-up", f"{added} more instances arrived after routing")
        if pending and row.state in ("delivered", "confirmed", "failed"):
            values.update(
                state="pending", next_attempt_at=now, attempts=0, delivered_at=None, confirmed_at=None, confirm_rounds=0
            )
            record(conn, row.id, "reopened", f"{pending} instances to send")
        conn.execute(update(transfers).where(transfers.c.id == row.id).values(**values))
        if pending and row.state != "cancelled":
            work.append(row.id)
    return work


def _order(t: Table) -> list:
    return [t.c.priority.desc(), t.c.next_attempt_at, t.c.id]


DELIVERY = register(
    JobQueue(
        "delivery",
        transfers,
        RetrySettings(
            "delivery.retry_initial_seconds",
            "delivery.retry_multiplier",
            "delivery.retry_max_seconds",
            "delivery.max_attempts",
        ),
        due_state="pending",
        running_state="sending",
        dead_state="failed",
        order=_order,
        updated_column="updated_at",
        description="Transfers of studies to destination nodes (C-STORE).",
        requeue=lambda db, transfer_id: _retry_failed(db, transfer_id),
    )
)


@dataclass(frozen=True)
class Claim:
    transfer_id: int
    destination_node_id: int
    attempt: int


def claim(db: Database, worker: str, lease_seconds: float, default_limit: int) -> Claim | None:
    """Take the most urgent due transfer whose destination has a free slot; None when there is none.

    On PostgreSQL the destination node's row is locked while its running transfers are counted, so
    processes sharing the queue never exceed a destination's concurrency limit."""
    busy: set[int] = set()

    def admit(conn: Connection, row: Row) -> bool:
        if row.destination_node_id in busy:
            return False
        node_query = select(nodes.c.max_associations, nodes.c.enabled).where(nodes.c.id == row.destination_node_id)
        if db.is_postgres:
            node_query = node_query.with_for_update()
        node = conn.execute(node_query).one()
        running = conn.execute(
            select(func.count())
            .select_from(transfers)
            .where(transfers.c.destination_node_id == row.destination_node_id, transfers.c.state == "sending")
        ).scalar_one()
        if running >= (node.max_associations or default_limit) or not node.enabled:
            busy.add(row.destination_node_id)
            return False
        record(conn, row.id, "sending", f"attempt {row.attempts + 1} by {worker}")
        return True

    rows = engine.claim(
        db,
        DELIVERY,
        worker,
        lease_seconds,
        admit=admit,
        values=dict(started_at=func.coalesce(transfers.c.started_at, utcnow())),
    )
    if not rows:
        return None
    return Claim(rows[0].id, rows[0].destination_node_id, rows[0].attempts)


def reap_expired_leases(db: Database) -> int:
    """Put back transfers whose worker stopped renewing its lease (its process died): they resume and
    send only the items not yet confirmed."""
    return engine.reap(
        db,
        DELIVERY,
        on_reaped=lambda conn, row: record(
            conn, row.id, "resumed", f"worker {row.claimed_by} stopped (lease expired); resuming"
        ),
    )


def retry(db: Database, transfer_id: int) -> None:
    """Operator retry of a failed or cancelled transfer: every unsent instance, attempts from zero."""
    now = utcnow()
    with db.engine.begin() as conn:
        state = conn.execute(select(transfers.c.state).where(transfers.c.id == transfer_id)).scalar()
        if state is None:
            raise QueueError(f"no transfer {transfer_id}")
        if state in ACTIVE:
            conn.execute(update(transfers).where(transfers.c.id == transfer_id).values(next_attempt_at=now))
            record(conn, transfer_id, "retry", "asked to retry now")
            return
        if state in ("delivered", "confirmed"):
            raise QueueError(f"transfer {transfer_id} was {state}; nothing to retry")
        conn.execute(
            update(items).where(items.c.transfer_id == transfer_id, items.c.state == "failed").values(state="pending")
        )
        engine.reopen(conn, DELIVERY, transfer_id, confirm_rounds=0)
        record(conn, transfer_id, "retry", f"operator retry (was {state})")


def _retry_failed(db: Database, transfer_id: int) -> bool:
    """The job engine's operator retry of a dead letter: a failed transfer, retried as `retry` does."""
    with db.reader() as conn:
        state = conn.execute(select(transfers.c.state).where(transfers.c.id == transfer_id)).scalar()
        conn.rollback()
    if state != "failed":
        return False
    retry(db, transfer_id)
    return True


def cancel(db: Database, transfer_id: int, reason: str = "cancelled by operator") -> None:
    """Stop a transfer; a worker sending it stops before its next instance."""
    with db.engine.begin() as conn:
        state = conn.execute(select(transfers.c.state).where(transfers.c.id == transfer_id)).scalar()
        if state is None:
            raise QueueError(f"no transfer {transfer_id}")
        if state in ("delivered", "confirmed", "cancelled"):
            raise QueueError(f"transfer {transfer_id} is {state}; nothing to cancel")
        engine.finish(conn, DELIVERY, transfer_id, None, "cancelled")
        record(conn, transfer_id, "cancelled", reason)
