"""What the PACS search (web/api/pacs_search.py) and its page (web/pages/pacs_search.py) share: which
nodes of the user's institution the hub may search, and the search's fields. Only nodes of the user's
institution with query/retrieve on may be searched (another's is 404, audited)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Query
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Node
from imex.dicom.query import StudyQuery
from imex.web.deps import visible_or_deny
from imex.web.errors import Problem

_DATE = re.compile(r"^\d{8}$")


def searchable_node(s: Session, p: Principal, node_id: int) -> Node:
    p.require("studies.send")
    return visible_or_deny(
        s, p, s.scalar(scope.searchable_nodes_query(p).where(Node.id == node_id)), "node", node_id, "searchable PACS"
    )


def searchable_nodes(s: Session, p: Principal) -> list[dict[str, Any]]:
    """The PACS nodes of `p`'s institution the hub may search."""
    p.require("studies.send")
    return [
        {"id": n.id, "name": n.name, "ae_title": n.ae_title}
        for n in s.scalars(scope.searchable_nodes_query(p).order_by(Node.name))
    ]


def _date(value: str, name: str) -> str:
    value = value.replace("-", "").strip()
    if value and not _DATE.match(value):
        raise Problem(422, f"{name} must be a date (YYYY-MM-DD or YYYYMMDD), not {value[:20]!r}")
    return value


class SearchFields:
    """The search's fields, also accepted as URL query parameters by the search page (pre-filled)."""

    def __init__(
        self,
        patient_id: str = Query("", max_length=64, description="Patient ID or NHS number"),
        patient_name: str = Query("", max_length=64, description="Name, DICOM style (DOE^JANE); * allowed"),
        birth_date: str = Query("", max_length=10),
        accession: str = Query("", max_length=16),
        modality: str = Query("", max_length=16),
        date_from: str = Query("", max_length=10),
        date_to: str = Query("", max_length=10),
        study_uid: str = Query("", max_length=64),
    ) -> None:
        self.query = StudyQuery(
            patient_id=patient_id.replace(" ", "").strip(),
            patient_name=patient_name.strip(),
            birth_date=_date(birth_date, "birth_date"),
            accession=accession.strip(),
            modality=modality.strip().upper(),
            date_from=_date(date_from, "date_from"),
            date_to=_date(date_to, "date_to"),
            study_uid=study_uid.strip(),
        )

    def describe(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in vars(self.query).items() if v)[:500]
