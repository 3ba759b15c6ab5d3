"""The audit trail: who did what, when, from where, to which patient and study, and how it ended.

`record()` writes one event inside the caller's transaction, so an action and its audit event commit or
roll back together. The table is append-only in the database (triggers refuse UPDATE and DELETE).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from imex.db.models import audit_events, utcnow

_TABLE = audit_events

OUTCOMES = ("success", "failure", "denied")


def _clip(value: Any, size: int) -> str:
    return str(value or "")[:size]


def record(
    conn: Connection | Session,
    action: str,
    *,
    outcome: str = "success",
    user_id: int | None = None,
    username: str = "",
    institution_id: int | None = None,
    ip: str = "",
    study_uid: str = "",
    patient_id: str = "",
    object_type: str = "",
    object_id: str | int = "",
    detail: str = "",
) -> None:
    """Append one audit event. `action` is a short dotted name (`auth.login`, `study.view`)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {OUTCOMES}, not {outcome!r}")
    conn.execute(
        insert(_TABLE).values(
            at=utcnow(),
            action=_clip(action, 64),
            outcome=outcome,
            user_id=user_id,
            username=_clip(username, 64),
            institution_id=institution_id,
            ip=_clip(ip, 64),
            study_uid=_clip(study_uid, 64),
            patient_id=_clip(patient_id, 64),
            object_type=_clip(object_type, 32),
            object_id=_clip(object_id, 64),
            detail=str(detail or "")[:4000],
        )
    )
