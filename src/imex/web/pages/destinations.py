"""The Destinations page (mirrors web/api/destinations.py): the health of each node that receives
studies, with Retry now."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from imex.auth.permissions import Principal
from imex.web.deps import db_session, signed_in
from imex.web.pages.render import render
from imex.web.views.destinations import destinations

router = APIRouter(include_in_schema=False)


@router.get("/destinations")
def destinations_page(
    request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    return render(request, "destinations.html", board=destinations(s, p))
