"""Worklists, transfers, studies and quarantine. The reads they share with the pages are in
web/views/transfers.py; the changes are domain functions (routing.queue, harmonise.reconcile,
retention.extension, routing.router, index.remove) whose typed errors web/errors.py answers."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from imex import audit
from imex.audit.export import csv_lines
from imex.auth.permissions import Principal
from imex.db.models import Study
from imex.index.remove import delete_study
from imex.retention.extension import extend_study as extend
from imex.routing import queue
from imex.routing.reconcile import reconcile
from imex.routing.router import route_manually
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.errors import Problem
from imex.web.views import iso
from imex.web.views.transfers import (
    TransferFilters,
    TransferPage,
    list_transfers,
    quarantine,
    quarantined,
    study_detail,
    transfer_detail,
    visible_study,
    visible_transfer,
)

router = APIRouter(prefix="/api/v1", tags=["transfers"])


@router.get("/transfers", response_model=TransferPage, summary="Incoming and outgoing transfers (a worklist)")
def get_transfers(
    filters: TransferFilters = Depends(),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**7),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> TransferPage:
    p.require("transfers.view")
    return filters.page(s, p, limit, offset)


EXPORT_LIMIT = 10000
_CSV_COLUMNS = (
    "id",
    "state",
    "direction",
    "priority",
    "patient_name",
    "patient_id",
    "birth_date",
    "accession_number",
    "study_date",
    "modalities",
    "description",
    "images",
    "source",
    "destination",
    "received_at",
    "delivered_at",
    "confirmed_at",
    "instances_sent",
    "instances_total",
    "attempts",
    "last_error",
)


@router.get(
    "/transfers/export",
    summary=f"The worklist as CSV (at most {EXPORT_LIMIT} rows), audited",
    response_class=StreamingResponse,
)
def export_transfers(
    filters: TransferFilters = Depends(), p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> StreamingResponse:
    p.require("transfers.view")
    found = filters.page(s, p, EXPORT_LIMIT, 0)
    audit.record(s, "transfers.export", detail=f"{len(found.items)} transfer(s) as CSV", **p.audit_fields())
    s.commit()

    def rows():
        for t in found.items:
            yield [
                t["source"]["ods"] if c == "source" else t["destination"]["ods"] if c == "destination" else t[c]
                for c in _CSV_COLUMNS
            ]

    return StreamingResponse(
        csv_lines(_CSV_COLUMNS, rows()),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="imex-transfers.csv"'},
    )


class BulkRetry(BaseModel):
    direction: Literal["all", "incoming", "outgoing"] = "all"
    # also the transfers still waiting after a failed attempt (the hub would retry them later by itself)
    include_waiting: bool = False


@router.post(
    "/transfers/retry-failed",
    summary="Retry now every failed transfer you may manage, and with include_waiting those waiting after a "
    "failed attempt (at most 500 of each)",
)
def retry_failed(
    body: BulkRetry, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("transfers.manage")
    found = list_transfers(s, p, direction=body.direction, state="failed", sort="id", order="asc", limit=500).items
    if body.include_waiting:
        waiting = list_transfers(s, p, direction=body.direction, state="pending", sort="id", order="asc", limit=500)
        found += [t for t in waiting.items if t["retrying"]]
    s.commit()
    retried = []
    for t in found:  # each retry is its own transaction (on SQLite, s must not hold the lock meanwhile)
        try:
            queue.retry(pt.db, t["id"])
        except queue.QueueError:
            continue  # changed meanwhile (retried or cancelled by someone else)
        retried.append(t)
    for t in retried:
        audit.record(
            s,
            "transfer.retry",
            study_uid=t["study_uid"],
            patient_id=t["patient_id"],
            object_type="transfer",
            object_id=t["id"],
            detail="bulk retry of failed transfers",
            **p.audit_fields(),
        )
    s.commit()
    retried = [t["id"] for t in retried]
    return {"retried": retried}


@router.get("/transfers/{transfer_id}", summary="A transfer with its history and per-instance errors")
def get_transfer(
    transfer_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    return transfer_detail(s, p, transfer_id)


class Reason(BaseModel):
    reason: str = Field("", max_length=500)


def _operate(s: Session, p: Principal, transfer_id: int, action: str, reason: str, operation) -> dict[str, Any]:
    """A queue operation on a transfer `p` may manage; a QueueError (wrong state) is a Conflict."""
    p.require("transfers.manage")
    detail = visible_transfer(s, p, transfer_id)
    s.commit()  # the queue functions run their own transaction
    operation()
    audit.record(
        s,
        action,
        study_uid=detail["study_uid"],
        patient_id=detail["patient_id"],
        object_type="transfer",
        object_id=transfer_id,
        detail=reason,
        **p.audit_fields(),
    )
    s.commit()
    return visible_transfer(s, p, transfer_id)


@router.post("/transfers/{transfer_id}/retry", summary="Retry a failed or cancelled transfer now")
def retry_transfer(
    transfer_id: ObjectId,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    return _operate(s, p, transfer_id, "transfer.retry", "", lambda: queue.retry(pt.db, transfer_id))


@router.post("/transfers/{transfer_id}/cancel", summary="Cancel a transfer")
def cancel_transfer(
    transfer_id: ObjectId,
    body: Reason,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    reason = body.reason.strip() or "cancelled in the portal"
    return _operate(
        s,
        p,
        transfer_id,
        "transfer.cancel",
        reason,
        lambda: queue.cancel(pt.db, transfer_id, f"{reason} (by {p.username})"),
    )


class ReconcileIn(BaseModel):
    patient_id: str = Field(
        ...,
        min_length=1,
        max_length=64,
        description="The patient ID to send with (an NHS number, or the destination's own ID for the patient)",
    )
    accession_number: str | None = Field(None, max_length=16, description="The accession number to send with")


@router.post(
    "/transfers/{transfer_id}/reconcile",
    summary="Release a transfer held for reconciliation with the patient ID (and accession) to use",
)
def reconcile_transfer(
    transfer_id: ObjectId,
    body: ReconcileIn,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    p.require("transfers.manage")
    detail = visible_transfer(s, p, transfer_id)
    s.commit()
    reconcile(pt.db, transfer_id, body.patient_id, body.accession_number or None, actor=p.username)
    audit.record(
        s,
        "transfer.reconcile",
        study_uid=detail["study_uid"],
        patient_id=detail["patient_id"],
        object_type="transfer",
        object_id=transfer_id,
        detail=f"send as patient ID {body.patient_id.strip()[:64]}"
        + (f", accession {body.accession_number.strip()[:16]}" if body.accession_number else ""),
        **p.audit_fields(),
    )
    s.commit()
    return visible_transfer(s, p, transfer_id)


# -- studies ------------------------------------------------------------------------------------------


@router.get("/studies/{study_id}", summary="A study with its series, transfers and reports")
def get_study(
    study_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    return study_detail(s, p, study_id)


class ExtendRequest(BaseModel):
    reason: str = Field(..., min_length=1, max_length=500, description="Why the study must be kept longer")


@router.post("/studies/{study_id}/extend", summary="Keep a study longer than its retention, once")
def extend_study(
    study_id: ObjectId,
    body: ExtendRequest,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    p.require("transfers.manage")
    study, _, _ = visible_study(s, p, study_id)
    extend(s, study.id, pt.config["retention.extend_hours"], body.reason, p)
    s.commit()
    return {"expires_at": iso(study.expires_at), "extended_by": study.extended_by}


# -- quarantine ----------------------------------------------------------------------------------------


@router.get("/quarantine", summary="Studies that matched no route, with the reason")
def get_quarantine(
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**7),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    return quarantine(s, p, limit, offset)


class RouteRequest(BaseModel):
    to: list[str] = Field(..., min_length=1, max_length=20, description="ODS codes or node names")
    reason: str = Field(..., min_length=1, max_length=500)


class DeleteRequest(BaseModel):
    reason: str = Field(..., min_length=1, max_length=500, description="Why the study is deleted")


@router.post("/quarantine/{study_id}/route", summary="Send a quarantined study to the destinations given")
def route_quarantined(
    study_id: ObjectId,
    body: RouteRequest,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    study, patient, _ = quarantined(s, p, study_id)
    s.commit()
    targets = [t.strip() for t in body.to if t.strip()]
    try:
        ids = route_manually(pt.db, study.study_uid, targets, who=p.username)
    except ValueError as exc:  # an unknown destination: the router's own error is a plain ValueError
        raise Problem(422, str(exc)) from None
    audit.record(
        s,
        "quarantine.route",
        study_uid=study.study_uid,
        patient_id=patient.patient_id,
        object_type="study",
        object_id=study_id,
        detail=f"to {', '.join(targets)}: {body.reason}",
        **p.audit_fields(),
    )
    s.commit()
    return {"transfers": ids}


@router.post("/quarantine/{study_id}/delete", summary="Delete a quarantined study and its images")
def delete_quarantined(
    study_id: ObjectId,
    body: DeleteRequest,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    study, patient, _ = quarantined(s, p, study_id)
    reason = body.reason.strip()
    uid, pid = study.study_uid, patient.patient_id
    s.commit()
    deleted = delete_study(
        pt.db,
        pt.hub.store if pt.hub else None,
        study_id,
        reason=f"deleted from quarantine by {p.username}: {reason}",
        only_if=Study.route_state == "quarantined",
    )
    if deleted is None:
        raise Problem(409, "the study left quarantine meanwhile (routed, or receiving new images); not deleted")
    audit.record(
        s,
        "quarantine.delete",
        study_uid=uid,
        patient_id=pid,
        object_type="study",
        object_id=study_id,
        detail=f"{deleted.instances} instance(s) deleted: {reason}",
        **p.audit_fields(),
    )
    s.commit()
    return {"deleted_instances": deleted.instances}
