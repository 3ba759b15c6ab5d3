"""The Upload page (mirrors web/api/uploads.py): drop a folder, a zip or a CD (with its DICOMDIR), watch it upload, review what was
found, choose where it goes and send. The page is static/upload.js calling /api/v1/uploads; the server
renders only the list of the user's uploads and the page's frame."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Upload
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.pages.render import render
from imex.web.views.uploads import visible_upload

router = APIRouter(include_in_schema=False)


def _page(request: Request, p: Principal, pt: Portal, s: Session, upload: Upload | None) -> HTMLResponse:
    p.require("studies.send")
    recent = s.scalars(select(Upload).where(scope.upload_clause(p)).order_by(Upload.id.desc()).limit(20)).all()
    c = pt.config
    limits = {
        "file": c["upload.max_file_bytes"],
        "upload": c["upload.max_staged_bytes"],
        "user": c["upload.max_user_bytes"],
        "hours": c["upload.expiry_hours"],
        "files": c["upload.max_files"],
        "request": c["http.max_upload_bytes"],
    }
    return render(request, "upload.html", upload=upload, recent=recent, limits=limits)


@router.get("/upload")
def upload_page(
    request: Request, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> HTMLResponse:
    return _page(request, p, pt, s, None)


@router.get("/upload/{upload_id}")
def upload_review_page(
    upload_id: ObjectId,
    request: Request,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> HTMLResponse:
    return _page(request, p, pt, s, visible_upload(s, p, upload_id))
