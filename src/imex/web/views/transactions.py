"""Reads of exchanges (transactions) that the JSON API (web/api/transactions.py) and the pages
(web/pages/transactions.py) both show: the list, one exchange with its studies' progress, messages and
attachments, and the institutions one may send to. Visibility is scope.transaction_clause: the sending
and receiving institutions' permitted users; anything else is 404, audited."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import desc, func, select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import (
    ExchangeTransaction,
    Institution,
    Node,
    Patient,
    Study,
    TransactionAttachment,
    TransactionMessage,
)
from imex.exchanges.transactions import overall_state, study_progress
from imex.routing.priority import name as priority_name
from imex.web.deps import visible_or_deny
from imex.web.views import iso


def visible_transaction(s: Session, p: Principal, transaction_id: int) -> ExchangeTransaction:
    p.require("transfers.view")
    return visible_or_deny(
        s,
        p,
        s.scalar(scope.transactions_query(p).where(ExchangeTransaction.id == transaction_id)),
        "transaction",
        transaction_id,
        "exchange",
    )


def _institutions(s: Session, *ids: int) -> dict[int, Institution]:
    return {i.id: i for i in s.scalars(select(Institution).where(Institution.id.in_(ids)))}


def summary(s: Session, p: Principal, tx: ExchangeTransaction) -> dict[str, Any]:
    """One line of the list, with the state derived from its studies' retrievals and transfers."""
    progress = study_progress(s.connection(), tx)
    insts = _institutions(s, tx.source_institution_id, tx.destination_institution_id)
    src, dst = insts.get(tx.source_institution_id), insts.get(tx.destination_institution_id)
    return {
        "id": tx.id,
        "kind": tx.kind,
        "subject": tx.subject,
        "state": overall_state(progress),
        "direction": "outgoing" if tx.source_institution_id == p.institution_id else "incoming",
        "source": src.ods_code if src else "",
        "source_name": src.name if src else "",
        "destination": dst.ods_code if dst else "",
        "destination_name": dst.name if dst else "",
        "sender": tx.sender_name,
        "recipient": tx.recipient,
        "priority": priority_name(tx.priority),
        "studies": len(progress),
        "delivered": sum(1 for x in progress if x.state == "delivered"),
        "created_at": iso(tx.created_at),
    }


class TransactionPage(BaseModel):
    total: int
    items: list[dict[str, Any]]


def list_transactions(
    s: Session,
    p: Principal,
    *,
    direction: str = "all",
    state: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> TransactionPage:
    """Exchanges sent or received by `p`'s institution, newest first."""
    p.require("transfers.view")
    stmt = scope.transactions_query(p)
    if direction == "incoming":
        stmt = stmt.where(ExchangeTransaction.destination_institution_id == p.institution_id)
    elif direction == "outgoing":
        stmt = stmt.where(ExchangeTransaction.source_institution_id == p.institution_id)
    if kind:
        stmt = stmt.where(ExchangeTransaction.kind == kind)
    stmt = stmt.order_by(desc(ExchangeTransaction.id))
    if state is None:
        total = s.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
        rows = [summary(s, p, tx) for tx in s.scalars(stmt.limit(limit).offset(offset))]
    else:  # the state is derived, not stored: filter the recent ones
        found = [r for r in (summary(s, p, tx) for tx in s.scalars(stmt.limit(2000))) if r["state"] == state]
        total, rows = len(found), found[offset : offset + limit]
    return TransactionPage(total=total, items=rows)


def detail(s: Session, p: Principal, tx: ExchangeTransaction) -> dict[str, Any]:
    conn = s.connection()
    progress = study_progress(conn, tx)
    body = summary(s, p, tx)
    studies_out = []
    for item in progress:
        info: dict[str, Any] = {
            "study_uid": item.study_uid,
            "study_id": item.study_id,
            "state": item.state,
            "detail": item.detail,
            "transfers": [
                {
                    "id": t["id"],
                    "state": t["state"],
                    "node": t["node"],
                    "sent": t["instances_sent"],
                    "total": t["instances_total"],
                    "last_error": t["last_error"],
                }
                for t in item.transfers
            ],
            "retrievals": [
                {
                    "id": r["id"],
                    "state": r["state"],
                    "attempts": r["attempts"],
                    "last_error": r["last_error"],
                    "completed": r["completed"],
                }
                for r in item.retrievals
            ],
        }
        if item.study_id is not None:
            row = s.execute(
                select(Study, Patient).join(Patient, Patient.id == Study.patient_pk).where(Study.id == item.study_id)
            ).first()
            if row is not None:
                study, patient = row
                info.update(
                    patient_name=patient.name,
                    patient_id=patient.patient_id,
                    accession=study.accession_number,
                    study_date=study.study_date,
                    modalities=study.modalities,
                    description=study.description,
                    images=study.num_instances,
                )
        studies_out.append(info)
    body["studies"] = studies_out
    body["messages"] = [
        {"id": m.id, "author": m.author_name, "institution_id": m.institution_id, "body": m.body, "at": iso(m.at)}
        for m in s.scalars(
            select(TransactionMessage).where(TransactionMessage.transaction_id == tx.id).order_by(TransactionMessage.id)
        )
    ]
    body["attachments"] = [
        attachment_row(a)
        for a in s.scalars(
            select(TransactionAttachment)
            .where(TransactionAttachment.transaction_id == tx.id)
            .order_by(TransactionAttachment.id)
        )
    ]
    body["source_is_me"] = tx.source_institution_id == p.institution_id
    return body


def attachment_row(a: TransactionAttachment) -> dict[str, Any]:
    return {
        "id": a.id,
        "filename": a.filename,
        "content_type": a.content_type,
        "size": a.size,
        "sha256": a.sha256,
        "scan_state": a.scan_state,
        "uploaded_by": a.uploaded_by,
        "at": iso(a.at),
        "href": f"/api/v1/attachments/{a.id}",
    }


def transaction_detail(s: Session, p: Principal, transaction_id: int) -> dict[str, Any]:
    """An exchange: its studies' progress, messages and attachments; the viewing is audited."""
    tx = visible_transaction(s, p, transaction_id)
    body = detail(s, p, tx)
    audit.record(
        s,
        "exchange.view",
        object_type="transaction",
        object_id=tx.id,
        study_uid=body["studies"][0]["study_uid"] if body["studies"] else "",
        detail=f"{len(body['studies'])} studies",
        **p.audit_fields(),
    )
    return body


def destination_choices(s: Session, p: Principal) -> list[dict[str, Any]]:
    """Institutions a user may send to: every other one with an enabled node that receives."""
    receiving = select(Node.institution_id).where(Node.destination.is_(True), Node.enabled.is_(True))
    return [
        {"ods": i.ods_code, "name": i.name}
        for i in s.scalars(
            select(Institution)
            .where(Institution.id != p.institution_id, Institution.id.in_(receiving))
            .order_by(Institution.name)
        )
    ]
