"""Every version of a study's reports, for the portal and the command line."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from imex.db.models import reports


def reports_for_study(conn: Any, study_id: int) -> list[dict]:
    """Every version of the reports attached to a study, newest first, for the portal and the CLI: keys
    id, status, accession_number, observed_at, clinician, text, superseded (bool), received_at."""
    rows = conn.execute(
        select(
            reports.c.id,
            reports.c.status,
            reports.c.accession_number,
            reports.c.observed_at,
            reports.c.clinician,
            reports.c.text,
            reports.c.superseded_by,
            reports.c.received_at,
        )
        .where(reports.c.study_id == study_id)
        .order_by(reports.c.id.desc())
    ).all()
    return [
        dict(
            id=r.id,
            status=r.status,
            accession_number=r.accession_number,
            observed_at=r.observed_at,
            clinician=r.clinician,
            text=r.text,
            superseded=r.superseded_by is not None,
            received_at=r.received_at,
        )
        for r in rows
    ]
