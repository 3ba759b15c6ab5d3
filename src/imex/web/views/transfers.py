"""Reads of transfers, studies and quarantine that the JSON API (web/api/transfers.py, priority.py) and the
pages (web/pages/transfers.py) both show: the worklist with its filters, a transfer with its history, a
study with its series, transfers and reports, the quarantine list, and who may be named a recipient."""

from __future__ import annotations

import re
from typing import Any, Literal

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import asc, desc, func, or_, select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Instance, Node, Series, Study, Transfer, TransferEvent, TransferItem, User, Worklist
from imex.web.deps import visible_or_deny
from imex.web.errors import Problem
from imex.web.views import iso, study_row, transfer_row

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
_ISO_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


class TransferPage(BaseModel):
    total: int
    items: list[dict[str, Any]]


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"


def worklist_of(s: Session, p: Principal, worklist_id: int) -> Worklist:
    wl = visible_or_deny(
        s, p, s.scalar(scope.worklists_query(p).where(Worklist.id == worklist_id)), "worklist", worklist_id
    )
    return wl


def list_transfers(
    s: Session,
    p: Principal,
    *,
    direction: str = "all",
    state: str | None = None,
    q: str = "",
    modality: str = "",
    date_from: str = "",
    date_to: str = "",
    worklist: int | None = None,
    sort: str = "received",
    order: str = "desc",
    limit: int = 50,
    offset: int = 0,
) -> TransferPage:
    stmt = scope.transfers_query(p).where(scope.direction_clause(p, direction))
    if state:
        stmt = stmt.where(Transfer.state == state)
    if q.strip():
        pattern = _like(q.strip())
        stmt = stmt.where(
            or_(
                scope.Patient.name.ilike(pattern, escape="\\"),
                scope.Patient.patient_id.ilike(pattern, escape="\\"),
                Study.accession_number.ilike(pattern, escape="\\"),
                Study.description.ilike(pattern, escape="\\"),
            )
        )
    if modality.strip():
        stmt = stmt.where(Study.modalities.ilike(_like(modality.strip().upper()), escape="\\"))
    # a date input sends YYYY-MM-DD; DICOM and older links use YYYYMMDD
    date_from, date_to = (_ISO_DATE.sub(r"\1\2\3", v) for v in (date_from, date_to))
    for value, name in ((date_from, "date_from"), (date_to, "date_to")):
        if value and not _DATE.match(value):
            raise Problem(422, f"{name} must be a date as YYYY-MM-DD or YYYYMMDD, not {value[:20]!r}")
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
    """The worklist's filters, shared by the list, its CSV export, bulk retry and the worklist page."""

    def __init__(
        self,
        direction: Literal["all", "incoming", "outgoing"] = "all",
        state: Literal["pending", "sending", "delivered", "confirmed", "failed", "cancelled", "held"] | None = None,
        q: str = Query("", max_length=64, description="Patient name or ID, accession number or description"),
        modality: str = Query("", max_length=16),
        date_from: str = Query("", max_length=10, description="Study date from, YYYY-MM-DD or YYYYMMDD"),
        date_to: str = Query("", max_length=10, description="Study date to, YYYY-MM-DD or YYYYMMDD"),
        worklist: int | None = Query(None, ge=1, le=2**31 - 1, description="A virtual node (worklist) id"),
        sort: Literal["received", "delivered", "updated", "study_date", "state", "images", "id"] = "received",
        order: Literal["asc", "desc"] = "desc",
    ) -> None:
        self.values = dict(
            direction=direction,
            state=state,
            q=q,
            modality=modality,
            date_from=date_from,
            date_to=date_to,
            worklist=worklist,
            sort=sort,
            order=order,
        )

    def page(self, s: Session, p: Principal, limit: int, offset: int) -> TransferPage:
        found = list_transfers(s, p, **self.values, limit=limit, offset=offset)  # type: ignore[arg-type]
        q = str(self.values["q"]).strip()
        if q:
            audit.record(s, "search", detail=f"worklist search {q[:64]!r}: {found.total} result(s)", **p.audit_fields())
        return found


def visible_transfer(s: Session, p: Principal, transfer_id: int) -> dict[str, Any]:
    row = visible_or_deny(
        s, p, s.execute(scope.transfers_query(p).where(Transfer.id == transfer_id)).first(), "transfer", transfer_id
    )
    return transfer_row(p, *row)


def transfer_detail(s: Session, p: Principal, transfer_id: int) -> dict[str, Any]:
    """A transfer with its history and per-instance errors; the viewing is audited."""
    p.require("transfers.view")
    detail = visible_transfer(s, p, transfer_id)
    events = (
        s.execute(select(TransferEvent).where(TransferEvent.transfer_id == transfer_id).order_by(TransferEvent.id))
        .scalars()
        .all()
    )
    failures = s.execute(
        select(TransferItem.error, TransferItem.status, Instance.sop_uid)
        .join(Instance, Instance.id == TransferItem.instance_id)
        .where(TransferItem.transfer_id == transfer_id, TransferItem.error.is_not(None))
        .limit(100)
    ).all()
    detail["events"] = [{"at": iso(e.at), "event": e.event, "detail": e.detail} for e in events]
    detail["instance_errors"] = [
        {"sop_instance_uid": f.sop_uid, "status": f.status, "error": f.error} for f in failures
    ]
    audit.record(
        s,
        "transfer.view",
        study_uid=detail["study_uid"],
        patient_id=detail["patient_id"],
        object_type="transfer",
        object_id=transfer_id,
        **p.audit_fields(),
    )
    return detail


def may_change_priority(p: Principal) -> None:
    """Senders (studies.send) and those who manage transfers may set priority and recipient."""
    if not p.can("studies.send"):
        p.require("transfers.manage")


def recipient_choices(s: Session, p: Principal, transfer_id: int) -> list[dict[str, Any]]:
    """Users of the transfer's destination institution who can be named as its recipient."""
    may_change_priority(p)
    visible_transfer(s, p, transfer_id)
    inst = s.scalar(
        select(Node.institution_id)
        .join(Transfer, Transfer.destination_node_id == Node.id)
        .where(Transfer.id == transfer_id)
    )
    users = s.scalars(
        select(User)
        .where(User.institution_id == inst, User.disabled.is_(False))
        .order_by(User.full_name, User.username)
    ).all()
    return [{"id": u.id, "username": u.username, "full_name": u.full_name} for u in users]


# -- studies ------------------------------------------------------------------------------------------


def visible_study(s: Session, p: Principal, study_id: int):
    """(study, patient, source institution) when `p` may see the study; otherwise 404, audited."""
    row = visible_or_deny(
        s, p, s.execute(scope.studies_query(p).where(Study.id == study_id)).first(), "study", study_id
    )
    return row


def _reports(s: Session, study_id: int) -> list[dict[str, Any]]:
    """The study's reports, when the HL7 part of the hub is installed."""
    try:
        from imex.reports.history import reports_for_study  # optional part: absent in a DICOM-only install
    except ImportError:
        return []
    return list(reports_for_study(s.connection(), study_id))


def study_detail(s: Session, p: Principal, study_id: int) -> dict[str, Any]:
    """A study with its series, transfers and reports; the viewing is audited."""
    study, patient, source = visible_study(s, p, study_id)
    detail = study_row(study, patient, source)
    series = s.execute(select(Series).where(Series.study_id == study_id).order_by(Series.number, Series.id)).scalars()
    detail["series_list"] = [
        {
            "series_uid": x.series_uid,
            "number": x.number,
            "modality": x.modality,
            "description": x.description,
            "body_part": x.body_part,
            "images": x.num_instances,
        }
        for x in series
    ]
    transfers = s.execute(scope.transfers_query(p).where(Transfer.study_id == study_id).order_by(Transfer.id)).all()
    detail["transfers"] = [transfer_row(p, *row) for row in transfers]
    detail["reports"] = _reports(s, study_id)
    detail["expires_at"] = iso(study.expires_at)
    detail["extended_by"] = study.extended_by
    audit.record(
        s,
        "study.view",
        study_uid=study.study_uid,
        patient_id=patient.patient_id,
        object_type="study",
        object_id=study_id,
        **p.audit_fields(),
    )
    return detail


# -- quarantine ----------------------------------------------------------------------------------------


def quarantine(s: Session, p: Principal, limit: int, offset: int) -> dict[str, Any]:
    """Studies that matched no route, newest first, with the reason."""
    p.require("quarantine.manage")
    stmt = scope.quarantine_query(p)
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = s.execute(stmt.order_by(desc(Study.last_received_at)).limit(limit).offset(offset)).all()
    return {"total": total, "items": [study_row(*row) for row in rows]}


def quarantined(s: Session, p: Principal, study_id: int):
    """(study, patient, source institution) of a quarantined study `p` may manage; otherwise 404, audited."""
    p.require("quarantine.manage")
    row = visible_or_deny(
        s,
        p,
        s.execute(scope.quarantine_query(p).where(Study.id == study_id)).first(),
        "study",
        study_id,
        label="quarantined study",
    )
    return row
