"""Reading the audit trail: the filters an information-governance lead uses (when, who, what, which
patient or study, outcome, free text), always within one institution unless the reader runs the hub.

An institution's trail holds what its own people did and what anyone did to its studies (another
hospital's user opening a study that came from here is this hospital's business too).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Select, and_, desc, func, or_, select
from sqlalchemy.engine import Connection

from imex.db.models import Study, audit_events, institutions, patients, studies

_E = audit_events


@dataclass(frozen=True)
class AuditFilter:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    action: str | None = None  # exact, or a prefix ending in "." or "*" (auth.* / auth.)
    outcome: str | None = None
    username: str | None = None
    study_uid: str | None = None
    patient_id: str | None = None
    text: str | None = None


def _like(value: str) -> str:
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(query: Select, flt: AuditFilter, institution_id: int | None) -> Select:
    c = _E.c
    if institution_id is not None:
        own_studies = select(Study.study_uid).where(Study.institution_id == institution_id)
        query = query.where(or_(c.institution_id == institution_id, (c.study_uid != "") & c.study_uid.in_(own_studies)))
    if flt.since is not None:
        query = query.where(c.at >= flt.since)
    if flt.until is not None:
        query = query.where(c.at < flt.until)
    if flt.action:
        action = flt.action.rstrip("*")
        query = query.where(c.action.startswith(action) if action.endswith(".") else c.action == action)
    if flt.outcome:
        query = query.where(c.outcome == flt.outcome)
    if flt.username:
        query = query.where(c.username == flt.username)
    if flt.study_uid:
        query = query.where(c.study_uid == flt.study_uid)
    if flt.patient_id:
        query = query.where(c.patient_id == flt.patient_id)
    if flt.text:
        pattern = _like(flt.text)
        query = query.where(
            or_(
                c.detail.like(pattern, escape="\\"),
                c.object_id.like(pattern, escape="\\"),
                c.action.like(pattern, escape="\\"),
            )
        )
    return query


def count(conn: Connection, flt: AuditFilter, *, institution_id: int | None) -> int:
    return conn.execute(_where(select(func.count()).select_from(_E), flt, institution_id)).scalar_one()


def events(
    conn: Connection, flt: AuditFilter, *, institution_id: int | None, limit: int = 100, offset: int = 0
) -> list:
    """Newest first, each with the ODS code of its institution and, while the hub still holds the study, the
    patient's name (the trail itself keeps identifiers, not names)."""
    query = (
        _where(
            select(_E, institutions.c.ods_code.label("institution"), patients.c.name.label("patient_name"))
            .outerjoin(institutions, institutions.c.id == _E.c.institution_id)
            .outerjoin(studies, and_(_E.c.study_uid != "", studies.c.study_uid == _E.c.study_uid))
            .outerjoin(patients, patients.c.id == studies.c.patient_pk),
            flt,
            institution_id,
        )
        .order_by(desc(_E.c.id))
        .limit(limit)
        .offset(offset)
    )
    return list(conn.execute(query).all())
