"""The page to search one's own PACS and send what was found to another institution (mirrors
web/api/pacs_search.py: a pre-authorised transfer). The search and the sending are API calls made by
static/exchange.js; the page is pre-filled from its URL's query."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from imex.auth.permissions import Principal
from imex.web.deps import db_session, signed_in
from imex.web.pages.render import render
from imex.web.views.pacs_search import SearchFields, searchable_nodes
from imex.web.views.transactions import destination_choices

router = APIRouter(include_in_schema=False)


@router.get("/exchanges/send")
def send_page(
    request: Request,
    node: int | None = Query(None, ge=1, le=2**31 - 1),
    fields: SearchFields = Depends(),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> HTMLResponse:
    nodes = searchable_nodes(s, p)
    return render(
        request,
        "pacs_search.html",
        nodes=nodes,
        node=node,
        q=vars(fields.query),
        destinations=destination_choices(s, p),
    )
