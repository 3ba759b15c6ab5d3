"""Storage accounting for administrators: what the hub holds for each institution and folder, against
its quota."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from imex.auth.permissions import Principal
from imex.web.deps import db_session, signed_in
from imex.web.views.storage import storage

router = APIRouter(prefix="/api/v1", tags=["administration"])


@router.get(
    "/storage",
    summary="Bytes and studies held per institution (yours; all for system admins) and per folder you see, with quotas",
)
def get_storage(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    return storage(s, p)
