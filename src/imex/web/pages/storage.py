"""The storage page for administrators (mirrors web/api/storage.py): bytes held per institution and
folder, against quotas."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from imex.auth.permissions import Principal
from imex.web.deps import db_session, signed_in
from imex.web.pages.render import render
from imex.web.views.storage import storage

router = APIRouter(include_in_schema=False)


@router.get("/admin/storage")
def storage_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(request, "admin_storage.html", held=storage(s, p))
