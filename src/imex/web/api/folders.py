"""Sharing folders in the portal: which folders I see, what is in them, who takes part; putting a study
into one; and importing a shared study into my institution's PACS after reconciling its identity
(folders.guardian_import). The reads shared with the pages are in web/views/folders.py."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import select, true
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.db.models import Folder, FolderInstitution, FolderMember, Institution, User
from imex.folders import guardian_import, manage
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in, visible_or_deny
from imex.web.errors import Problem
from imex.web.views import iso
from imex.web.views.folders import (
    folder_studies,
    folder_view,
    folders,
    import_pacs,
    import_preview,
    may_manage,
    visible_folder,
)
from imex.web.views.transfers import visible_study

router = APIRouter(prefix="/api/v1", tags=["folders"])


@router.get("/folders", summary="Sharing folders you see or manage")
def get_folders(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    return folders(s, p)


class FolderIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=64)
    kind: Literal["emergency", "elective"]
    alias: str | None = Field(None, max_length=16, description="Called AE title that files studies into it")
    retention_hours: int | None = Field(None, ge=1, le=24 * 365, description="Default 18 (emergency) or 192")
    institutions: list[str] = Field(default_factory=list, max_length=200, description="Taking part (ODS codes)")
    description: str = Field("", max_length=200)


@router.post("/folders", status_code=201, summary="Create a folder (elective: owned by your institution)")
def post_folder(
    body: FolderIn, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    if body.kind == "emergency" or not p.can("users.manage"):
        p.require("system.admin")
    s.commit()
    folder_id = manage.add_folder(
        pt.db,
        body.name,
        body.kind,
        alias=body.alias,
        hours=body.retention_hours,
        institutions_ods=body.institutions,
        description=body.description,
        owner_ods=None if body.kind == "emergency" else p.institution_ods,
    )
    if pt.hub is not None:
        pt.hub.nodes.invalidate()  # the listener now answers to the alias
    audit.record(
        s,
        "folder.create",
        object_type="folder",
        object_id=body.name,
        detail=f"{body.kind}, {body.retention_hours or manage.KINDS[body.kind]} h",
        **p.audit_fields(),
    )
    s.commit()
    return folder_view(s, p, s.get_one(Folder, folder_id))


class ParticipationIn(BaseModel):
    institution: str = Field(..., min_length=1, max_length=16)
    taking_part: bool = True


@router.post("/folders/{folder_id}/institutions", summary="An institution joins or leaves a folder")
def post_participation(
    folder_id: ObjectId, body: ParticipationIn, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    folder = visible_folder(s, p, folder_id)
    if not may_manage(p, folder):
        raise Problem(403, "only the folder's managers change who takes part")
    inst = s.scalar(select(Institution).where(Institution.ods_code == body.institution.strip().upper()))
    if inst is None:
        raise Problem(422, f"no institution has the ODS code {body.institution!r}")
    manage.set_participation(s.connection(), folder.id, inst.id, body.taking_part)
    audit.record(
        s,
        "folder.institution",
        object_type="folder",
        object_id=folder.name,
        detail=f"{inst.ods_code} {'joins' if body.taking_part else 'leaves'}",
        **p.audit_fields(),
    )
    s.commit()
    return folder_view(s, p, folder)


class MemberIn(BaseModel):
    user_id: int = Field(..., ge=1, le=2**31 - 1)
    member: bool = True


@router.post(
    "/folders/{folder_id}/members",
    summary="Add or remove a member of an elective folder (your own institution's users)",
)
def post_member(
    folder_id: ObjectId, body: MemberIn, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("users.manage")
    taking_part = select(FolderInstitution.folder_id).where(FolderInstitution.institution_id == p.institution_id)
    folder = visible_or_deny(
        s,
        p,
        s.scalar(
            select(Folder).where(Folder.id == folder_id, true() if p.is_system_admin else Folder.id.in_(taking_part))
        ),
        "folder",
        folder_id,
    )
    user, _ = visible_or_deny(
        s, p, s.execute(scope.users_query(p).where(User.id == body.user_id)).first(), "user", body.user_id
    )
    manage.set_member(s.connection(), folder.id, user.id, body.member)
    audit.record(
        s,
        "folder.member",
        object_type="folder",
        object_id=folder.name,
        detail=f"{user.username} {'added' if body.member else 'removed'}",
        **p.audit_fields(),
    )
    s.commit()
    return {
        "folder": folder.name,
        "members": list(
            s.scalars(
                select(User.username)
                .join(FolderMember, FolderMember.user_id == User.id)
                .where(FolderMember.folder_id == folder.id, User.institution_id == p.institution_id)
                .order_by(User.username)
            )
        ),
    }


@router.get("/folders/{folder_id}/studies", summary="The studies in a folder, and when each leaves it")
def get_folder_studies(
    folder_id: ObjectId,
    limit: int = Query(100, ge=1, le=500),
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    return folder_studies(s, p, folder_id, limit)


class FileIn(BaseModel):
    study_id: int = Field(..., ge=1, le=2**31 - 1)


@router.post("/folders/{folder_id}/studies", summary="Put a study you can see into a folder you can see")
def post_folder_study(
    folder_id: ObjectId, body: FileIn, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("studies.send")
    folder = visible_or_deny(
        s,
        p,
        s.scalar(select(Folder).where(Folder.id == folder_id, Folder.id.in_(scope.visible_folder_ids(p)))),
        "folder",
        folder_id,
    )
    study, _, _ = visible_study(s, p, body.study_id)
    until = manage.file_study(s.connection(), folder.id, study.id, p.username)
    s.commit()
    return {"folder": folder.name, "study_id": study.id, "leaves_folder_at": iso(until)}


# -- import into the local PACS ----------------------------------------------------------------------------


@router.get(
    "/studies/{study_id}/import",
    summary="Before importing: the study's identity and the local PACS's patients with that ID or NHS number (C-FIND)",
)
def get_import(
    study_id: ObjectId,
    node_id: int | None = Query(None, ge=1, le=2**31 - 1),
    search: str = Query("", max_length=64, description="Patient ID or NHS number to look up (default: the study's)"),
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    return import_preview(s, p, pt.config, study_id, node_id, search)


class ImportIn(BaseModel):
    patient_id: str = Field(..., min_length=1, max_length=64, description="The local patient ID to file under")
    accession_number: str | None = Field(None, max_length=16, description="The local accession number")
    node_id: int | None = Field(None, ge=1, le=2**31 - 1)


@router.post(
    "/studies/{study_id}/import",
    status_code=202,
    summary="Import a study you can see into your PACS under the identity you confirm",
)
def post_import(
    study_id: ObjectId,
    body: ImportIn,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    p.require("studies.import")
    study, _, _ = visible_study(s, p, study_id)
    node = import_pacs(s, p, body.node_id)
    done = guardian_import.import_study(s, study.id, node, body.patient_id, body.accession_number, p)
    s.commit()
    if pt.hub is not None:
        pt.hub.work_queued.set()
    return {"transfer_id": done.transfer_id, "node": done.node, "patient_id": done.patient_id, "issuer": done.issuer}
