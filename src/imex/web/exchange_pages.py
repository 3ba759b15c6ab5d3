"""Pages of the exchanges: the list, one exchange (its studies' progress, messages, attachments) and the
search of one's own PACS to send from (pre-authorised transfer). They render what the JSON API returns;
their actions are API calls made by static/exchange.js."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from imex.auth.permissions import Principal
from imex.web.api import pacs_search
from imex.web.api import transactions as transactions_api
from imex.web.deps import ObjectId, db_session, signed_in
from imex.web.pages import render

router = APIRouter(include_in_schema=False)


@router.get("/exchanges")
def exchanges_page(request: Request, direction: str = Query("all", max_length=10),
                   p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    direction = direction if direction in ("all", "incoming", "outgoing") else "all"
    found = transactions_api.list_transactions(direction=direction, state=None, kind=None, limit=200, offset=0, p=p,
                                               s=s)  # type: ignore[arg-type]
    return render(request, "transactions.html", items=found.items, total=found.total, direction=direction)


@router.get("/exchanges/send")
def send_page(request: Request, node: int | None = Query(None, ge=1, le=2**31 - 1),
              fields: pacs_search.SearchFields = Depends(), p: Principal = Depends(signed_in),
              s: Session = Depends(db_session)) -> HTMLResponse:
    nodes = pacs_search.list_nodes(p, s)
    return render(request, "pacs_search.html", nodes=nodes, node=node, q=vars(fields.query),
                  destinations=transactions_api.destination_choices(s, p))


@router.get("/exchanges/{transaction_id}")
def exchange_page(transaction_id: ObjectId, request: Request, p: Principal = Depends(signed_in),
                  s: Session = Depends(db_session)) -> HTMLResponse:
    tx = transactions_api.get_transaction(transaction_id, p, s)
    return render(request, "transaction_detail.html", tx=tx)
