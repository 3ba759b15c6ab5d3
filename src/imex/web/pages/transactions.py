"""Pages of the exchanges (mirrors web/api/transactions.py): the list and one exchange (its studies'
progress, messages, attachments). They render what the JSON API returns; their actions are API calls
made by static/exchange.js."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from imex.auth.permissions import Principal
from imex.web.deps import ObjectId, db_session, signed_in
from imex.web.pages.render import render
from imex.web.views.transactions import list_transactions, transaction_detail

router = APIRouter(include_in_schema=False)


@router.get("/exchanges")
def exchanges_page(
    request: Request,
    direction: str = Query("all", max_length=10),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> HTMLResponse:
    direction = direction if direction in ("all", "incoming", "outgoing") else "all"
    found = list_transactions(s, p, direction=direction, limit=200, offset=0)
    return render(request, "transactions.html", items=found.items, total=found.total, direction=direction)


@router.get("/exchanges/{transaction_id}")
def exchange_page(
    transaction_id: ObjectId, request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    tx = transaction_detail(s, p, transaction_id)
    return render(request, "transaction_detail.html", tx=tx)
