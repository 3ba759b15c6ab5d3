"""The audit trail page (mirrors web/api/audit_trail.py): a shell whose script searches and exports
through the API."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from imex.auth.permissions import Principal
from imex.web.deps import signed_in
from imex.web.pages.render import render

router = APIRouter(include_in_schema=False)


@router.get("/audit")
def audit_page(request: Request, p: Principal = Depends(signed_in)) -> HTMLResponse:
    p.require("audit.view")
    return render(request, "audit.html")
