"""Pages for sharing folders and importing a shared study into the local PACS (mirrors
web/api/folders.py): rendered from the same reads as their JSON API, so a page never shows what the API
would not."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Folder, FolderMember, User
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.pages.render import render
from imex.web.views import folders as folder_views

router = APIRouter(include_in_schema=False)


@router.get("/folders")
def folders_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(request, "folders.html", folders=folder_views.folders(s, p))


@router.get("/folders/{folder_id}")
def folder_page(
    folder_id: ObjectId, request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> HTMLResponse:
    contents = folder_views.folder_studies(s, p, folder_id, 500)
    folder = s.get_one(Folder, folder_id)
    view = folder_views.folder_view(s, p, folder)
    own_users = (
        [
            u
            for u, _ in s.execute(
                scope.users_query(p).where(User.institution_id == p.institution_id).order_by(User.username)
            )
        ]
        if p.can("users.manage")
        else []
    )
    members = set(s.scalars(select(FolderMember.user_id).where(FolderMember.folder_id == folder_id)))
    return render(request, "folder.html", folder=view, contents=contents, own_users=own_users, members=members)


@router.get("/studies/{study_id}/import")
def import_page(
    study_id: ObjectId,
    request: Request,
    search: str = Query("", max_length=64),
    node_id: int | None = Query(None, ge=1, le=2**31 - 1),
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> HTMLResponse:
    found = folder_views.import_preview(s, p, pt.config, study_id, node_id, search)
    return render(request, "import.html", found=found, study_id=study_id)
