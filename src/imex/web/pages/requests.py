"""Pages for image requests (mirrors web/api/requests.py): the worklist (incoming and outgoing, by state),
the form to ask another institution, and a request's page with its actions, its history and, for the
institution asked, the search of its own PACS already filled in from the request. Rendered from the same
reads as the API (web/views/requests.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import User
from imex.requests.lifecycle import RequestError
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.errors import Problem
from imex.web.pages.render import render
from imex.web.views import requests as request_views

router = APIRouter(include_in_schema=False)
Dir = Query("all", pattern="^(incoming|outgoing|all)$")
State = Query("", pattern="^(open|accepted|fulfilled|declined|expired|cancelled|active|)$")


@router.get("/requests")
def requests_page(
    request: Request,
    direction: str = Dir,
    state: str = State,
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> HTMLResponse:
    listed = request_views.list_requests(s, p, direction, state, 200)
    return render(
        request, "requests.html", items=listed["items"], direction=direction, state=state, states=request_views.STATES
    )


@router.get("/requests/new")
def new_request_page(
    request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    p.require("requests.create")
    partners = request_views.partners(s, p)
    colleagues = [
        u
        for u, _ in s.execute(
            scope.users_query(p)
            .where(User.institution_id == p.institution_id, User.disabled.is_(False))
            .order_by(User.username)
        )
    ]
    return render(request, "request_new.html", partners=partners, colleagues=colleagues)


@router.get("/requests/{request_id}")
def request_page(
    request_id: ObjectId,
    request: Request,
    search: bool = False,
    patient_id: str | None = Query(None, max_length=64),
    patient_name: str | None = Query(None, max_length=64),
    birth_date: str | None = Query(None, max_length=10),
    accession: str | None = Query(None, max_length=16),
    modality: str | None = Query(None, max_length=16),
    date_from: str | None = Query(None, max_length=10),
    date_to: str | None = Query(None, max_length=10),
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> HTMLResponse:
    view = request_views.request_detail(s, p, request_id)
    row = request_views.visible_request(s, p, request_id)
    given = {
        "patient_id": patient_id,
        "patient_name": patient_name,
        "birth_date": birth_date,
        "accession": accession,
        "modality": modality,
        "date_from": date_from,
        "date_to": date_to,
    }
    asked = {k: v for k, v in given.items() if v is not None}
    fields = request_views.search_fields(row, asked)
    found, problem = None, ""
    if search and view["may"]["fulfil"]:
        try:
            found = request_views.search_source(s, p, pt.config, request_id, asked)
        except Problem as exc:
            problem = exc.detail
        except RequestError as exc:  # e.g. the institution has no PACS the hub may search
            problem = str(exc)
    return render(request, "request_detail.html", r=view, fields=fields, found=found, problem=problem)
