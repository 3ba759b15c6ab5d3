"""Exchanges (transactions): the list, one with its studies' progress, its messages and attachments;
posting a message; uploading and downloading attachments. Visibility is scope.transaction_clause: the
sending and receiving institutions' permitted users; anything else is 404, audited. The reads shared with
the pages are in web/views/transactions.py."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Retrieval, TransactionAttachment
from imex.exchanges import attachments, messages, retrievals
from imex.exchanges.transactions import overall_state, study_progress
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in, visible_or_deny
from imex.web.errors import Problem, Refused
from imex.web.views import transactions as tx_views
from imex.web.views.transactions import TransactionPage, attachment_row, transaction_detail, visible_transaction

router = APIRouter(prefix="/api/v1", tags=["exchanges"])


@router.get("/transactions", response_model=TransactionPage, summary="Exchanges sent or received")
def list_transactions(
    direction: Literal["all", "incoming", "outgoing"] = "all",
    state: Literal["retrieving", "sending", "delivered", "failed"] | None = None,
    kind: Literal["push", "preauthorised", "request", "upload"] | None = None,
    limit: int = Query(50, ge=1, le=200),
    offset: int = Query(0, ge=0, le=10**6),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> TransactionPage:
    return tx_views.list_transactions(s, p, direction=direction, state=state, kind=kind, limit=limit, offset=offset)


@router.get("/transactions/{transaction_id}", summary="An exchange: its studies' progress, messages and attachments")
def get_transaction(
    transaction_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    return transaction_detail(s, p, transaction_id)


class MessageIn(BaseModel):
    body: str = Field(..., min_length=1, max_length=messages.MAX_BODY)


@router.post("/transactions/{transaction_id}/messages", status_code=201, summary="Post a message on an exchange")
def post_message(
    transaction_id: ObjectId, body: MessageIn, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    tx = visible_transaction(s, p, transaction_id)
    mid = messages.post(
        s.connection(),
        tx.id,
        author_user_id=p.user_id,
        author_name=p.username,
        institution_id=p.institution_id,
        body=body.body,
    )
    audit.record(
        s, "exchange.message", object_type="transaction", object_id=tx.id, detail=f"message {mid}", **p.audit_fields()
    )
    return {"id": mid, "transaction_id": tx.id}


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await upload.read(1 << 20)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise attachments.too_large(limit)
        chunks.append(chunk)


@router.post("/attachments", status_code=201, summary="Attach a document (PDF, PNG, JPEG, plain text) to an exchange")
async def upload_attachment(
    transaction_id: int = Form(..., ge=1, le=2**31 - 1),
    file: UploadFile = File(...),
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    tx = visible_transaction(s, p, transaction_id)
    s.commit()  # no write lock held while the body is read and scanned
    limit = pt.config["exchange.max_attachment_bytes"]
    try:
        data = await _read_limited(file, limit)
        checked = attachments.check(
            file.filename or "",
            data,
            max_bytes=limit,
            scan_command=pt.config["exchange.scan_command"],
            scan_timeout=pt.config["exchange.scan_timeout_seconds"],
        )
    except attachments.AttachmentRefused as exc:
        audit.record(
            s,
            "exchange.attachment",
            outcome="failure",
            object_type="transaction",
            object_id=tx.id,
            detail=f"refused {attachments.safe_name(file.filename or '')!r}: {exc}"[:4000],
            **p.audit_fields(),
        )
        raise Refused(413 if isinstance(exc, attachments.AttachmentTooLarge) else 415, str(exc)) from None
    aid = attachments.store(
        s.connection(),
        pt.hub.store,  # type: ignore[union-attr]
        tx.id,
        checked,
        user_id=p.user_id,
        username=p.username,
    )
    audit.record(
        s,
        "exchange.attachment",
        object_type="attachment",
        object_id=aid,
        detail=f"{checked.filename} ({checked.content_type}, {len(checked.data)} bytes, {checked.scan_state}) "
        f"on exchange {tx.id}",
        **p.audit_fields(),
    )
    other = tx.destination_institution_id if p.institution_id == tx.source_institution_id else tx.source_institution_id
    messages.tell(s.connection(), tx, other, p.institution_id, "New document on exchange")
    row = s.get(TransactionAttachment, aid)
    return attachment_row(row)  # type: ignore[arg-type]


@router.get(
    "/attachments/{attachment_id}",
    summary="Download an attachment (always as a file, never shown inline)",
    response_class=Response,
)
def download_attachment(
    attachment_id: ObjectId,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> Response:
    p.require("transfers.view")
    found = visible_or_deny(
        s,
        p,
        s.execute(scope.attachments_query(p).where(TransactionAttachment.id == attachment_id)).first(),
        "attachment",
        attachment_id,
    )
    a, tx = found
    try:
        data = pt.hub.store.read(a.blob_key)  # type: ignore[union-attr]
    except FileNotFoundError:
        raise Problem(410, "this attachment's file is no longer kept") from None
    audit.record(
        s,
        "exchange.attachment.download",
        object_type="attachment",
        object_id=a.id,
        detail=f"{a.filename} from exchange {tx.id}",
        **p.audit_fields(),
    )
    ascii_name = "".join(ch if ch.isascii() and ch.isprintable() and ch not in '"\\' else "_" for ch in a.filename)
    return Response(
        data,
        media_type=a.content_type,
        headers={
            "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(a.filename, safe='')}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )


@router.get(
    "/transactions/{transaction_id}/progress",
    summary="An exchange's state and each study's state (no patient data; what its page polls)",
)
def get_progress(
    transaction_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    tx = visible_transaction(s, p, transaction_id)
    progress = study_progress(s.connection(), tx)
    return {
        "id": tx.id,
        "state": overall_state(progress),
        "studies": [{"study_uid": x.study_uid, "state": x.state, "detail": x.detail} for x in progress],
    }


@router.post(
    "/transactions/{transaction_id}/retry",
    summary="Ask the sender's PACS again for the studies of an "
    "exchange whose retrieval failed (after fixing the cause)",
)
def retry_retrievals(
    transaction_id: ObjectId,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    tx = visible_transaction(s, p, transaction_id)
    p.require("studies.send")
    if tx.source_institution_id != p.institution_id and not p.is_system_admin:
        audit.record(
            s,
            "access.denied",
            outcome="denied",
            object_type="transaction",
            object_id=tx.id,
            detail="retry of another institution's retrievals",
            **p.audit_fields(),
        )
        raise Refused(403, "only the sending institution can ask its PACS again")
    failed = list(s.scalars(select(Retrieval.id).where(Retrieval.transaction_id == tx.id, Retrieval.state == "failed")))
    if not failed:
        raise Problem(409, "no retrieval of this exchange has failed; nothing to retry")
    s.commit()
    retried = sum(1 for rid in failed if retrievals.retry(pt.db, rid))
    audit.record(
        s,
        "exchange.retry",
        object_type="transaction",
        object_id=tx.id,
        detail=f"{retried} retrieval(s) asked again",
        **p.audit_fields(),
    )
    return {"retried": retried}
