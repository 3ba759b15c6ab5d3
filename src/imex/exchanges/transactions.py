"""Transactions: one or more studies sent together from one institution to another, for someone, with a
message thread. The images travel as ordinary transfers (one per study and destination node); a
transaction's state is derived from those transfers and from the retrievals that fetch its studies, so it
can never disagree with the queue."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from imex.db import utcnow
from imex.db.models import (
    institutions,
    nodes,
    retrievals,
    studies,
    transaction_messages,
    transaction_studies,
    transactions,
    transfers,
)
from imex.errors import Invalid
from imex.routing.queue import queue_study

KINDS = ("push", "preauthorised", "request", "upload")
STATES = ("retrieving", "sending", "delivered", "failed")


class TransactionError(Invalid, ValueError):
    """A transaction that cannot be opened as asked (unknown institution, no destination node, ...)."""


def destination_nodes(conn: Connection, transaction) -> dict[int, str]:
    """The nodes a transaction's studies go to: the chosen node, else the destination's enabled PACS."""
    why = f"exchange {transaction.id}"
    if transaction.destination_node_id is not None:
        return {transaction.destination_node_id: why}
    found = (
        conn.execute(
            select(nodes.c.id).where(
                nodes.c.institution_id == transaction.destination_institution_id,
                nodes.c.destination.is_(True),
                nodes.c.enabled.is_(True),
            )
        )
        .scalars()
        .all()
    )
    return {node_id: why for node_id in found}


def queue_transaction_study(conn: Connection, transaction, study_id: int) -> list[int]:
    """Queue the study's transfers to the transaction's destination, with its priority and recipient."""
    targets = destination_nodes(conn, transaction)
    work = queue_study(conn, study_id, targets, transaction.priority or 0, transaction.recipient or "")
    if transaction.recipient_user_id is not None and targets:
        conn.execute(
            update(transfers)
            .where(
                transfers.c.study_id == study_id,
                transfers.c.destination_node_id.in_(list(targets)),
                transfers.c.recipient_user_id.is_(None),
            )
            .values(recipient_user_id=transaction.recipient_user_id)
        )
    return work


def open_transaction(
    conn: Connection,
    *,
    kind: str,
    source_institution_id: int,
    destination_institution_id: int,
    sender_user_id: int | None,
    sender_name: str,
    study_uids: list[str],
    subject: str = "",
    message: str = "",
    priority: int = 0,
    recipient: str | None = None,
    recipient_user_id: int | None = None,
    destination_node_id: int | None = None,
) -> int:
    """Create the transaction, its studies and first message, and queue transfers at once for the
    studies already complete at the hub; the others are routed by the router hook when they arrive."""
    if kind not in KINDS:
        raise TransactionError(f"kind must be one of {', '.join(KINDS)}")
    uids = list(dict.fromkeys(u.strip() for u in study_uids if u and u.strip()))
    if not uids:
        raise TransactionError("a transaction needs at least one study")
    if source_institution_id == destination_institution_id:
        raise TransactionError("the destination must be another institution")
    known = set(
        conn.execute(
            select(institutions.c.id).where(institutions.c.id.in_([source_institution_id, destination_institution_id]))
        ).scalars()
    )
    if destination_institution_id not in known or source_institution_id not in known:
        raise TransactionError("unknown institution")
    if destination_node_id is not None:
        owner = conn.execute(select(nodes.c.institution_id).where(nodes.c.id == destination_node_id)).scalar()
        if owner != destination_institution_id:
            raise TransactionError("the destination node does not belong to the destination institution")
    now = utcnow()
    tid = conn.execute(
        insert(transactions)
        .values(
            kind=kind,
            subject=(subject or "")[:200],
            sender_user_id=sender_user_id,
            sender_name=sender_name[:200],
            source_institution_id=source_institution_id,
            destination_institution_id=destination_institution_id,
            destination_node_id=destination_node_id,
            priority=priority,
            recipient=(recipient or None),
            recipient_user_id=recipient_user_id,
            created_at=now,
        )
        .returning(transactions.c.id)
    ).scalar_one()
    row = conn.execute(select(transactions).where(transactions.c.id == tid)).one()
    if not destination_nodes(conn, row):
        raise TransactionError("the destination institution has no enabled node to deliver to")
    for uid in uids:
        study = conn.execute(
            select(studies.c.id, studies.c.route_state, studies.c.institution_id).where(studies.c.study_uid == uid[:64])
        ).first()
        mine = study if study is not None and study.institution_id == source_institution_id else None
        conn.execute(
            insert(transaction_studies).values(
                transaction_id=tid, study_uid=uid[:64], study_id=mine.id if mine is not None else None, added_at=now
            )
        )
        if mine is not None and mine.route_state != "receiving":
            queue_transaction_study(conn, row, mine.id)
            if mine.route_state == "quarantined":  # it has its destination now
                conn.execute(
                    update(studies).where(studies.c.id == mine.id).values(route_state="routed", quarantine_reason=None)
                )
    if message.strip():
        conn.execute(
            insert(transaction_messages).values(
                transaction_id=tid,
                author_user_id=sender_user_id,
                author_name=sender_name[:200],
                institution_id=source_institution_id,
                body=message.strip()[:10000],
                at=now,
            )
        )
    return int(tid)


@dataclass(frozen=True)
class StudyProgress:
    """Where one study of a transaction is: retrieving from the sender's PACS, sending, delivered, failed."""

    study_uid: str
    study_id: int | None
    state: str
    detail: str
    transfers: list[dict]
    retrievals: list[dict]


def study_progress(conn: Connection, transaction) -> list[StudyProgress]:
    """Each study's state from its retrievals and its transfers to the destination's nodes."""
    targets = list(destination_nodes(conn, transaction)) or [-1]
    dest_nodes = select(nodes.c.id).where(nodes.c.institution_id == transaction.destination_institution_id)
    out: list[StudyProgress] = []
    for ts in conn.execute(
        select(transaction_studies)
        .where(transaction_studies.c.transaction_id == transaction.id)
        .order_by(transaction_studies.c.id)
    ).all():
        moves = [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    retrievals.c.id,
                    retrievals.c.state,
                    retrievals.c.attempts,
                    retrievals.c.last_error,
                    retrievals.c.completed,
                    retrievals.c.failed,
                    retrievals.c.next_attempt_at,
                )
                .where(retrievals.c.transaction_id == transaction.id, retrievals.c.study_uid == ts.study_uid)
                .order_by(retrievals.c.id)
            )
        ]
        sends: list[dict] = []
        if ts.study_id is not None:
            sends = [
                dict(r._mapping)
                for r in conn.execute(
                    select(
                        transfers.c.id,
                        transfers.c.state,
                        transfers.c.destination_node_id,
                        transfers.c.last_error,
                        transfers.c.instances_sent,
                        transfers.c.instances_total,
                        transfers.c.delivered_at,
                        nodes.c.name.label("node"),
                    )
                    .join(nodes, nodes.c.id == transfers.c.destination_node_id)
                    .where(transfers.c.study_id == ts.study_id, transfers.c.destination_node_id.in_(dest_nodes))
                    .order_by(transfers.c.id)
                )
            ]
        state, detail = _derive(moves, sends, targets, at_hub=ts.study_id is not None)
        out.append(StudyProgress(ts.study_uid, ts.study_id, state, detail, sends, moves))
    return out


def _derive(moves: list[dict], sends: list[dict], targets: list[int], at_hub: bool = False) -> tuple[str, str]:
    failed_move = next((m for m in moves if m["state"] == "failed"), None)
    active = next((m for m in moves if m["state"] in ("pending", "moving")), None)
    if active is not None:
        note = f" (attempt {active['attempts']}: {active['last_error']})" if active["last_error"] else ""
        return "retrieving", f"retrieving from the sender's PACS{note}"
    if sends:
        states = {t["state"] for t in sends}
        if states <= {"delivered", "confirmed"}:  # confirmed: the destination said it holds every instance
            word = "confirmed" if states == {"confirmed"} else "delivered"
            return "delivered", f"{sum(t['instances_sent'] or 0 for t in sends)} instances {word}"
        if states & {"failed", "cancelled"}:
            bad = next(t for t in sends if t["state"] in ("failed", "cancelled"))
            return "failed", f"delivery to {bad['node']} {bad['state']}: {bad['last_error'] or ''}".strip(": ")
        if "held" in states:
            bad = next(t for t in sends if t["state"] == "held")
            return "sending", bad["last_error"] or "held"
        return "sending", "being delivered"
    if failed_move is not None and not any(m["state"] in ("pending", "moving") for m in moves):
        return "failed", f"retrieval failed: {failed_move['last_error'] or 'unknown error'}"
    if at_hub:  # pushed or uploaded, not retrieved: the hub has it and routes it once it is whole
        return "sending", "at the hub; delivery starts once the study is complete"
    return "retrieving", "waiting for the study to arrive at the hub"


def overall_state(progress: list[StudyProgress]) -> str:
    """failed if any study failed; delivered when all are; retrieving while any is still on its way."""
    states = {p.state for p in progress}
    if not states:
        return "retrieving"
    if "failed" in states:
        return "failed"
    if states == {"delivered"}:
        return "delivered"
    if "retrieving" in states:
        return "retrieving"
    return "sending"


def transaction_ids_for_study(conn: Connection, study_uid: str, source_institution_id: int) -> list[int]:
    """Transactions from `source_institution_id` that carry the study with this UID, oldest first."""
    return list(
        conn.execute(
            select(transactions.c.id)
            .join(transaction_studies, transaction_studies.c.transaction_id == transactions.c.id)
            .where(
                transaction_studies.c.study_uid == study_uid,
                transactions.c.source_institution_id == source_institution_id,
            )
            .order_by(transactions.c.id)
        ).scalars()
    )
