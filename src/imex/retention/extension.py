"""Keeping a study longer than its retention: once per study, by a person who says why (audited). The
retention pass then deletes it at the new time."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.db.models import Patient, Study, utcnow
from imex.errors import Conflict, NotFound


def extend_study(s: Session, study_id: int, hours: int, reason: str, actor: Principal) -> Study:
    """Move the study's expiry `hours` past the later of now and its current expiry, and record who did it
    and why. Conflict when it has no expiry yet or was extended before: an extension is granted once."""
    study = s.get(Study, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    if study.expires_at is None:
        raise Conflict("this study has no expiry yet (it is still arriving, or is kept until deleted)")
    if study.extended_by:
        raise Conflict(f"this study was already extended once, by {study.extended_by}")
    patient = s.get(Patient, study.patient_pk)
    before = study.expires_at
    study.expires_at = max(before, utcnow()) + dt.timedelta(hours=hours)
    study.extended_by = actor.username
    audit.record(
        s,
        "study.extend",
        study_uid=study.study_uid,
        patient_id=patient.patient_id if patient else "",
        object_type="study",
        object_id=study_id,
        detail=f"kept until {study.expires_at:%Y-%m-%d %H:%M} UTC (was {before:%Y-%m-%d %H:%M}): {reason.strip()}",
        **actor.audit_fields(),
    )
    return study
