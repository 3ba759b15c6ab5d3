"""Sharing folders in the portal: which folders I see, what is in them, who takes part; putting a study
into one; and importing a shared study into my institution's PACS after reconciling its identity."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import false, func, or_, select, true
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.permissions import Principal
from imex.db.models import (Folder, FolderInstitution, FolderMember, FolderStudy, Institution, Node, Reconciliation,
                            Transfer, User, utcnow)
from imex.folders import manage
from imex.auth import scope
from imex.web.api.transfers import visible_study
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in, visible_or_deny
from imex.web.errors import Problem
from imex.web.views import iso, study_row

router = APIRouter(prefix="/api/v1", tags=["folders"])


def _folder_view(s: Session, p: Principal, f: Folder) -> dict[str, Any]:
    members = s.scalars(select(FolderInstitution.institution_id).where(FolderInstitution.folder_id == f.id)).all()
    ods = s.scalars(select(Institution.ods_code).where(Institution.id.in_(members)).order_by(Institution.ods_code))
    count = s.scalar(select(func.count()).select_from(FolderStudy).where(
        FolderStudy.folder_id == f.id, FolderStudy.expires_at > utcnow())) or 0
    return {"id": f.id, "name": f.name, "kind": f.kind, "alias": f.alias, "retention_hours": f.retention_hours,
            "description": f.description, "institutions": list(ods), "studies": count,
            "manageable": _may_manage(p, f)}


def _may_manage(p: Principal, f: Folder) -> bool:
    """System admins manage every folder; an institution's admins manage the elective folders it owns."""
    return p.is_system_admin or (p.can("users.manage") and f.owner_institution_id == p.institution_id)


def _visible_folder(s: Session, p: Principal, folder_id: int) -> Folder:
    return visible_or_deny(s, p, s.scalar(select(Folder).where(Folder.id == folder_id, or_manageable(p))),
                           "folder", folder_id)


def or_manageable(p: Principal):  # type: ignore[no-untyped-def]
    """Folders `p` sees, and the ones their institution owns when they administer it."""
    owned = Folder.owner_institution_id == p.institution_id if p.can("users.manage") else false()
    return or_(Folder.id.in_(scope.visible_folder_ids(p)), owned)


@router.get("/folders", summary="Sharing folders you see or manage")
def get_folders(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    return [_folder_view(s, p, f) for f in s.scalars(select(Folder).where(or_manageable(p)).order_by(Folder.name))]


class FolderIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=64)
    kind: Literal["emergency", "elective"]
    alias: str | None = Field(None, max_length=16, description="Called AE title that files studies into it")
    retention_hours: int | None = Field(None, ge=1, le=24 * 365, description="Default 18 (emergency) or 192")
    institutions: list[str] = Field(default_factory=list, max_length=200, description="Taking part (ODS codes)")
    description: str = Field("", max_length=200)


@router.post("/folders", status_code=201, summary="Create a folder (elective: owned by your institution)")
def post_folder(body: FolderIn, p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                s: Session = Depends(db_session)) -> dict[str, Any]:
    if body.kind == "emergency" or not p.can("users.manage"):
        p.require("system.admin")
    s.commit()
    try:
        folder_id = manage.add_folder(pt.db, body.name, body.kind, alias=body.alias, hours=body.retention_hours,
                                      institutions_ods=body.institutions, description=body.description,
                                      owner_ods=None if body.kind == "emergency" else p.institution_ods)
    except manage.FolderError as exc:
        raise Problem(409 if "exists" in str(exc) or "already" in str(exc) else 422, str(exc)) from None
    if pt.hub is not None:
        pt.hub.nodes.invalidate()  # the listener now answers to the alias
    audit.record(s, "folder.create", object_type="folder", object_id=body.name,
                 detail=f"{body.kind}, {body.retention_hours or manage.KINDS[body.kind]} h", **p.audit_fields())
    s.commit()
    return _folder_view(s, p, s.get(Folder, folder_id))


class ParticipationIn(BaseModel):
    institution: str = Field(..., min_length=1, max_length=16)
    taking_part: bool = True


@router.post("/folders/{folder_id}/institutions", summary="An institution joins or leaves a folder")
def post_participation(folder_id: ObjectId, body: ParticipationIn, p: Principal = Depends(signed_in),
                       s: Session = Depends(db_session)) -> dict[str, Any]:
    folder = _visible_folder(s, p, folder_id)
    if not _may_manage(p, folder):
        raise Problem(403, "only the folder's managers change who takes part")
    inst = s.scalar(select(Institution).where(Institution.ods_code == body.institution.strip().upper()))
    if inst is None:
        raise Problem(422, f"no institution has the ODS code {body.institution!r}")
    manage.set_participation(s.connection(), folder.id, inst.id, body.taking_part)
    audit.record(s, "folder.institution", object_type="folder", object_id=folder.name,
                 detail=f"{inst.ods_code} {'joins' if body.taking_part else 'leaves'}", **p.audit_fields())
    s.commit()
    return _folder_view(s, p, folder)


class MemberIn(BaseModel):
    user_id: int = Field(..., ge=1, le=2**31 - 1)
    member: bool = True


@router.post("/folders/{folder_id}/members", summary="Add or remove a member of an elective folder "
                                                     "(your own institution's users)")
def post_member(folder_id: ObjectId, body: MemberIn, p: Principal = Depends(signed_in),
                s: Session = Depends(db_session)) -> dict[str, Any]:
    p.require("users.manage")
    taking_part = select(FolderInstitution.folder_id).where(FolderInstitution.institution_id == p.institution_id)
    folder = visible_or_deny(s, p, s.scalar(select(Folder).where(
        Folder.id == folder_id, true() if p.is_system_admin else Folder.id.in_(taking_part))), "folder", folder_id)
    user, _ = visible_or_deny(s, p, s.execute(scope.users_query(p).where(User.id == body.user_id)).first(),
                              "user", body.user_id)
    try:
        manage.set_member(s.connection(), folder.id, user.id, body.member)
    except manage.FolderError as exc:
        raise Problem(422, str(exc)) from None
    audit.record(s, "folder.member", object_type="folder", object_id=folder.name,
                 detail=f"{user.username} {'added' if body.member else 'removed'}", **p.audit_fields())
    s.commit()
    return {"folder": folder.name, "members": list(s.scalars(
        select(User.username).join(FolderMember, FolderMember.user_id == User.id).where(
            FolderMember.folder_id == folder.id, User.institution_id == p.institution_id).order_by(User.username)))}


@router.get("/folders/{folder_id}/studies", summary="The studies in a folder, and when each leaves it")
def get_folder_studies(folder_id: ObjectId, limit: int = Query(100, ge=1, le=500),
                       p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    folder = visible_or_deny(s, p, s.scalar(select(Folder).where(
        Folder.id == folder_id, Folder.id.in_(scope.visible_folder_ids(p)))), "folder", folder_id)
    p.require("studies.view")
    rows = s.execute(scope.studies_query(p).add_columns(FolderStudy.expires_at, FolderStudy.added_by)
                     .join(FolderStudy, FolderStudy.study_id == scope.Study.id)
                     .where(FolderStudy.folder_id == folder.id, FolderStudy.expires_at > utcnow())
                     .order_by(FolderStudy.added_at.desc()).limit(limit)).all()
    audit.record(s, "folder.open", object_type="folder", object_id=folder.name, detail=f"{len(rows)} studies",
                 **p.audit_fields())
    s.commit()
    return {"folder": folder.name, "kind": folder.kind, "items": [
        {**study_row(st, pa, src), "leaves_folder_at": iso(expires), "added_by": by}
        for st, pa, src, expires, by in rows]}


class FileIn(BaseModel):
    study_id: int = Field(..., ge=1, le=2**31 - 1)


@router.post("/folders/{folder_id}/studies", summary="Put a study you can see into a folder you can see")
def post_folder_study(folder_id: ObjectId, body: FileIn, p: Principal = Depends(signed_in),
                      s: Session = Depends(db_session)) -> dict[str, Any]:
    p.require("studies.send")
    folder = visible_or_deny(s, p, s.scalar(select(Folder).where(
        Folder.id == folder_id, Folder.id.in_(scope.visible_folder_ids(p)))), "folder", folder_id)
    study, _, _ = visible_study(s, p, body.study_id)
    until = manage.file_study(s.connection(), folder.id, study.id, p.username)
    s.commit()
    return {"folder": folder.name, "study_id": study.id, "leaves_folder_at": iso(until)}


# -- import into the local PACS ----------------------------------------------------------------------------

def _local_pacs(s: Session, p: Principal, node_id: int | None) -> Node:
    query = select(Node).where(Node.institution_id == p.institution_id, Node.destination.is_(True),
                               Node.enabled.is_(True))
    if node_id is not None:
        return visible_or_deny(s, p, s.scalar(query.where(Node.id == node_id)), "node", node_id)
    found = s.scalars(query.order_by(Node.name)).all()
    if len(found) != 1:
        raise Problem(422, "choose the PACS to import into (node_id): your institution has "
                           f"{len(found) or 'no'} destination nodes")
    return found[0]


@router.get("/studies/{study_id}/import", summary="Before importing: the study's identity and the local "
                                                  "PACS's patients with that ID or NHS number (C-FIND)")
def get_import(study_id: ObjectId, node_id: int | None = Query(None, ge=1, le=2**31 - 1),
               search: str = Query("", max_length=64, description="Patient ID or NHS number to look up "
                                                                  "(default: the study's)"),
               p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
               s: Session = Depends(db_session)) -> dict[str, Any]:
    from imex.dicom.find import FindFailed, find_patients
    from imex.harmonise import nhs

    p.require("studies.import")
    study, patient, source = visible_study(s, p, study_id)
    node = _local_pacs(s, p, node_id)
    wanted = search.strip() or (nhs.normalise(patient.patient_id) if nhs.is_valid(patient.patient_id)
                                else patient.patient_id)
    s.commit()
    try:
        local = find_patients(pt.config["dicom.ae_title"], node.ae_title, node.host, node.port, wanted)
        problem = ""
    except FindFailed as exc:
        local, problem = [], str(exc)
    audit.record(s, "search", study_uid=study.study_uid, patient_id=patient.patient_id, object_type="node",
                 object_id=node.name, detail=f"local PACS query for {wanted!r} before import: {len(local)} found",
                 **p.audit_fields())
    s.commit()
    return {"study": study_row(study, patient, source), "pacs": {"id": node.id, "name": node.name},
            "searched_for": wanted, "local_patients": [lp.__dict__ for lp in local], "problem": problem}


class ImportIn(BaseModel):
    patient_id: str = Field(..., min_length=1, max_length=64, description="The local patient ID to file under")
    accession_number: str | None = Field(None, max_length=16, description="The local accession number")
    node_id: int | None = Field(None, ge=1, le=2**31 - 1)


@router.post("/studies/{study_id}/import", status_code=202,
             summary="Import a study you can see into your PACS under the identity you confirm")
def post_import(study_id: ObjectId, body: ImportIn, p: Principal = Depends(signed_in), pt: Portal = Depends(portal),
                s: Session = Depends(db_session)) -> dict[str, Any]:
    from imex.harmonise import nhs
    from imex.routing.queue import queue_study

    p.require("studies.import")
    study, patient, _ = visible_study(s, p, study_id)
    node = _local_pacs(s, p, body.node_id)
    earlier = s.scalar(select(Transfer.id).where(Transfer.study_id == study.id, Transfer.destination_node_id == node.id))
    if earlier is not None:
        raise Problem(409, f"this study was already sent to {node.name} (transfer {earlier})")
    local_id = body.patient_id.strip()
    issuer = "NHS" if nhs.is_valid(local_id) else p.institution_ods
    local_id = nhs.normalise(local_id) if issuer == "NHS" else local_id
    conn = s.connection()
    [transfer_id] = queue_study(conn, study.id, {node.id: f"import by {p.username}"})
    s.add(Reconciliation(transfer_id=transfer_id, state="resolved", reason="import into the local PACS",
                         patient_id=local_id, issuer=issuer, accession_number=(body.accession_number or None),
                         actor=p.username, created_at=utcnow(), resolved_at=utcnow()))
    audit.record(s, "study.import", study_uid=study.study_uid, patient_id=patient.patient_id, object_type="transfer",
                 object_id=transfer_id, detail=f"into {node.name} as patient {local_id} ({issuer})"
                 + (f", accession {body.accession_number}" if body.accession_number else ""), **p.audit_fields())
    s.commit()
    if pt.hub is not None:
        pt.hub.work_queued.set()
    return {"transfer_id": transfer_id, "node": node.name, "patient_id": local_id, "issuer": issuer}
