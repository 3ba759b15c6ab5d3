"""Worklists, transfers, studies and quarantine."""
from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import asc, desc, func, or_, select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.db.models import Instance, Series, Study, Transfer, TransferEvent, TransferItem, Worklist
from imex.auth import scope
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in, visible_or_deny
from imex.web.errors import Problem
from imex.web.views import iso, study_row, transfer_row
from imex.routing import queue

router = APIRouter(prefix="/api/v1", tags=["transfers"])

STATES = ("pending", "sending", "delivered", "confirmed", "failed", "cancelled", "held")
SORTS = {
    "received": scope.Study.first_received_at,
    "delivered": Transfer.delivered_at,
    "updated": Transfer.updated_at,
    "study_date": Study.study_date,
    "state": Transfer.state,
    "images": Study.num_instances,
    "id": Transfer.id,
}
_DATE = re.compile(r"^\d{8}$")


class TransferPage(BaseModel):
    total: int
    items: list[dict[str, Any]]


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"


def worklist_of(s: Session, p: Principal, worklist_id: int) -> Worklist:
    wl = visible_or_deny(s, p, s.scalar(scope.worklists_query(p).where(Worklist.id == worklist_id)),
                         "worklist", worklist_id)
    return wl


def list_transfers(s: Session, p: Principal, *, direction: str = "all", state: str | None = None, q: str = "",
                   modality: str = "", date_from: str = "", date_to: str = "", worklist: int | None = None,
                   sort: str = "received", order: str = "desc", limit: int = 50, offset: int = 0) -> TransferPage:
    stmt = scope.transfers_query(p).where(scope.direction_clause(p, direction))
    if state:
        stmt = stmt.where(Transfer.state == state)
    if q.strip():
        pattern = _like(q.strip())
        stmt = stmt.where(or_(scope.Patient.name.ilike(pattern, escape="\\"),
                              scope.Patient.patient_id.ilike(pattern, escape="\\"),
                              Study.accession_number.ilike(pattern, escape="\\"),
                              Study.description.ilike(pattern, escape="\\")))
    if modality.strip():
        stmt = stmt.where(Study.modalities.ilike(_like(modality.strip().upper()), escape="\\"))
    for value, name in ((date_from, "date_from"), (date_to, "date_to")):
        if value and not _DATE.match(value):
            raise Problem(422, f"{name} must be a date as YYYYMMDD, not {value[:20]!r}")
    if date_from:
        stmt = stmt.where(Study.study_date >= date_from)
    if date_to:
        stmt = stmt.where(Study.study_date <= date_to)
    if worklist is not None:
        stmt = stmt.where(scope.worklist_clause(worklist_of(s, p, worklist)))
    total = s.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    column = SORTS[sort]
    stmt = stmt.order_by(desc(column) if order == "desc" else asc(column), desc(Transfer.id))
    rows = s.execute(stmt.limit(limit).offset(offset)).all()
    return TransferPage(total=total, items=[transfer_row(p, *row) for row in rows])


class TransferFilters:
    """The worklist's filters, shared by the list, its CSV export and bulk retry."""

    def __init__(
        self,
        direction: Literal["all", "incoming", "outgoing"] = "all",
        state: Literal["pending", "sending", "delivered", "confirmed", "failed", "cancelled", "held"] | None = None,
        q: str = Query("", max_length=64, description="Patient name or ID, accession number or description"),
        modality: str = Query("", max_length=16),
        date_from: str = Query("", max_length=8, description="Study date from, YYYYMMDD"),
        date_to: str = Query("", max_length=8, description="Study date to, YYYYMMDD"),
        worklist: int | None = Query(None, ge=1, le=2**31 - 1, description="A virtual node (worklist) id"),
        sort: Literal["received", "delivered", "updated", "study_date", "state", "images", "id"] = "received",
        order: Literal["asc", "desc"] = "desc",
    ) -> None:
        self.values = dict(direction=direction, state=state, q=q, modality=modality, date_from=date_from,
                           date_to=date_to, worklist=worklist, sort=sort, order=order)

    def page(self, s: Session, p: Principal, limit: int, offset: int) -> TransferPage:
        found = list_transfers(s, p, **self.values, limit=limit, offset=offset)  # type: ignore[arg-type]
        q = str(self.values["q"]).strip()
        if q:
            audit.record(s, "search", detail=f"worklist search {q[:64]!r}: {found.total} result(s)",
                         **p.audit_fields())
        return found


@router.get("/transfers", response_model=TransferPage, summary="Incoming and outgoing transfers (a worklist)")
def get_transfers(filters: TransferFilters = Depends(), limit: int = Query(50, ge=1, le=500),
                  offset: int = Query(0, ge=0, le=10**7), p: Principal = Depends(signed_in),
                  s: Session = Depends(db_session)) -> TransferPage:
    p.require("transfers.view")
    return filters.page(s, p, limit, offset)


EXPORT_LIMIT = 10000
_CSV_COLUMNS = ("id", "state", "direction", "priority", "patient_name", "patient_id", "birth_date", "accession_number",
                "study_date", "modalities", "description", "images", "source", "destination", "received_at",
                "delivered_at", "confirmed_at", "instances_sent", "instances_total", "attempts", "last_error")


@router.get("/transfers/export", summary=f"The worklist as CSV (at most {EXPORT_LIMIT} rows), audited",
            response_class=StreamingResponse)
def export_transfers(filters: TransferFilters = Depends(), p: Principal = Depends(signed_in),
                     s: Session = Depends(db_session)) -> StreamingResponse:
    from imex.audit.export import csv_lines

    p.require("transfers.view")
    found = filters.page(s, p, EXPORT_LIMIT, 0)
    audit.record(s, "transfers.export", detail=f"{len(found.items)} transfer(s) as CSV", **p.audit_fields())
    s.commit()

    def rows():  # type: ignore[no-untyped-def]
        for t in found.items:
            yield [t["source"]["ods"] if c == "source" else t["destination"]["ods"] if c == "destination" else t[c]
                   for c in _CSV_COLUMNS]

    return StreamingResponse(csv_lines(_CSV_COLUMNS, rows()), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="imex-transfers.csv"'})


class BulkRetry(BaseModel):
    direction: Literal["all", "incoming", "outgoing"] = "all"


@router.post("/transfers/retry-failed", summary="Retry every failed transfer you may manage (at most 500)")
def retry_failed(body: BulkRetry, p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                 s: Session = Depends(db_session)) -> dict[str, Any]:
    p.require("transfers.manage")
    found = list_transfers(s, p, direction=body.direction, state="failed", sort="id", order="asc", limit=500)
    s.commit()
    retried = []
    for t in found.items:  # each retry is its own transaction (on SQLite, s must not hold the lock meanwhile)
        try:
            queue.retry(pt.db, t["id"])
        except queue.QueueError:
            continue  # changed meanwhile (retried or cancelled by someone else)
        retried.append(t)
    for t in retried:
        audit.record(s, "transfer.retry", study_uid=t["study_uid"], patient_id=t["patient_id"],
                     object_type="transfer", object_id=t["id"], detail="bulk retry of failed transfers",
                     **p.audit_fields())
    s.commit()
    retried = [t["id"] for t in retried]
    return {"retried": retried}


def visible_transfer(s: Session, p: Principal, transfer_id: int) -> dict[str, Any]:
    row = visible_or_deny(s, p, s.execute(scope.transfers_query(p).where(Transfer.id == transfer_id)).first(),
                          "transfer", transfer_id)
    return transfer_row(p, *row)


@router.get("/transfers/{transfer_id}", summary="A transfer with its history and per-instance errors")
def get_transfer(transfer_id: ObjectId, p: Principal = Depends(signed_in),
                 s: Session = Depends(db_session)) -> dict[str, Any]:
    p.require("transfers.view")
    detail = visible_transfer(s, p, transfer_id)
    events = s.execute(select(TransferEvent).where(TransferEvent.transfer_id == transfer_id)
                       .order_by(TransferEvent.id)).scalars().all()
    failures = s.execute(select(TransferItem.error, TransferItem.status, Instance.sop_uid)
                         .join(Instance, Instance.id == TransferItem.instance_id)
                         .where(TransferItem.transfer_id == transfer_id, TransferItem.error.is_not(None))
                         .limit(100)).all()
    detail["events"] = [{"at": iso(e.at), "event": e.event, "detail": e.detail} for e in events]
    detail["instance_errors"] = [{"sop_instance_uid": f.sop_uid, "status": f.status, "error": f.error}
                                 for f in failures]
    audit.record(s, "transfer.view", study_uid=detail["study_uid"], patient_id=detail["patient_id"],
                 object_type="transfer", object_id=transfer_id, **p.audit_fields())
    return detail


class Reason(BaseModel):
    reason: str = Field("", max_length=500)


def _operate(s: Session, p: Principal, transfer_id: int, action: str, reason: str, operation) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    p.require("transfers.manage")
    detail = visible_transfer(s, p, transfer_id)
    s.commit()  # the queue functions run their own transaction
    try:
        operation()
    except queue.QueueError as exc:
        raise Problem(409, str(exc)) from None
    audit.record(s, action, study_uid=detail["study_uid"], patient_id=detail["patient_id"], object_type="transfer",
                 object_id=transfer_id, detail=reason, **p.audit_fields())
    s.commit()
    return visible_transfer(s, p, transfer_id)


@router.post("/transfers/{transfer_id}/retry", summary="Retry a failed or cancelled transfer now")
def retry_transfer(transfer_id: ObjectId, p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                   s: Session = Depends(db_session)) -> dict[str, Any]:
    return _operate(s, p, transfer_id, "transfer.retry", "", lambda: queue.retry(pt.db, transfer_id))


@router.post("/transfers/{transfer_id}/cancel", summary="Cancel a transfer")
def cancel_transfer(transfer_id: ObjectId, body: Reason, p: Principal = Depends(signed_in),
                    pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> dict[str, Any]:
    reason = body.reason.strip() or "cancelled in the portal"
    return _operate(s, p, transfer_id, "transfer.cancel", reason,
                    lambda: queue.cancel(pt.db, transfer_id, f"{reason} (by {p.username})"))


class ReconcileIn(BaseModel):
    patient_id: str = Field(..., min_length=1, max_length=64, description="The patient ID to send with "
                            "(an NHS number, or the destination's own ID for the patient)")
    accession_number: str | None = Field(None, max_length=16, description="The accession number to send with")


@router.post("/transfers/{transfer_id}/reconcile",
             summary="Release a transfer held for reconciliation with the patient ID (and accession) to use")
def reconcile_transfer(transfer_id: ObjectId, body: ReconcileIn, p: Principal = Depends(signed_in),
                       pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> dict[str, Any]:
    from imex.harmonise.reconcile import ReconcileError, reconcile

    p.require("transfers.manage")
    detail = visible_transfer(s, p, transfer_id)
    s.commit()
    try:
        reconcile(pt.db, transfer_id, body.patient_id, body.accession_number or None, actor=p.username)
    except ReconcileError as exc:
        raise Problem(409 if "not held" in str(exc) else 422, str(exc)) from None
    audit.record(s, "transfer.reconcile", study_uid=detail["study_uid"], patient_id=detail["patient_id"],
                 object_type="transfer", object_id=transfer_id,
                 detail=f"send as patient ID {body.patient_id.strip()[:64]}"
                        + (f", accession {body.accession_number.strip()[:16]}" if body.accession_number else ""),
                 **p.audit_fields())
    s.commit()
    return visible_transfer(s, p, transfer_id)


# -- studies ------------------------------------------------------------------------------------------

def visible_study(s: Session, p: Principal, study_id: int):  # type: ignore[no-untyped-def]
    row = visible_or_deny(s, p, s.execute(scope.studies_query(p).where(Study.id == study_id)).first(),
                          "study", study_id)
    return row


def _reports(s: Session, study_id: int) -> list[dict[str, Any]]:
    """The study's reports, when the HL7 part of the hub is installed."""
    try:
        from imex.reports.history import reports_for_study
    except ImportError:
        return []
    return list(reports_for_study(s.connection(), study_id))


@router.get("/studies/{study_id}", summary="A study with its series, transfers and reports")
def get_study(study_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    study, patient, source = visible_study(s, p, study_id)
    detail = study_row(study, patient, source)
    series = s.execute(select(Series).where(Series.study_id == study_id).order_by(Series.number, Series.id)).scalars()
    detail["series_list"] = [{"series_uid": x.series_uid, "number": x.number, "modality": x.modality,
                              "description": x.description, "body_part": x.body_part, "images": x.num_instances}
                             for x in series]
    transfers = s.execute(scope.transfers_query(p).where(Transfer.study_id == study_id)
                          .order_by(Transfer.id)).all()
    detail["transfers"] = [transfer_row(p, *row) for row in transfers]
    detail["reports"] = _reports(s, study_id)
    detail["expires_at"] = iso(study.expires_at)
    detail["extended_by"] = study.extended_by
    audit.record(s, "study.view", study_uid=study.study_uid, patient_id=patient.patient_id, object_type="study",
                 object_id=study_id, **p.audit_fields())
    return detail


class ExtendRequest(BaseModel):
    reason: str = Field(..., min_length=1, max_length=500, description="Why the study must be kept longer")


@router.post("/studies/{study_id}/extend", summary="Keep a study longer than its retention, once")
def extend_study(study_id: ObjectId, body: ExtendRequest, p: Principal = Depends(signed_in),
                 pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> dict[str, Any]:
    import datetime as dt

    from imex.db.models import utcnow

    p.require("transfers.manage")
    study, patient, _ = visible_study(s, p, study_id)
    if study.expires_at is None:
        raise Problem(409, "this study has no expiry yet (it is still arriving, or is kept until deleted)")
    if study.extended_by:
        raise Problem(409, f"this study was already extended once, by {study.extended_by}")
    before = study.expires_at
    study.expires_at = max(before, utcnow()) + dt.timedelta(hours=pt.config["retention.extend_hours"])
    study.extended_by = p.username
    audit.record(s, "study.extend", study_uid=study.study_uid, patient_id=patient.patient_id, object_type="study",
                 object_id=study_id, detail=f"kept until {study.expires_at:%Y-%m-%d %H:%M} UTC (was "
                                            f"{before:%Y-%m-%d %H:%M}): {body.reason.strip()}", **p.audit_fields())
    s.commit()
    return {"expires_at": iso(study.expires_at), "extended_by": study.extended_by}


# -- quarantine ----------------------------------------------------------------------------------------

@router.get("/quarantine", summary="Studies that matched no route, with the reason")
def get_quarantine(limit: int = Query(100, ge=1, le=500), offset: int = Query(0, ge=0, le=10**7),
                   p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    p.require("quarantine.manage")
    stmt = scope.quarantine_query(p)
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = s.execute(stmt.order_by(desc(Study.last_received_at)).limit(limit).offset(offset)).all()
    return {"total": total, "items": [study_row(*row) for row in rows]}


class RouteRequest(BaseModel):
    to: list[str] = Field(..., min_length=1, max_length=20, description="ODS codes or node names")
    reason: str = Field(..., min_length=1, max_length=500)


class DeleteRequest(BaseModel):
    reason: str = Field(..., min_length=1, max_length=500, description="Why the study is deleted")


def _quarantined(s: Session, p: Principal, study_id: int):  # type: ignore[no-untyped-def]
    p.require("quarantine.manage")
    row = visible_or_deny(s, p, s.execute(scope.quarantine_query(p).where(Study.id == study_id)).first(),
                          "study", study_id, label="quarantined study")
    return row


@router.post("/quarantine/{study_id}/route", summary="Send a quarantined study to the destinations given")
def route_quarantined(study_id: ObjectId, body: RouteRequest, p: Principal = Depends(signed_in),
                      pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> dict[str, Any]:
    from imex.routing.router import route_manually

    study, patient, _ = _quarantined(s, p, study_id)
    s.commit()
    targets = [t.strip() for t in body.to if t.strip()]
    try:
        ids = route_manually(pt.db, study.study_uid, targets, who=p.username)
    except ValueError as exc:
        raise Problem(422, str(exc)) from None
    audit.record(s, "quarantine.route", study_uid=study.study_uid, patient_id=patient.patient_id,
                 object_type="study", object_id=study_id, detail=f"to {', '.join(targets)}: {body.reason}",
                 **p.audit_fields())
    s.commit()
    return {"transfers": ids}


@router.post("/quarantine/{study_id}/delete", summary="Delete a quarantined study and its images")
def delete_quarantined(study_id: ObjectId, body: DeleteRequest, p: Principal = Depends(signed_in),
                       pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> dict[str, Any]:
    from imex.index.remove import delete_study

    study, patient, _ = _quarantined(s, p, study_id)
    reason = body.reason.strip()
    uid, pid = study.study_uid, patient.patient_id
    s.commit()
    deleted = delete_study(pt.db, pt.hub.store if pt.hub else None, study_id,
                           reason=f"deleted from quarantine by {p.username}: {reason}",
                           only_if=Study.route_state == "quarantined")
    if deleted is None:
        raise Problem(409, "the study left quarantine meanwhile (routed, or receiving new images); not deleted")
    audit.record(s, "quarantine.delete", study_uid=uid, patient_id=pid, object_type="study", object_id=study_id,
                 detail=f"{deleted.instances} instance(s) deleted: {reason}", **p.audit_fields())
    s.commit()
    return {"deleted_instances": deleted.instances}
