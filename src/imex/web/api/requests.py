"""Image requests in the API: ask another institution for a patient's images, follow the request, and (as
the institution asked) accept, decline, search the own PACS pre-filled from the request, and send.

A request is visible to the two institutions only (scope.requests_query); any other id answers 404,
audited. Acting for the wrong side (the requester accepting their own request) is 403, audited.
"""
from __future__ import annotations

from typing import Any, Callable, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import Connection, desc, select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.db.models import Institution, User
from imex.db.models_exchange import ImageRequest, RequestEvent
from imex.dicom.query import FindFailed, NodeAddress, StudyQuery, find_studies
from imex.requests import lifecycle as requests_core
from imex.requests.lifecycle import Actor, RequestError, RequestForm, WrongState
from imex.auth import scope
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, deny, portal, signed_in, visible_or_deny
from imex.web.errors import Problem, Refused
from imex.web.views import iso, person_name
from imex.routing.priority import name as priority_name

router = APIRouter(prefix="/api/v1", tags=["requests"])
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
    return {"accept": source and r.state == "open", "decline": source and active,
            "fulfil": source and active, "cancel": requester and active}


def request_view(s: Session, p: Principal, r: ImageRequest, history: bool = False) -> dict[str, Any]:
    recipient_user = s.get(User, r.recipient_user_id) if r.recipient_user_id else None
    view: dict[str, Any] = {
        "id": r.id, "state": r.state,
        "direction": "incoming" if r.source_institution_id == p.institution_id else "outgoing",
        "requesting": _inst(s, r.requesting_institution_id), "source": _inst(s, r.source_institution_id),
        "requester": r.requester_name, "nhs_number": r.nhs_number, "patient_name": r.patient_name,
        "patient_name_display": person_name(r.patient_name) if r.patient_name else "",
        "birth_date": r.birth_date, "accession": r.accession, "modality": r.modality,
        "date_from": r.date_from, "date_to": r.date_to, "reason": r.reason, "priority": r.priority,
        "urgency": priority_name(r.priority), "recipient": r.recipient,
        "recipient_user": recipient_user.username if recipient_user else None,
        "decline_reason": r.decline_reason, "transaction_id": r.transaction_id,
        "created_at": iso(r.created_at), "updated_at": iso(r.updated_at), "expires_at": iso(r.expires_at),
        "fulfilled_at": iso(r.fulfilled_at), "may": may(p, r)}
    if history:
        view["history"] = [{"at": iso(e.at), "actor": e.actor, "event": e.event, "detail": e.detail}
                           for e in s.scalars(select(RequestEvent).where(RequestEvent.request_id == r.id)
                                              .order_by(RequestEvent.id))]
    return view


def visible_request(s: Session, p: Principal, request_id: int) -> ImageRequest:
    return visible_or_deny(s, p, s.scalar(scope.requests_query(p).where(ImageRequest.id == request_id)),
                           "image_request", request_id, "request")


def _source_side(s: Session, p: Principal, r: ImageRequest) -> None:
    """Only the institution asked accepts, declines or fulfils; others get 403, audited."""
    p.require("requests.fulfil")
    if not p.is_system_admin and p.institution_id != r.source_institution_id:
        deny(s, p, "image_request", r.id, action="request.denied")
        raise Refused(403, "only the institution asked for the images accepts, declines or fulfils a request")


def _requester_side(s: Session, p: Principal, r: ImageRequest) -> None:
    p.require("requests.create")
    if not p.is_system_admin and p.institution_id != r.requesting_institution_id:
        deny(s, p, "image_request", r.id, action="request.denied")
        raise Refused(403, "only the institution that asked cancels a request")


def _problem(exc: RequestError) -> Problem:
    return Problem(409 if isinstance(exc, WrongState) else 422, str(exc))


@router.get("/requests/partners", summary="Institutions you may ask for images")
def get_partners(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, str]]:
    return [{"ods": r.ods_code, "name": r.name}
            for r in requests_core.exchange_partners(s.connection(), p.institution_id)]


@router.get("/requests", summary="Image requests to and from your institution, newest first")
def get_requests(direction: Literal["incoming", "outgoing", "all"] = "all",
                 state: Literal["open", "accepted", "fulfilled", "declined", "expired", "cancelled",
                                "active", ""] = "",
                 limit: int = Query(100, ge=1, le=500),
                 p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
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
    audit.record(s, "request.list", object_type="image_request", detail=f"{direction} {state or 'any'}: {len(rows)}",
                 **p.audit_fields())
    s.commit()
    return {"items": [request_view(s, p, r) for r in rows]}


class RequestIn(BaseModel):
    source: str = Field(..., min_length=1, max_length=16, description="ODS code of the institution asked")
    nhs_number: str = Field("", max_length=20)
    patient_name: str = Field("", max_length=200, description="FAMILY^Given, as in DICOM")
    birth_date: str = Field("", max_length=10, description="YYYYMMDD or YYYY-MM-DD")
    accession: str = Field("", max_length=64)
    modality: str = Field("", max_length=16)
    date_from: str = Field("", max_length=10, description="YYYYMMDD or YYYY-MM-DD")
    date_to: str = Field("", max_length=10, description="YYYYMMDD or YYYY-MM-DD")
    reason: str = Field(..., max_length=4000)
    urgency: Literal["emergency", "urgent", "routine"] = "routine"
    recipient: str = Field("", max_length=200, description="Person or team the images are for")
    recipient_user_id: int | None = Field(None, ge=1, le=2**31 - 1)


def _dates(value: str) -> str:
    """Accept 2024-01-31 from a date input as well as 20240131."""
    return value.replace("-", "").strip()


@router.post("/requests", status_code=201, summary="Ask another institution for a patient's images")
def post_request(body: RequestIn, p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                 s: Session = Depends(db_session)) -> dict[str, Any]:
    p.require("requests.create")
    form = RequestForm(source_ods=body.source, nhs_number=body.nhs_number, patient_name=body.patient_name,
                       birth_date=_dates(body.birth_date), accession=body.accession, modality=body.modality,
                       date_from=_dates(body.date_from), date_to=_dates(body.date_to), reason=body.reason,
                       urgency=body.urgency, recipient=body.recipient, recipient_user_id=body.recipient_user_id)
    try:
        request_id = requests_core.create(s.connection(), actor(p), form,
                                          expiry_days=pt.config["requests.expiry_days"])
    except RequestError as exc:
        s.rollback()
        audit.record(s, "request.create", outcome="failure", object_type="image_request",
                     detail=str(exc)[:500], **p.audit_fields())
        raise Refused(422, str(exc)) from None
    s.commit()
    return request_view(s, p, s.get(ImageRequest, request_id), history=True)


@router.get("/requests/{request_id}", summary="A request with its history")
def get_request(request_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    r = visible_request(s, p, request_id)
    audit.record(s, "request.view", object_type="image_request", object_id=r.id, patient_id=r.nhs_number,
                 **p.audit_fields())
    s.commit()
    return request_view(s, p, r, history=True)


def _act(s: Session, p: Principal, request_id: int, side: Callable[..., None],
         change: Callable[[Connection, int, Actor], object]) -> dict[str, Any]:
    """A change of state by one side of a request: scoped, checked, applied, answered with the history."""
    r = visible_request(s, p, request_id)
    side(s, p, r)
    try:
        change(s.connection(), r.id, actor(p))
    except RequestError as exc:
        raise _problem(exc) from None
    s.commit()
    s.refresh(r)
    return request_view(s, p, r, history=True)


@router.post("/requests/{request_id}/accept", summary="Accept a request made to your institution")
def post_accept(request_id: ObjectId, p: Principal = Depends(signed_in),
                s: Session = Depends(db_session)) -> dict[str, Any]:
    return _act(s, p, request_id, _source_side, requests_core.accept)


class DeclineIn(BaseModel):
    reason: str = Field(..., max_length=4000)


@router.post("/requests/{request_id}/decline", summary="Decline a request made to your institution (say why)")
def post_decline(request_id: ObjectId, body: DeclineIn, p: Principal = Depends(signed_in),
                 s: Session = Depends(db_session)) -> dict[str, Any]:
    return _act(s, p, request_id, _source_side,
                lambda conn, rid, who: requests_core.decline(conn, rid, who, body.reason))


@router.post("/requests/{request_id}/cancel", summary="Cancel your institution's request")
def post_cancel(request_id: ObjectId, p: Principal = Depends(signed_in),
                s: Session = Depends(db_session)) -> dict[str, Any]:
    return _act(s, p, request_id, _requester_side, requests_core.cancel)


class SearchIn(BaseModel):
    """The pre-filled search; any field given replaces the request's value."""

    patient_id: str | None = Field(None, max_length=64)
    patient_name: str | None = Field(None, max_length=64)
    birth_date: str | None = Field(None, max_length=10)
    accession: str | None = Field(None, max_length=16)
    modality: str | None = Field(None, max_length=16)
    date_from: str | None = Field(None, max_length=10)
    date_to: str | None = Field(None, max_length=10)


def search_fields(r: ImageRequest, body: SearchIn | None = None) -> dict[str, str]:
    fields = requests_core.query_for(r)
    for key, value in (body.model_dump(exclude_none=True) if body else {}).items():
        fields[key] = _dates(value) if key in ("birth_date", "date_from", "date_to") else value.strip()
    return fields


@router.post("/requests/{request_id}/search-source",
             summary="Search your own PACS with the request's data (C-FIND), to choose what to send")
def post_search_source(request_id: ObjectId, body: SearchIn | None = None, p: Principal = Depends(signed_in),
                       pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> dict[str, Any]:
    r = visible_request(s, p, request_id)
    _source_side(s, p, r)
    fields = search_fields(r, body)
    try:
        node = requests_core.retrieve_node(s.connection(), r.source_institution_id)
    except RequestError as exc:
        raise _problem(exc) from None
    s.commit()  # no transaction held while the PACS answers
    try:
        matches = find_studies(pt.config["dicom.ae_title"], NodeAddress(node.ae_title, node.host, node.port),
                               StudyQuery(**fields), timeout=pt.config["exchange.search_timeout_seconds"])
    except ValueError as exc:
        raise Problem(422, str(exc)) from None
    except FindFailed as exc:
        raise Problem(502, f"your PACS could not be searched: {exc}", title="PACS search failed") from None
    audit.record(s, "request.search", object_type="image_request", object_id=r.id, patient_id=fields["patient_id"],
                 detail=f"{node.name}: {len(matches)} studies", **p.audit_fields())
    s.commit()
    return {"node": node.name, "query": fields, "items": [
        {"study_uid": m.study_uid, "patient_id": m.patient_id, "patient_name": person_name(m.patient_name),
         "birth_date": m.birth_date, "accession": m.accession, "study_date": m.study_date,
         "description": m.description, "modalities": list(m.modalities), "series": m.series_count,
         "instances": m.instance_count} for m in matches]}


class FulfilIn(BaseModel):
    study_uids: list[str] = Field(..., min_length=1, max_length=50)


@router.post("/requests/{request_id}/fulfil",
             summary="Send the chosen studies from your PACS: the hub retrieves them and delivers them to the requester")
def post_fulfil(request_id: ObjectId, body: FulfilIn, p: Principal = Depends(signed_in),
                s: Session = Depends(db_session)) -> dict[str, Any]:
    r = visible_request(s, p, request_id)
    _source_side(s, p, r)
    try:
        tid = requests_core.grant(s.connection(), r.id, actor(p), body.study_uids)
    except RequestError as exc:
        raise _problem(exc) from None
    s.commit()
    s.refresh(r)
    return {**request_view(s, p, r, history=True), "sent_as": tid}


def needs_action(s: Session, p: Principal, limit: int = 10) -> list[dict[str, Any]]:
    """Open requests made to the user's institution (their dashboard's "needs action")."""
    if not p.can("requests.fulfil"):
        return []
    rows = s.scalars(scope.requests_query(p).where(ImageRequest.source_institution_id == p.institution_id,
                                                   ImageRequest.state == "open")
                     .order_by(desc(ImageRequest.priority), ImageRequest.id).limit(limit)).all()
    return [request_view(s, p, r) for r in rows]
