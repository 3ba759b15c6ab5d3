"""Exchanges (transactions): the list, one with its studies' progress, its messages and attachments;
posting a message; uploading and downloading attachments. Visibility is scope.transaction_clause: the
sending and receiving institutions' permitted users; anything else is 404, audited."""
from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import desc, func, select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.db.models import Institution, Node
from imex.db.models_exchange import ExchangeTransaction, TransactionAttachment, TransactionMessage
from imex.exchanges import attachments, messages
from imex.exchanges.transactions import overall_state, study_progress
from imex.auth import scope
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in, visible_or_deny
from imex.web.errors import Problem, Refused
from imex.web.views import iso
from imex.routing.priority import name as priority_name

router = APIRouter(prefix="/api/v1", tags=["exchanges"])


def visible_transaction(s: Session, p: Principal, transaction_id: int) -> ExchangeTransaction:
    p.require("transfers.view")
    return visible_or_deny(s, p, s.scalar(scope.transactions_query(p).where(ExchangeTransaction.id == transaction_id)),
                           "transaction", transaction_id, "exchange")


def _institutions(s: Session, *ids: int) -> dict[int, Institution]:
    return {i.id: i for i in s.scalars(select(Institution).where(Institution.id.in_(ids)))}


def summary(s: Session, p: Principal, tx: ExchangeTransaction) -> dict[str, Any]:
    """One line of the list, with the state derived from its studies' retrievals and transfers."""
    progress = study_progress(s.connection(), tx)
    insts = _institutions(s, tx.source_institution_id, tx.destination_institution_id)
    src, dst = insts.get(tx.source_institution_id), insts.get(tx.destination_institution_id)
    return {"id": tx.id, "kind": tx.kind, "subject": tx.subject, "state": overall_state(progress),
            "direction": "outgoing" if tx.source_institution_id == p.institution_id else "incoming",
            "source": src.ods_code if src else "", "source_name": src.name if src else "",
            "destination": dst.ods_code if dst else "", "destination_name": dst.name if dst else "",
            "sender": tx.sender_name, "recipient": tx.recipient, "priority": priority_name(tx.priority),
            "studies": len(progress), "delivered": sum(1 for x in progress if x.state == "delivered"),
            "created_at": iso(tx.created_at)}


class TransactionPage(BaseModel):
    total: int
    items: list[dict[str, Any]]


@router.get("/transactions", response_model=TransactionPage, summary="Exchanges sent or received")
def list_transactions(direction: Literal["all", "incoming", "outgoing"] = "all",
                      state: Literal["retrieving", "sending", "delivered", "failed"] | None = None,
                      kind: Literal["push", "preauthorised", "request", "upload"] | None = None,
                      limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0, le=10**6),
                      p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> TransactionPage:
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
        total, rows = len(found), found[offset:offset + limit]
    return TransactionPage(total=total, items=rows)


def detail(s: Session, p: Principal, tx: ExchangeTransaction) -> dict[str, Any]:
    conn = s.connection()
    progress = study_progress(conn, tx)
    body = summary(s, p, tx)
    from imex.db.models import Patient, Study

    studies_out = []
    for item in progress:
        info: dict[str, Any] = {"study_uid": item.study_uid, "study_id": item.study_id, "state": item.state,
                                "detail": item.detail,
                                "transfers": [{"id": t["id"], "state": t["state"], "node": t["node"],
                                               "sent": t["instances_sent"], "total": t["instances_total"],
                                               "last_error": t["last_error"]} for t in item.transfers],
                                "retrievals": [{"id": r["id"], "state": r["state"], "attempts": r["attempts"],
                                                "last_error": r["last_error"], "completed": r["completed"]}
                                               for r in item.retrievals]}
        if item.study_id is not None:
            row = s.execute(select(Study, Patient).join(Patient, Patient.id == Study.patient_pk)
                            .where(Study.id == item.study_id)).first()
            if row is not None:
                study, patient = row
                info.update(patient_name=patient.name, patient_id=patient.patient_id, accession=study.accession_number,
                            study_date=study.study_date, modalities=study.modalities, description=study.description,
                            images=study.num_instances)
        studies_out.append(info)
    body["studies"] = studies_out
    body["messages"] = [{"id": m.id, "author": m.author_name, "institution_id": m.institution_id, "body": m.body,
                         "at": iso(m.at)} for m in s.scalars(select(TransactionMessage).where(
                             TransactionMessage.transaction_id == tx.id).order_by(TransactionMessage.id))]
    body["attachments"] = [attachment_row(a) for a in s.scalars(select(TransactionAttachment).where(
        TransactionAttachment.transaction_id == tx.id).order_by(TransactionAttachment.id))]
    body["source_is_me"] = tx.source_institution_id == p.institution_id
    return body


def attachment_row(a: TransactionAttachment) -> dict[str, Any]:
    return {"id": a.id, "filename": a.filename, "content_type": a.content_type, "size": a.size,
            "sha256": a.sha256, "scan_state": a.scan_state, "uploaded_by": a.uploaded_by, "at": iso(a.at),
            "href": f"/api/v1/attachments/{a.id}"}


@router.get("/transactions/{transaction_id}", summary="An exchange: its studies' progress, messages and attachments")
def get_transaction(transaction_id: ObjectId, p: Principal = Depends(signed_in),
                    s: Session = Depends(db_session)) -> dict[str, Any]:
    tx = visible_transaction(s, p, transaction_id)
    body = detail(s, p, tx)
    audit.record(s, "exchange.view", object_type="transaction", object_id=tx.id,
                 study_uid=body["studies"][0]["study_uid"] if body["studies"] else "",
                 detail=f"{len(body['studies'])} studies", **p.audit_fields())
    return body


class MessageIn(BaseModel):
    body: str = Field(..., min_length=1, max_length=messages.MAX_BODY)


@router.post("/transactions/{transaction_id}/messages", status_code=201, summary="Post a message on an exchange")
def post_message(transaction_id: ObjectId, body: MessageIn, p: Principal = Depends(signed_in),
                 s: Session = Depends(db_session)) -> dict[str, Any]:
    tx = visible_transaction(s, p, transaction_id)
    try:
        mid = messages.post(s.connection(), tx.id, author_user_id=p.user_id, author_name=p.username,
                            institution_id=p.institution_id, body=body.body)
    except ValueError as exc:
        raise Problem(422, str(exc)) from None
    audit.record(s, "exchange.message", object_type="transaction", object_id=tx.id, detail=f"message {mid}",
                 **p.audit_fields())
    return {"id": mid, "transaction_id": tx.id}


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = await upload.read(1 << 20)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise attachments.too_large(limit)
        chunks.append(chunk)


@router.post("/attachments", status_code=201, summary="Attach a document (PDF, PNG, JPEG, plain text) to an exchange")
async def upload_attachment(transaction_id: int = Form(..., ge=1, le=2**31 - 1), file: UploadFile = File(...),
                            p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                            s: Session = Depends(db_session)) -> dict[str, Any]:
    tx = visible_transaction(s, p, transaction_id)
    s.commit()  # no write lock held while the body is read and scanned
    limit = pt.config["exchange.max_attachment_bytes"]
    try:
        data = await _read_limited(file, limit)
        checked = attachments.check(file.filename or "", data, max_bytes=limit,
                                    scan_command=pt.config["exchange.scan_command"],
                                    scan_timeout=pt.config["exchange.scan_timeout_seconds"])
    except attachments.AttachmentRefused as exc:
        audit.record(s, "exchange.attachment", outcome="failure", object_type="transaction", object_id=tx.id,
                     detail=f"refused {attachments.safe_name(file.filename or '')!r}: {exc}"[:4000], **p.audit_fields())
        raise Refused(413 if isinstance(exc, attachments.AttachmentTooLarge) else 415, str(exc)) from None
    aid = attachments.store(s.connection(), pt.hub.store, tx.id, checked, user_id=p.user_id,  # type: ignore[union-attr]
                            username=p.username)
    audit.record(s, "exchange.attachment", object_type="attachment", object_id=aid,
                 detail=f"{checked.filename} ({checked.content_type}, {len(checked.data)} bytes, {checked.scan_state}) "
                        f"on exchange {tx.id}", **p.audit_fields())
    other = tx.destination_institution_id if p.institution_id == tx.source_institution_id else tx.source_institution_id
    messages.tell(s.connection(), tx, other, p.institution_id, "New document on exchange")
    row = s.get(TransactionAttachment, aid)
    return attachment_row(row)  # type: ignore[arg-type]


@router.get("/attachments/{attachment_id}", summary="Download an attachment (always as a file, never shown inline)",
            response_class=Response)
def download_attachment(attachment_id: ObjectId, p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                        s: Session = Depends(db_session)) -> Response:
    p.require("transfers.view")
    found = visible_or_deny(s, p, s.execute(scope.attachments_query(p).where(
        TransactionAttachment.id == attachment_id)).first(), "attachment", attachment_id)
    a, tx = found
    try:
        data = pt.hub.store.read(a.blob_key)  # type: ignore[union-attr]
    except FileNotFoundError:
        raise Problem(410, "this attachment's file is no longer kept") from None
    audit.record(s, "exchange.attachment.download", object_type="attachment", object_id=a.id,
                 detail=f"{a.filename} from exchange {tx.id}", **p.audit_fields())
    ascii_name = "".join(ch if ch.isascii() and ch.isprintable() and ch not in '"\\' else "_" for ch in a.filename)
    return Response(data, media_type=a.content_type, headers={
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(a.filename, safe='')}",
        "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox; default-src 'none'"})


def destination_choices(s: Session, p: Principal) -> list[dict[str, Any]]:
    """Institutions a user may send to: every other one with an enabled node that receives."""
    receiving = select(Node.institution_id).where(Node.destination.is_(True), Node.enabled.is_(True))
    return [{"ods": i.ods_code, "name": i.name} for i in s.scalars(
        select(Institution).where(Institution.id != p.institution_id, Institution.id.in_(receiving))
        .order_by(Institution.name))]


@router.get("/transactions/{transaction_id}/progress",
            summary="An exchange's state and each study's state (no patient data; what its page polls)")
def get_progress(transaction_id: ObjectId, p: Principal = Depends(signed_in),
                 s: Session = Depends(db_session)) -> dict[str, Any]:
    tx = visible_transaction(s, p, transaction_id)
    progress = study_progress(s.connection(), tx)
    return {"id": tx.id, "state": overall_state(progress),
            "studies": [{"study_uid": x.study_uid, "state": x.state, "detail": x.detail} for x in progress]}


@router.post("/transactions/{transaction_id}/retry", summary="Ask the sender's PACS again for the studies of an "
             "exchange whose retrieval failed (after fixing the cause)")
def retry_retrievals(transaction_id: ObjectId, p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                     s: Session = Depends(db_session)) -> dict[str, Any]:
    tx = visible_transaction(s, p, transaction_id)
    p.require("studies.send")
    if tx.source_institution_id != p.institution_id and not p.is_system_admin:
        audit.record(s, "access.denied", outcome="denied", object_type="transaction", object_id=tx.id,
                     detail="retry of another institution's retrievals", **p.audit_fields())
        raise Refused(403, "only the sending institution can ask its PACS again")
    from imex.db.models_exchange import Retrieval

    failed = list(s.scalars(select(Retrieval.id).where(Retrieval.transaction_id == tx.id, Retrieval.state == "failed")))
    if not failed:
        raise Problem(409, "no retrieval of this exchange has failed; nothing to retry")
    s.commit()
    from imex.exchanges import retrievals

    retried = sum(1 for rid in failed if retrievals.retry(pt.db, rid))
    audit.record(s, "exchange.retry", object_type="transaction", object_id=tx.id,
                 detail=f"{retried} retrieval(s) asked again", **p.audit_fields())
    return {"retried": retried}
