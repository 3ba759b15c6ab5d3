"""Image requests in the API: ask another institution for a patient's images, follow the request, and (as
the institution asked) accept, decline, search the own PACS pre-filled from the request, and send.

A request is visible to the two institutions only (scope.requests_query); any other id answers 404,
audited. Acting for the wrong side (the requester accepting their own request) is 403, audited. The
reads shared with the pages are in web/views/requests.py; the changes are requests.lifecycle's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.db.models import ImageRequest
from imex.requests import lifecycle as requests_core
from imex.requests.lifecycle import Actor, RequestError, RequestForm
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.errors import refused
from imex.web.views.requests import (
    actor,
    dates,
    list_requests,
    partners,
    request_detail,
    request_view,
    requester_side,
    search_source,
    source_side,
    visible_request,
)

router = APIRouter(prefix="/api/v1", tags=["requests"])


@router.get("/requests/partners", summary="Institutions you may ask for images")
def get_partners(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, str]]:
    return partners(s, p)


@router.get("/requests", summary="Image requests to and from your institution, newest first")
def get_requests(
    direction: Literal["incoming", "outgoing", "all"] = "all",
    state: Literal["open", "accepted", "fulfilled", "declined", "expired", "cancelled", "active", ""] = "",
    limit: int = Query(100, ge=1, le=500),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    return list_requests(s, p, direction, state, limit)


class RequestIn(BaseModel):
    source: str = Field(..., min_length=1, max_length=16, description="ODS code of the institution asked")
    nhs_number: str = Field("", max_length=20)
    patient_name: str = Field("", max_length=200, description="FAMILY^Given, as in DICOM")
    # or the two parts as a person types them (the request form): joined as FAMILY^Given
    family_name: str = Field("", max_length=100)
    given_name: str = Field("", max_length=100)
    birth_date: str = Field("", max_length=10, description="YYYYMMDD or YYYY-MM-DD")
    accession: str = Field("", max_length=64)
    modality: str = Field("", max_length=16)
    date_from: str = Field("", max_length=10, description="YYYYMMDD or YYYY-MM-DD")
    date_to: str = Field("", max_length=10, description="YYYYMMDD or YYYY-MM-DD")
    reason: str = Field(..., max_length=4000)
    urgency: Literal["emergency", "urgent", "routine"] = "routine"
    recipient: str = Field("", max_length=200, description="Person or team the images are for")
    recipient_user_id: int | None = Field(None, ge=1, le=2**31 - 1)


@router.post("/requests", status_code=201, summary="Ask another institution for a patient's images")
def post_request(
    body: RequestIn, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("requests.create")
    form = RequestForm(
        source_ods=body.source,
        nhs_number=body.nhs_number,
        patient_name=body.patient_name
        or "^".join(part for part in (body.family_name.strip().upper(), body.given_name.strip()) if part),
        birth_date=dates(body.birth_date),
        accession=body.accession,
        modality=body.modality,
        date_from=dates(body.date_from),
        date_to=dates(body.date_to),
        reason=body.reason,
        urgency=body.urgency,
        recipient=body.recipient,
        recipient_user_id=body.recipient_user_id,
    )
    try:
        request_id = requests_core.create(s.connection(), actor(p), form, expiry_days=pt.config["requests.expiry_days"])
    except RequestError as exc:  # audited: the refused request stays in the trail
        s.rollback()
        audit.record(
            s,
            "request.create",
            outcome="failure",
            object_type="image_request",
            detail=str(exc)[:500],
            **p.audit_fields(),
        )
        raise refused(exc) from None
    s.commit()
    return request_view(s, p, s.get_one(ImageRequest, request_id), history=True)


@router.get("/requests/{request_id}", summary="A request with its history")
def get_request(
    request_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    return request_detail(s, p, request_id)


def _act(
    s: Session,
    p: Principal,
    request_id: int,
    side: Callable[..., None],
    change: Callable[[Connection, int, Actor], object],
) -> dict[str, Any]:
    """A change of state by one side of a request: scoped, checked, applied, answered with the history."""
    r = visible_request(s, p, request_id)
    side(s, p, r)
    change(s.connection(), r.id, actor(p))
    s.commit()
    s.refresh(r)
    return request_view(s, p, r, history=True)


@router.post("/requests/{request_id}/accept", summary="Accept a request made to your institution")
def post_accept(
    request_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    return _act(s, p, request_id, source_side, requests_core.accept)


class DeclineIn(BaseModel):
    reason: str = Field(..., max_length=4000)


@router.post("/requests/{request_id}/decline", summary="Decline a request made to your institution (say why)")
def post_decline(
    request_id: ObjectId, body: DeclineIn, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    return _act(
        s, p, request_id, source_side, lambda conn, rid, who: requests_core.decline(conn, rid, who, body.reason)
    )


@router.post("/requests/{request_id}/cancel", summary="Cancel your institution's request")
def post_cancel(
    request_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    return _act(s, p, request_id, requester_side, requests_core.cancel)


class SearchIn(BaseModel):
    """The pre-filled search; any field given replaces the request's value."""

    patient_id: str | None = Field(None, max_length=64)
    patient_name: str | None = Field(None, max_length=64)
    birth_date: str | None = Field(None, max_length=10)
    accession: str | None = Field(None, max_length=16)
    modality: str | None = Field(None, max_length=16)
    date_from: str | None = Field(None, max_length=10)
    date_to: str | None = Field(None, max_length=10)


@router.post(
    "/requests/{request_id}/search-source",
    summary="Search your own PACS with the request's data (C-FIND), to choose what to send",
)
def post_search_source(
    request_id: ObjectId,
    body: SearchIn | None = None,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    return search_source(s, p, pt.config, request_id, body.model_dump(exclude_none=True) if body else None)


class FulfilIn(BaseModel):
    study_uids: list[str] = Field(..., min_length=1, max_length=50)


@router.post(
    "/requests/{request_id}/fulfil",
    summary="Send the chosen studies from your PACS: the hub retrieves them and delivers them to the requester",
)
def post_fulfil(
    request_id: ObjectId, body: FulfilIn, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    r = visible_request(s, p, request_id)
    source_side(s, p, r)
    tid = requests_core.grant(s.connection(), r.id, actor(p), body.study_uids)
    s.commit()
    s.refresh(r)
    return {**request_view(s, p, r, history=True), "sent_as": tid}
