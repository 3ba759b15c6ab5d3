"""STOW-RS (PS3.18 10.5): instances posted as multipart/related application/dicom are stored through the
same ingest path as DICOM arrivals (blob store, index, then the router decides where they go), attributed
to the caller's institution. A caller may add to new studies and their own institution's, never to a
study or instance another institution sent."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Instance, Study
from imex.dicom.parse import InvalidInstance, attribute_tag, read_instance
from imex.dicom.part10 import chunks_to_store, dataset_offset, read_meta
from imex.index.ingest import Source
from imex.web.deps import portal, signed_in
from imex.web.dicomweb import multipart
from imex.web.dicomweb.common import DicomWebRoute, Session_, base_url, study_row
from imex.web.errors import Problem

router = APIRouter(prefix="/dicomweb", route_class=DicomWebRoute, include_in_schema=False)

CALLING_AET = "STOW-RS"
# Failure Reason (0008,1197) values: PS3.4 C.4.2.1.4 and PS3.18 Table I.2-1
CANNOT_UNDERSTAND = 0xC000
REFUSED = 0xA700
NOT_PERMITTED = 0xC122
STUDY_MISMATCH = 0xC409


@dataclass
class Outcome:
    sop_class: str
    sop_uid: str
    study_uid: str
    series_uid: str = ""
    failure: int | None = None
    reason: str = ""


def _store_one(request: Request, s: Session, p: Principal, data: bytes, study_uid: str | None) -> Outcome:
    hub = portal(request).hub
    assert hub is not None
    try:
        meta = read_meta(data)
        syntax = meta[0x0010]
        offset = dataset_offset(data)
        dataset = data[offset:]
        code_tag = attribute_tag(hub.config["routing.code_attribute"])
        fields = read_instance(dataset, syntax, code_tag=code_tag)
    except (InvalidInstance, struct.error, ValueError) as exc:
        return Outcome("", "", "", failure=getattr(exc, "status", CANNOT_UNDERSTAND), reason=str(exc)[:200])
    out = Outcome(fields.sop_class_uid, fields.sop_uid, fields.study_uid, fields.series_uid)
    if study_uid is not None and fields.study_uid != study_uid:
        out.failure, out.reason = STUDY_MISMATCH, "the instance belongs to another study than the one posted to"
        return out
    foreign = s.scalar(select(Study.id).where(Study.study_uid == fields.study_uid, scope.foreign_study_clause(p)))
    foreign = foreign or s.scalar(select(Instance.id).join(Study, Study.id == Instance.study_id).where(
        Instance.sop_uid == fields.sop_uid, scope.foreign_study_clause(p)))
    if foreign:
        out.failure, out.reason = NOT_PERMITTED, "another institution's study or instance cannot be added to"
        return out
    quota = getattr(hub, "quota", None)  # the same storage limits as DICOM arrivals
    refusal = quota.refusal(p.institution_id, len(dataset)) if quota is not None else None
    if refusal:
        out.failure, out.reason = REFUSED, refusal
        return out
    s.commit()  # end this read transaction: on SQLite it could not write the audit events after ingest's commit
    try:
        chunks = chunks_to_store(data, meta, fields.sop_class_uid, fields.sop_uid, syntax, CALLING_AET)
        stored = hub.ingest.store_instance(chunks, syntax, fields, Source(p.institution_id, None, CALLING_AET, hub.config["dicom.ae_title"]))
    except OSError as exc:
        out.failure, out.reason = REFUSED, f"the hub could not store it: {type(exc).__name__}"
        return out
    if quota is not None and stored.outcome == "new":
        quota.stored(p.institution_id, stored.size)
    return out


def _element(vr: str, value: object) -> dict:
    return {"vr": vr, "Value": [value]}


def _answer(request: Request, outcomes: list[Outcome]) -> dict:
    root = base_url(request)
    body: dict = {}
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [{
            "00081150": _element("UI", o.sop_class), "00081155": _element("UI", o.sop_uid),
            "00081190": _element("UR", f"{root}/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_uid}"),
        } for o in stored]}
        if len({o.study_uid for o in stored}) == 1:
            body["00081190"] = _element("UR", f"{root}/studies/{stored[0].study_uid}")
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [{
            **({"00081150": _element("UI", o.sop_class)} if o.sop_class else {}),
            **({"00081155": _element("UI", o.sop_uid)} if o.sop_uid else {}),
            "00081197": _element("US", o.failure),
        } for o in failed]}
    return body


def _store(request: Request, s: Session, p: Principal, body: bytes, study_uid: str | None) -> Response:
    p.require("studies.send")
    if study_uid is not None and s.scalar(select(Study.id).where(Study.study_uid == study_uid)) is not None:
        study_row(s, p, study_uid)  # an existing study the caller may not see is 404, as in every route
    part_type, parts = multipart.parse(request.headers.get("content-type", ""), body)
    if part_type not in ("application/dicom", ""):
        raise Problem(415, "STOW-RS takes application/dicom parts (metadata with bulk data is not supported)")
    outcomes = []
    for part in parts:
        if part.media_type not in ("application/dicom", ""):
            outcomes.append(Outcome("", "", "", failure=CANNOT_UNDERSTAND, reason=f"part of type {part.media_type}"))
            continue
        outcomes.append(_store_one(request, s, p, part.body, study_uid))
    stored = [o for o in outcomes if o.failure is None]
    for uid in sorted({o.study_uid for o in stored}):
        audit.record(s, "study.store", study_uid=uid, object_type="study", object_id=uid,
                     detail=f"STOW-RS: {sum(o.study_uid == uid for o in stored)} instance(s)", **p.audit_fields())
    for o in outcomes:
        if o.failure is not None:
            audit.record(s, "study.store", outcome="failure", study_uid=o.study_uid, object_type="instance",
                         object_id=o.sop_uid, detail=f"STOW-RS refused: {o.reason}", **p.audit_fields())
    status = 200 if not [o for o in outcomes if o.failure is not None] else (202 if stored else 409)
    return JSONResponse(_answer(request, outcomes), status_code=status, media_type="application/dicom+json")


@router.post("/studies")
async def store_instances(request: Request, p: Principal = Depends(signed_in), s: Session = Session_) -> Response:
    return await run_in_threadpool(_store, request, s, p, await request.body(), None)


@router.post("/studies/{study_uid}")
async def store_study_instances(study_uid: str, request: Request, p: Principal = Depends(signed_in),
                                s: Session = Session_) -> Response:
    return await run_in_threadpool(_store, request, s, p, await request.body(), study_uid)
