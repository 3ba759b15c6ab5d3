"""Pages for sharing folders, importing a shared study into the local PACS, and storage: rendered from the
same functions as their JSON API, so a page never shows what the API would not."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex.auth.permissions import Principal
from imex.db.models import Folder, FolderMember, User
from imex.auth import scope
from imex.web.api import folders as folders_api
from imex.web.api import storage as storage_api
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in
from imex.web.pages import render

router = APIRouter(include_in_schema=False)


@router.get("/folders")
def folders_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(request, "folders.html", folders=folders_api.get_folders(p, s))


@router.get("/folders/{folder_id}")
def folder_page(folder_id: ObjectId, request: Request, p: Principal = Depends(signed_in),
                s: Session = Depends(db_session)) -> HTMLResponse:
    contents = folders_api.get_folder_studies(folder_id, 500, p, s)
    folder = s.get(Folder, folder_id)
    view = folders_api._folder_view(s, p, folder)
    own_users = [u for u, _ in s.execute(scope.users_query(p).where(User.institution_id == p.institution_id)
                                         .order_by(User.username))] if p.can("users.manage") else []
    members = set(s.scalars(select(FolderMember.user_id).where(FolderMember.folder_id == folder_id)))
    return render(request, "folder.html", folder=view, contents=contents, own_users=own_users, members=members)


@router.get("/studies/{study_id}/import")
def import_page(study_id: ObjectId, request: Request, search: str = Query("", max_length=64),
                node_id: int | None = Query(None, ge=1, le=2**31 - 1), p: Principal = Depends(signed_in),
                pt: Portal = Depends(portal), s: Session = Depends(db_session)) -> HTMLResponse:
    found = folders_api.get_import(study_id, node_id, search, p, pt, s)
    return render(request, "import.html", found=found, study_id=study_id)


@router.get("/admin/storage")
def storage_page(request: Request, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> HTMLResponse:
    return render(request, "admin_storage.html", held=storage_api.get_storage(p, s))


def folders_for_study(s: Session, p: Principal) -> list[dict]:  # type: ignore[type-arg]
    """The folders a user may put a study into (shown on the study page)."""
    if not p.can("studies.send"):
        return []
    return [{"id": f.id, "name": f.name, "kind": f.kind}
            for f in s.scalars(select(Folder).where(Folder.id.in_(scope.visible_folder_ids(p))).order_by(Folder.name))]

