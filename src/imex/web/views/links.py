"""Reads of outside links that the JSON API (web/api/links.py) and the study page both show: the links of
the caller's institution on studies they see."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Study, StudyLink
from imex.links import manage


def links_query(p: Principal):
    """Links of the caller's institution (every institution's for system admins) on studies they see."""
    return (
        select(StudyLink)
        .join(Study, Study.id == StudyLink.study_id)
        .where(scope.own_institution_clause(p, StudyLink.institution_id), scope.study_clause(p))
    )


def links_for_study(s: Session, p: Principal, study_id: int) -> list[dict[str, Any]]:
    """The study page's list (empty for users who may not manage links)."""
    if not p.can("links.manage"):
        return []
    return [
        manage.summary(link)
        for link in s.scalars(
            links_query(p).where(StudyLink.study_id == study_id).order_by(StudyLink.id.desc()).limit(200)
        )
    ]
