"""Uploads from the browser, as an API: create an upload, add its files in chunks (PUT with the file's
relative path, total size and offset; a file completes when its last byte arrives), review what was
found, send it to another institution (an exchange transaction), or discard it. Each upload is its
creator's and their institution admins'; any other id is 404, audited."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Institution, Node, Upload, User
from imex.routing import priority as levels
from imex.upload import review as review_mod
from imex.upload.send import Choice, send
from imex.upload.staging import Staging, UploadError
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.errors import Problem, Refused
from imex.web.views import person_name
from imex.web.views.uploads import visible_upload

router = APIRouter(prefix="/api/v1", tags=["uploads"])
MAX_OFFSET = 2**53


def staging_for(pt: Portal) -> Staging:
    return Staging(pt.db, pt.config)


def upload_in_path(upload_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> Upload:
    """The upload of the URL, checked before anything else about the request (its query, its body)."""
    return visible_upload(s, p, upload_id)


def _refuse(s: Session, p: Principal, upload_id: int, action: str, exc: UploadError) -> Refused:
    """An audited refusal (the request's transaction commits before the problem is answered)."""
    audit.record(
        s,
        action,
        outcome="failure",
        object_type="upload",
        object_id=upload_id,
        detail=str(exc)[:1000],
        **p.audit_fields(),
    )
    return Refused(exc.status, str(exc))


def review_of(s: Session, pt: Portal, upload: Upload) -> dict[str, Any]:
    s.commit()
    with pt.db.reader() as conn:
        found = review_mod.review(conn, upload, staging_for(pt).folder(upload.id))
    for patient in found["patients"]:
        patient["name"] = person_name(patient["name"])  # FAMILY, Given, as every page shows it
    return found


def _summary(u: Upload) -> dict[str, Any]:
    return {
        "id": u.id,
        "state": u.state,
        "username": u.username,
        "created_at": u.created_at.isoformat() + "Z",
        "expires_at": u.expires_at.isoformat() + "Z",
        "staged_bytes": u.staged_bytes,
        "instances_stored": u.instances_stored,
        "transaction_id": u.transaction_id,
    }


@router.get("/uploads", summary="Your uploads (your institution's, for its admins), newest first")
def list_uploads(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    p.require("studies.send")
    return [
        _summary(u)
        for u in s.scalars(select(Upload).where(scope.upload_clause(p)).order_by(Upload.id.desc()).limit(100))
    ]


@router.post("/uploads", status_code=201, summary="Start an upload (then PUT its files)")
def create_upload(
    p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("studies.send")
    s.commit()
    upload = staging_for(pt).create(p.user_id, p.username, p.institution_id)
    audit.record(s, "upload.create", object_type="upload", object_id=upload.id, **p.audit_fields())
    s.commit()
    return review_of(s, pt, s.get_one(Upload, upload.id))


@router.get("/uploads/destinations", summary="Institutions an upload can be sent to, with their destination nodes")
def destinations(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    p.require("studies.send")
    nodes: dict[int, list[dict[str, Any]]] = {}
    for node in s.scalars(select(Node).where(Node.destination.is_(True), Node.enabled.is_(True)).order_by(Node.name)):
        nodes.setdefault(node.institution_id, []).append({"id": node.id, "name": node.name})
    return [
        {"id": i.id, "ods": i.ods_code, "name": i.name, "nodes": nodes.get(i.id, [])}
        for i in s.scalars(select(Institution).where(Institution.id != p.institution_id).order_by(Institution.ods_code))
        if i.id in nodes
    ]


@router.get("/uploads/{upload_id}", summary="Review an upload: patients, studies, skipped files, DICOMDIRs")
def get_upload(
    upload_id: ObjectId,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    return review_of(s, pt, visible_upload(s, p, upload_id))


@router.put(
    "/uploads/{upload_id}/files",
    summary="Add a file, or the next chunk of one: the body is the bytes from `offset` on",
    openapi_extra={
        "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    },
)
async def put_file(
    request: Request,
    upload: Upload = Depends(upload_in_path),
    path: str = Query(..., min_length=1, max_length=1024, description="The file's relative path"),
    size: int = Query(..., ge=0, le=MAX_OFFSET, description="The whole file's size in bytes"),
    offset: int = Query(0, ge=0, le=MAX_OFFSET, description="Where this chunk starts"),
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    upload_id = upload.id
    staging = staging_for(pt)
    try:
        chunk = await run_in_threadpool(staging.begin_chunk, upload_id, path, size, offset)
    except UploadError as exc:
        raise _refuse(s, p, upload_id, "upload.file", exc) from None
    written = 0
    try:
        with open(chunk.target, "r+b") as fh:
            fh.seek(chunk.offset)
            async for data in request.stream():
                written += len(data)
                if written > chunk.room:
                    raise UploadError(413, f"more bytes arrived than {path[:200]} declared ({size})")
                fh.write(data)
    except UploadError as exc:
        staging.discard_chunk(chunk)
        raise _refuse(s, p, upload_id, "upload.file", exc) from None
    except BaseException:
        staging.discard_chunk(chunk)
        raise
    try:
        return await run_in_threadpool(staging.end_chunk, upload_id, chunk, written)
    except UploadError as exc:
        raise _refuse(s, p, upload_id, "upload.file", exc) from None


class SendIn(BaseModel):
    destination: str = Field(..., min_length=1, max_length=16, description="The destination institution's ODS code")
    node_id: int | None = Field(None, ge=1, le=2**31 - 1, description="One of its nodes (default: its PACS)")
    priority: Literal["routine", "urgent", "emergency"] = "routine"
    recipient: str = Field("", max_length=200, description="Person or team the images are for")
    recipient_user_id: int | None = Field(
        None, ge=1, le=2**31 - 1, description="A user of the destination institution to tell directly"
    )
    subject: str = Field("", max_length=200)
    message: str = Field("", max_length=10000)


@router.post(
    "/uploads/{upload_id}/send",
    status_code=202,
    summary="Send the upload's instances to another institution (stored, then delivered)",
)
def send_upload(
    body: SendIn,
    upload: Upload = Depends(upload_in_path),
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    upload_id = upload.id
    dest = s.scalar(select(Institution).where(Institution.ods_code == body.destination.strip().upper()))
    if dest is None:
        raise Problem(422, f"no institution has the ODS code {body.destination!r}")
    if (
        body.recipient_user_id is not None
        and s.scalar(select(User.institution_id).where(User.id == body.recipient_user_id)) != dest.id
    ):
        raise Problem(422, f"the recipient chosen is not a user of {dest.ods_code}")
    if pt.hub is None:
        raise Problem(503, "this portal runs without a hub to store the upload")
    s.commit()
    choice = Choice(
        dest.id,
        body.node_id,
        levels.parse(body.priority),
        body.recipient.strip(),
        body.recipient_user_id,
        body.message.strip(),
        body.subject.strip(),
    )
    try:
        tid = send(pt.hub.db, staging_for(pt), p, upload.id, choice, quota=getattr(pt.hub, "quota", None))
    except UploadError as exc:
        raise _refuse(s, p, upload_id, "upload.send", exc) from None
    worker = getattr(pt.hub, "uploads", None)
    if worker is not None:
        worker.wake.set()
    s.expire_all()
    return {**review_of(s, pt, s.get_one(Upload, upload.id)), "transaction_id": tid}


@router.delete("/uploads/{upload_id}", summary="Discard an upload and its staged files")
def discard_upload(
    upload_id: ObjectId,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    upload = visible_upload(s, p, upload_id)
    s.commit()
    if not staging_for(pt).discard(upload.id):
        raise Problem(409, f"this upload is {upload.state}; only an upload not yet sent can be discarded")
    audit.record(
        s,
        "upload.discard",
        object_type="upload",
        object_id=upload.id,
        detail=f"{upload.username}'s upload",
        **p.audit_fields(),
    )
    s.commit()
    s.expire_all()
    return review_of(s, pt, s.get_one(Upload, upload.id))
