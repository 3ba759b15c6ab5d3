"""The audit trail for auditors: filtered reading and export as CSV or DICOM audit messages (ATNA)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.web.context import Portal
from imex.web.deps import db_session, portal, signed_in
from imex.web.views import audit_row, iso

router = APIRouter(prefix="/api/v1", tags=["audit"])


def _filter(
    since: dt.datetime | None,
    until: dt.datetime | None,
    action: str,
    outcome: str | None,
    username: str,
    study_uid: str,
    patient_id: str,
    text: str,
):
    from imex.audit.query import AuditFilter

    def naive(value: dt.datetime | None) -> dt.datetime | None:
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    return AuditFilter(
        since=naive(since),
        until=naive(until),
        action=action or None,
        outcome=outcome,
        username=username or None,
        study_uid=study_uid or None,
        patient_id=patient_id or None,
        text=text or None,
    )


class _Params:
    def __init__(
        self,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        action: str = Query("", max_length=64),
        outcome: Literal["success", "failure", "denied"] | None = None,
        username: str = Query("", max_length=64),
        study_uid: str = Query("", max_length=64),
        patient_id: str = Query("", max_length=64),
        text: str = Query("", max_length=100),
    ) -> None:
        self.flt = _filter(since, until, action, outcome, username, study_uid, patient_id, text)


@router.get("/audit", summary="Audit events, newest first (your institution's; all for system admins)")
def get_audit(
    params: _Params = Depends(),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10**7),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    from imex.audit import query

    p.require("audit.view")
    conn = s.connection()
    scope_id = scope.audit_institution(p)
    total = query.count(conn, params.flt, institution_id=scope_id)
    rows = query.events(conn, params.flt, institution_id=scope_id, limit=limit, offset=offset)
    audit.record(s, "audit.search", detail=f"{total} event(s)", **p.audit_fields())
    s.commit()
    return {"total": total, "items": [audit_row(r) for r in rows]}


@router.get(
    "/audit/export",
    summary="Export audit events as CSV or as DICOM audit messages (PS3.15 A.5)",
    response_class=StreamingResponse,
)
def export_audit(
    format: Literal["csv", "atna"] = "csv",
    params: _Params = Depends(),
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> StreamingResponse:
    from imex.audit import atna, export, query

    p.require("audit.view")
    audit.record(s, "audit.export", detail=f"format {format}", **p.audit_fields())
    s.commit()
    scope_id = scope.audit_institution(p)

    def rows():
        with pt.db.reader() as conn:
            offset = 0
            while True:
                batch = query.events(conn, params.flt, institution_id=scope_id, limit=1000, offset=offset)
                yield from batch
                if len(batch) < 1000:
                    break
                offset += 1000

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    if format == "csv":
        body = export.iter_csv(rows())
        media, name = "text/csv; charset=utf-8", f"imex-audit-{stamp}.csv"
    else:
        body = atna.iter_xml(rows(), source_id=pt.config["dicom.ae_title"])
        media, name = "application/xml; charset=utf-8", f"imex-audit-{stamp}.xml"
    return StreamingResponse(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/tombstones", summary="Studies deleted by retention or by an operator: what, when and why")
def get_tombstones(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10**7),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    from sqlalchemy import desc, func, select

    from imex.db.models import Tombstone

    p.require("audit.view")
    query = select(Tombstone)
    scope_id = scope.audit_institution(p)
    if scope_id is not None:
        query = query.where(Tombstone.institution_id == scope_id)
    total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = s.scalars(query.order_by(desc(Tombstone.id)).limit(limit).offset(offset)).all()
    return {
        "total": total,
        "items": [
            {
                "study_uid": t.study_uid,
                "patient_id": t.patient_id,
                "accession_number": t.accession_number,
                "study_date": t.study_date,
                "modalities": t.modalities,
                "instances": t.instances,
                "bytes": t.bytes,
                "first_received_at": iso(t.first_received_at),
                "expired_at": iso(t.expired_at),
                "deleted_at": iso(t.deleted_at),
                "reason": t.reason,
            }
            for t in rows
        ],
    }
