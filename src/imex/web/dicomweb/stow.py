"""STOW-RS (PS3.18 10.5): instances posted as multipart/related application/dicom are stored through the
same ingest path as DICOM arrivals (blob store, index, then the router decides where they go), attributed
to the caller's institution. A caller may add to new studies and their own institution's, never to a
study or instance another institution sent.

The request is never held in memory: its body is split as it arrives and each part written to a file in
the store's tmp folder (multipart.PartSpooler); each part, once whole, is checked as a stream
(InstanceReader) and copied into the store through the ingest path's Receiving, then its file removed."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Instance, Study
from imex.dicom.parse import IndexFields, InstanceReader, InvalidInstance, attribute_tag
from imex.dicom.part10 import dataset_offset, file_meta, read_meta
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
CHUNK = 1 << 20  # bytes read from a part's file at a time
MAX_META = 1 << 20  # a longer Part 10 file meta group is refused


@dataclass
class Outcome:
    sop_class: str
    sop_uid: str
    study_uid: str
    series_uid: str = ""
    failure: int | None = None
    reason: str = ""


def _header(fh: BinaryIO, size: int) -> bytes:
    """The part's preamble, 'DICM' and file meta group (ValueError when it is not a Part 10 file)."""
    prefix = fh.read(min(size, MAX_META))
    offset = dataset_offset(prefix)
    if len(prefix) < size and offset + 8 > len(prefix):
        raise ValueError(f"the DICOM file meta group is longer than {MAX_META} bytes")
    return prefix[:offset]


def _dataset_chunks(fh: BinaryIO, offset: int) -> Iterator[bytes]:
    fh.seek(offset)
    while chunk := fh.read(CHUNK):
        yield chunk


def _check(fh: BinaryIO, size: int, code_tag: int | None) -> tuple[bytes, dict[int, str], IndexFields]:
    """(the part's own header, its meta group's values, the index fields), reading the dataset as a stream."""
    header = _header(fh, size)
    meta = read_meta(header)
    reader = InstanceReader(meta[0x0010], code_tag=code_tag)
    for chunk in _dataset_chunks(fh, len(header)):
        reader.feed(chunk)
    return header, meta, reader.finish()


def _store_one(
    request: Request, s: Session, p: Principal, part: multipart.SpooledPart, study_uid: str | None
) -> Outcome:
    hub = portal(request).hub
    assert hub is not None
    with open(part.path, "rb") as fh:
        try:
            header, meta, fields = _check(fh, part.size, attribute_tag(hub.config["routing.code_attribute"]))
        except (InvalidInstance, struct.error, ValueError) as exc:
            return Outcome("", "", "", failure=getattr(exc, "status", CANNOT_UNDERSTAND), reason=str(exc)[:200])
        out = Outcome(fields.sop_class_uid, fields.sop_uid, fields.study_uid, fields.series_uid)
        if study_uid is not None and fields.study_uid != study_uid:
            out.failure, out.reason = STUDY_MISMATCH, "the instance belongs to another study than the one posted to"
            return out
        foreign = s.scalar(select(Study.id).where(Study.study_uid == fields.study_uid, scope.foreign_study_clause(p)))
        foreign = foreign or s.scalar(
            select(Instance.id)
            .join(Study, Study.id == Instance.study_id)
            .where(Instance.sop_uid == fields.sop_uid, scope.foreign_study_clause(p))
        )
        if foreign:
            out.failure, out.reason = NOT_PERMITTED, "another institution's study or instance cannot be added to"
            return out
        quota = getattr(hub, "quota", None)  # the same storage limits as DICOM arrivals
        refusal = quota.refusal(p.institution_id, part.size - len(header)) if quota is not None else None
        if refusal:
            out.failure, out.reason = REFUSED, refusal
            return out
        s.commit()  # end this read transaction: on SQLite it could not write the audit events after ingest's commit
        # the file as it came when its meta group names this instance (retrieved byte for byte), else its
        # dataset behind a meta group of the hub's, as for DICOM arrivals
        syntax, offset = meta[0x0010], len(header)
        if meta.get(0x0003) != fields.sop_uid or meta.get(0x0002) != fields.sop_class_uid:
            header = file_meta(fields.sop_class_uid, fields.sop_uid, syntax, CALLING_AET)
        try:
            receiving = hub.ingest.receive(header)
            try:
                for chunk in _dataset_chunks(fh, offset):
                    receiving.write(chunk)
                stored = hub.ingest.store_received(
                    receiving, syntax, fields, Source(p.institution_id, None, CALLING_AET, hub.config["dicom.ae_title"])
                )
            except BaseException:
                receiving.discard()
                raise
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
        body["00081199"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _element("UI", o.sop_class),
                    "00081155": _element("UI", o.sop_uid),
                    "00081190": _element(
                        "UR", f"{root}/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_uid}"
                    ),
                }
                for o in stored
            ],
        }
        if len({o.study_uid for o in stored}) == 1:
            body["00081190"] = _element("UR", f"{root}/studies/{stored[0].study_uid}")
    if failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    **({"00081150": _element("UI", o.sop_class)} if o.sop_class else {}),
                    **({"00081155": _element("UI", o.sop_uid)} if o.sop_uid else {}),
                    "00081197": _element("US", o.failure),
                }
                for o in failed
            ],
        }
    return body


def _may_store(s: Session, p: Principal, study_uid: str | None) -> None:
    p.require("studies.send")
    if study_uid is not None and s.scalar(select(Study.id).where(Study.study_uid == study_uid)) is not None:
        study_row(s, p, study_uid)  # an existing study the caller may not see is 404, as in every route


def _part(request: Request, s: Session, p: Principal, part: multipart.SpooledPart, study_uid: str | None) -> Outcome:
    """Store one spooled part (run in a worker thread) and remove its file."""
    try:
        if part.media_type not in ("application/dicom", ""):
            return Outcome("", "", "", failure=CANNOT_UNDERSTAND, reason=f"part of type {part.media_type}"[:200])
        return _store_one(request, s, p, part, study_uid)
    finally:
        try:
            os.unlink(part.path)
        except FileNotFoundError:
            pass


def _audit(s: Session, p: Principal, outcomes: list[Outcome]) -> None:
    stored = [o for o in outcomes if o.failure is None]
    for uid in sorted({o.study_uid for o in stored}):
        audit.record(
            s,
            "study.store",
            study_uid=uid,
            object_type="study",
            object_id=uid,
            detail=f"STOW-RS: {sum(o.study_uid == uid for o in stored)} instance(s)",
            **p.audit_fields(),
        )
    for o in outcomes:
        if o.failure is not None:
            audit.record(
                s,
                "study.store",
                outcome="failure",
                study_uid=o.study_uid,
                object_type="instance",
                object_id=o.sop_uid,
                detail=f"STOW-RS refused: {o.reason}",
                **p.audit_fields(),
            )
    s.commit()


async def _store(request: Request, s: Session, p: Principal, study_uid: str | None) -> Response:
    """Read the body part by part (each to a file), storing each part as soon as it is whole."""
    await run_in_threadpool(_may_store, s, p, study_uid)
    part_type, bound = multipart.related(request.headers.get("content-type", ""))
    if part_type not in ("application/dicom", ""):
        raise Problem(415, "STOW-RS takes application/dicom parts (metadata with bulk data is not supported)")
    hub = portal(request).hub
    assert hub is not None
    spool = multipart.PartSpooler(bound, hub.store.tmp)
    outcomes: list[Outcome] = []
    try:
        async for chunk in request.stream():
            for part in spool.write(chunk):
                outcomes.append(await run_in_threadpool(_part, request, s, p, part, study_uid))
        spool.finish()
    except BaseException:
        if outcomes:  # the request failed part way (too large, the client went): what was stored is audited
            await run_in_threadpool(_audit, s, p, outcomes)
        raise
    finally:
        spool.close()
    await run_in_threadpool(_audit, s, p, outcomes)
    failed = [o for o in outcomes if o.failure is not None]
    status = 200 if not failed else (202 if len(failed) < len(outcomes) else 409)
    return JSONResponse(_answer(request, outcomes), status_code=status, media_type="application/dicom+json")


@router.post("/studies")
async def store_instances(request: Request, p: Principal = Depends(signed_in), s: Session = Session_) -> Response:
    return await _store(request, s, p, None)


@router.post("/studies/{study_uid}")
async def store_study_instances(
    study_uid: str, request: Request, p: Principal = Depends(signed_in), s: Session = Session_
) -> Response:
    return await _store(request, s, p, study_uid)
