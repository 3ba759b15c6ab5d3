"""Transfers a PACS asks for: a C-MOVE or C-GET to the hub is an import into that institution, kept on the
transfer of the study to the node it goes to, like any delivery.

A C-MOVE puts the asked instances (again) on the durable delivery queue, so it gets everything a routed
delivery gets: header harmonisation, a hold for reconciliation, retries that survive a restart, the
transfer history and the arrival events. A C-GET sends over the caller's own association; what it
delivered is recorded on the same transfer afterwards."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, case, func, select, update

from imex import events
from imex.db import utcnow
from imex.db.models import items, transfers
from imex.routing.priority import URGENT
from imex.routing.queue import _insert_ignore, new_transfer, record
from imex.routing.reconcile import HELD


def _transfer(conn: Connection, study_id: int, node_id: int, reason: str, recipient: str, state: str) -> tuple:
    """The transfer of the study to the node, created in `state` when there is none; (id, state, new)."""
    created = _insert_ignore(
        conn, transfers, [new_transfer(study_id, node_id, state, URGENT, reason, recipient, utcnow())]
    )
    row = conn.execute(
        select(transfers.c.id, transfers.c.state).where(
            transfers.c.study_id == study_id, transfers.c.destination_node_id == node_id
        )
    ).one()
    return row.id, row.state, bool(created)


def _items(conn: Connection, transfer_id: int, instance_ids: list[int], state: str) -> None:
    """Make the transfer's items for these instances exist, in `state`."""
    _insert_ignore(conn, items, [dict(transfer_id=transfer_id, instance_id=i, state=state) for i in instance_ids])
    conn.execute(
        update(items)
        .where(items.c.transfer_id == transfer_id, items.c.instance_id.in_(instance_ids))
        .values(state=state, status=None, error=None)
    )
    total = conn.execute(select(func.count()).select_from(items).where(items.c.transfer_id == transfer_id)).scalar()
    conn.execute(update(transfers).where(transfers.c.id == transfer_id).values(instances_total=total))


def queue_retrieve(
    conn: Connection, study_id: int, node_id: int, instance_ids: list[int], reason: str, recipient: str = ""
) -> int:
    """Queue these instances of the study for the node, sent again even where they were sent before;
    the transfer is reopened (a transfer held for reconciliation stays held). Returns the transfer id."""
    transfer_id, state, created = _transfer(conn, study_id, node_id, reason, recipient, "pending")
    _items(conn, transfer_id, instance_ids, "pending")
    now = utcnow()
    values: dict = dict(updated_at=now, next_attempt_at=now)
    if state not in ("pending", "sending", HELD):
        values.update(state="pending", attempts=0, delivered_at=None, confirmed_at=None, confirm_rounds=0)
        values.update(claimed_by=None, lease_until=None)
    conn.execute(update(transfers).where(transfers.c.id == transfer_id).values(**values))
    # a PACS user is waiting for it: at least urgent (a priority only rises)
    conn.execute(
        update(transfers).where(transfers.c.id == transfer_id, transfers.c.priority < URGENT).values(priority=URGENT)
    )
    record(conn, transfer_id, "queued" if created else "retrieve", f"{reason}; {len(instance_ids)} instances")
    return transfer_id


@dataclass(frozen=True)
class Progress:
    """Where a retrieve's instances stand on their transfer."""

    state: str  # the transfer's
    sent: int
    warning: int  # sent, with a warning status
    failed: int
    pending: int
    attempts: int
    last_error: str


def progress(conn: Connection, transfer_id: int, instance_ids: list[int]) -> Progress:
    """Counts of the retrieve's items by state, with the transfer's state and its last error."""
    warning = case((items.c.status.between(0xB000, 0xBFFF), 1), (items.c.status == 0x0001, 1), else_=0)
    counts = {
        row.state: (row.n, row.warnings or 0)
        for row in conn.execute(
            select(items.c.state, func.count().label("n"), func.sum(warning).label("warnings"))
            .where(items.c.transfer_id == transfer_id, items.c.instance_id.in_(instance_ids))
            .group_by(items.c.state)
        )
    }
    t = conn.execute(
        select(transfers.c.state, transfers.c.attempts, transfers.c.last_error).where(transfers.c.id == transfer_id)
    ).one()
    return Progress(
        state=t.state,
        sent=counts.get("sent", (0, 0))[0],
        warning=counts.get("sent", (0, 0))[1],
        failed=counts.get("failed", (0, 0))[0],
        pending=counts.get("pending", (0, 0))[0],
        attempts=t.attempts or 0,
        last_error=t.last_error or "",
    )


def transfer_to(conn: Connection, study_id: int, node_id: int) -> tuple[int, str] | None:
    """The transfer of the study to the node, when there is one: (id, state)."""
    row = conn.execute(
        select(transfers.c.id, transfers.c.state).where(
            transfers.c.study_id == study_id, transfers.c.destination_node_id == node_id
        )
    ).first()
    return (row.id, row.state) if row is not None else None


def record_retrieved(
    conn: Connection, study_id: int, node_id: int, sent: list[int], sent_bytes: int, reason: str
) -> int:
    """Record instances a C-GET delivered over the caller's association on the study's transfer to the
    node: new transfers end delivered, and the arrival is announced as a delivery is."""
    now = utcnow()
    transfer_id, state, created = _transfer(conn, study_id, node_id, reason, "", "delivered")
    _items(conn, transfer_id, sent, "sent")
    conn.execute(
        update(items)
        .where(items.c.transfer_id == transfer_id, items.c.instance_id.in_(sent))
        .values(sent_at=now, status=0)
    )
    done = conn.execute(
        select(func.count()).select_from(items).where(items.c.transfer_id == transfer_id, items.c.state == "sent")
    ).scalar()
    values: dict = dict(instances_sent=done, bytes_sent=transfers.c.bytes_sent + sent_bytes, updated_at=now)
    finished = created or state in ("delivered", "confirmed", "failed", "cancelled")
    if finished:
        values.update(state="delivered", delivered_at=now, last_error=None, claimed_by=None, lease_until=None)
    conn.execute(update(transfers).where(transfers.c.id == transfer_id).values(**values))
    record(conn, transfer_id, "retrieved" if not created else "queued", f"{reason}; {len(sent)} instances")
    if finished:
        events.emit("transfer.delivered", conn, transfer_id=transfer_id, announce=True)
    return transfer_id
