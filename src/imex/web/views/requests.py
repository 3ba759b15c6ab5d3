"""Reads of image requests that the JSON API (web/api/requests.py) and the pages (web/pages/requests.py)
both show: the list, one request with its history and what the caller may do to it, and the search of
the institution's own PACS pre-filled from a request.

A request is visible to the two institutions only (scope.requests_query); any other id answers 404,
audited. Acting for the wrong side (the requester accepting their own request) is 403, audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import desc, select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.config import Config
from imex.db.models import ImageRequest, Institution, RequestEvent, User
from imex.dicom.query import FindFailed, NodeAddress, StudyQuery, find_studies
from imex.requests import lifecycle as requests_core
from imex.requests.lifecycle import Actor
from imex.routing.priority import name as priority_name
from imex.web.deps import deny, visible_or_deny
from imex.web.errors import Problem, Refused
from imex.web.views import iso, person_name

STATES = ("open", "accepted", "fulfilled", "declined", "expired", "cancelled")


def actor(p: Principal) -> Actor:
    return Actor(p.user_id, p.username, p.institution_id, p.ip)


def _inst(s: Session, institution_id: int) -> dict[str, str]:
    inst = s.get(Institution, institution_id)
    return {"ods": inst.ods_code, "name": inst.name} if inst else {"ods": "", "name": ""}


def may(p: Principal, r: ImageRequest) -> dict[str, bool]:
    """What `p` may do to the request now (drives the page's buttons; the routes check again)."""
    source = p.can("requests.fulfil") and (p.is_system_admin or p.institution_id == r.source_institution_id)
    requester = p.can("requests.create") and (p.is_system_admin or p.institution_id == r.requesting_institution_id)
    active = r.state in requests_core.ACTIVE
    return {
        "accept": source and r.state == "open",
        "decline": source and active,
        "fulfil": source and active,
        "cancel": requester and active,
    }


def request_view(s: Session, p: Principal, r: ImageRequest, history: bool = False) -> dict[str, Any]:
    recipient_user = s.get(User, r.recipient_user_id) if r.recipient_user_id else None
    view: dict[str, Any] = {
        "id": r.id,
        "state": r.state,
        "direction": "incoming" if r.source_institution_id == p.institution_id else "outgoing",
        "requesting": _inst(s, r.requesting_institution_id),
        "source": _inst(s, r.source_institution_id),
        "requester": r.requester_name,
        "nhs_number": r.nhs_number,
        "patient_name": r.patient_name,
        "patient_name_display": person_name(r.patient_name) if r.patient_name else "",
        "birth_date": r.birth_date,
        "accession": r.accession,
        "modality": r.modality,
        "date_from": r.date_from,
        "date_to": r.date_to,
        "reason": r.reason,
        "priority": r.priority,
        "urgency": priority_name(r.priority),
        "recipient": r.recipient,
        "recipient_user": recipient_user.username if recipient_user else None,
        "decline_reason": r.decline_reason,
        "transaction_id": r.transaction_id,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
        "expires_at": iso(r.expires_at),
        "fulfilled_at": iso(r.fulfilled_at),
        "may": may(p, r),
    }
    if history:
        view["history"] = [
            {"at": iso(e.at), "actor": e.actor, "event": e.event, "detail": e.detail}
            for e in s.scalars(select(RequestEvent).where(RequestEvent.request_id == r.id).order_by(RequestEvent.id))
        ]
    return view


def visible_request(s: Session, p: Principal, request_id: int) -> ImageRequest:
    return visible_or_deny(
        s,
        p,
        s.scalar(scope.requests_query(p).where(ImageRequest.id == request_id)),
        "image_request",
        request_id,
        "request",
    )


def source_side(s: Session, p: Principal, r: ImageRequest) -> None:
    """Only the institution asked accepts, declines or fulfils; others get 403, audited."""
    p.require("requests.fulfil")
    if not p.is_system_admin and p.institution_id != r.source_institution_id:
        deny(s, p, "image_request", r.id, action="request.denied")
        raise Refused(403, "only the institution asked for the images accepts, declines or fulfils a request")


def requester_side(s: Session, p: Principal, r: ImageRequest) -> None:
    p.require("requests.create")
    if not p.is_system_admin and p.institution_id != r.requesting_institution_id:
        deny(s, p, "image_request", r.id, action="request.denied")
        raise Refused(403, "only the institution that asked cancels a request")


def partners(s: Session, p: Principal) -> list[dict[str, str]]:
    """Institutions `p` may ask for images."""
    return [
        {"ods": r.ods_code, "name": r.name} for r in requests_core.exchange_partners(s.connection(), p.institution_id)
    ]


def list_requests(
    s: Session, p: Principal, direction: str = "all", state: str = "", limit: int = 100
) -> dict[str, Any]:
    """Requests to and from `p`'s institution, newest and most urgent first; the listing is audited."""
    stmt = scope.requests_query(p)
    if direction == "incoming":
        stmt = stmt.where(ImageRequest.source_institution_id == p.institution_id)
    elif direction == "outgoing":
        stmt = stmt.where(ImageRequest.requesting_institution_id == p.institution_id)
    if state == "active":
        stmt = stmt.where(ImageRequest.state.in_(requests_core.ACTIVE))
    elif state:
        stmt = stmt.where(ImageRequest.state == state)
    rows = s.scalars(stmt.order_by(desc(ImageRequest.priority), desc(ImageRequest.id)).limit(limit)).all()
    audit.record(
        s,
        "request.list",
        object_type="image_request",
        detail=f"{direction} {state or 'any'}: {len(rows)}",
        **p.audit_fields(),
    )
    s.commit()
    return {"items": [request_view(s, p, r) for r in rows]}


def request_detail(s: Session, p: Principal, request_id: int) -> dict[str, Any]:
    """A request with its history; the viewing is audited."""
    r = visible_request(s, p, request_id)
    audit.record(
        s, "request.view", object_type="image_request", object_id=r.id, patient_id=r.nhs_number, **p.audit_fields()
    )
    s.commit()
    return request_view(s, p, r, history=True)


def dates(value: str) -> str:
    """Accept 2024-01-31 from a date input as well as 20240131."""
    return value.replace("-", "").strip()


def search_fields(r: ImageRequest, asked: dict[str, str] | None = None) -> dict[str, str]:
    """The search pre-filled from the request; each field `asked` (patient_id, patient_name, birth_date,
    accession, modality, date_from, date_to) replaces the request's value."""
    fields = requests_core.query_for(r)
    for key, value in (asked or {}).items():
        fields[key] = dates(value) if key in ("birth_date", "date_from", "date_to") else value.strip()
    return fields


def search_source(
    s: Session, p: Principal, config: Config, request_id: int, asked: dict[str, str] | None = None
) -> dict[str, Any]:
    """Search the asked institution's own PACS (C-FIND) with the request's data, to choose what to send;
    audited. No transaction is held while the PACS answers."""
    r = visible_request(s, p, request_id)
    source_side(s, p, r)
    fields = search_fields(r, asked)
    node = requests_core.retrieve_node(s.connection(), r.source_institution_id)
    s.commit()
    try:
        matches = find_studies(
            config["dicom.ae_title"],
            NodeAddress(node.ae_title, node.host, node.port),
            StudyQuery(**fields),
            timeout=config["exchange.search_timeout_seconds"],
        )
    except ValueError as exc:  # a query field the C-FIND cannot carry
        raise Problem(422, str(exc)) from None
    except FindFailed as exc:
        raise Problem(502, f"your PACS could not be searched: {exc}", title="PACS search failed") from None
    audit.record(
        s,
        "request.search",
        object_type="image_request",
        object_id=r.id,
        patient_id=fields["patient_id"],
        detail=f"{node.name}: {len(matches)} studies",
        **p.audit_fields(),
    )
    s.commit()
    return {
        "node": node.name,
        "query": fields,
        "items": [
            {
                "study_uid": m.study_uid,
                "patient_id": m.patient_id,
                "patient_name": person_name(m.patient_name),
                "birth_date": m.birth_date,
                "accession": m.accession,
                "study_date": m.study_date,
                "description": m.description,
                "modalities": list(m.modalities),
                "series": m.series_count,
                "instances": m.instance_count,
            }
            for m in matches
        ],
    }


def needs_action(s: Session, p: Principal, limit: int = 10) -> list[dict[str, Any]]:
    """Open requests made to the user's institution (their dashboard's "needs action")."""
    if not p.can("requests.fulfil"):
        return []
    rows = s.scalars(
        scope.requests_query(p)
        .where(ImageRequest.source_institution_id == p.institution_id, ImageRequest.state == "open")
        .order_by(desc(ImageRequest.priority), ImageRequest.id)
        .limit(limit)
    ).all()
    return [request_view(s, p, r) for r in rows]
