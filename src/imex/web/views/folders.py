"""Reads of sharing folders that the JSON API (web/api/folders.py) and the pages (web/pages/folders.py)
both show: the folders one sees or manages, what is in one, the folders a study can be put into, and what
a PACS guardian sees before importing a study (its identity and the local PACS's matching patients)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, func, or_, select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import scope
from imex.auth.permissions import Principal
from imex.config import Config
from imex.db.models import Folder, FolderInstitution, FolderStudy, Institution, Node, utcnow
from imex.folders import guardian_import
from imex.web.deps import visible_or_deny
from imex.web.views import iso, study_row
from imex.web.views.transfers import visible_study


def may_manage(p: Principal, f: Folder) -> bool:
    """System admins manage every folder; an institution's admins manage the elective folders it owns."""
    return p.is_system_admin or (p.can("users.manage") and f.owner_institution_id == p.institution_id)


def folder_view(s: Session, p: Principal, f: Folder) -> dict[str, Any]:
    members = s.scalars(select(FolderInstitution.institution_id).where(FolderInstitution.folder_id == f.id)).all()
    ods = s.scalars(select(Institution.ods_code).where(Institution.id.in_(members)).order_by(Institution.ods_code))
    count = (
        s.scalar(
            select(func.count())
            .select_from(FolderStudy)
            .where(FolderStudy.folder_id == f.id, FolderStudy.expires_at > utcnow())
        )
        or 0
    )
    return {
        "id": f.id,
        "name": f.name,
        "kind": f.kind,
        "alias": f.alias,
        "retention_hours": f.retention_hours,
        "description": f.description,
        "institutions": list(ods),
        "studies": count,
        "manageable": may_manage(p, f),
    }


def or_manageable(p: Principal):
    """Folders `p` sees, and the ones their institution owns when they administer it."""
    owned = Folder.owner_institution_id == p.institution_id if p.can("users.manage") else false()
    return or_(Folder.id.in_(scope.visible_folder_ids(p)), owned)


def visible_folder(s: Session, p: Principal, folder_id: int) -> Folder:
    """A folder `p` sees or manages; otherwise 404, audited."""
    return visible_or_deny(
        s, p, s.scalar(select(Folder).where(Folder.id == folder_id, or_manageable(p))), "folder", folder_id
    )


def folders(s: Session, p: Principal) -> list[dict[str, Any]]:
    """Sharing folders `p` sees or manages, by name."""
    return [folder_view(s, p, f) for f in s.scalars(select(Folder).where(or_manageable(p)).order_by(Folder.name))]


def folder_studies(s: Session, p: Principal, folder_id: int, limit: int) -> dict[str, Any]:
    """The studies in a folder `p` sees, newest first, and when each leaves it; the opening is audited."""
    folder = visible_or_deny(
        s,
        p,
        s.scalar(select(Folder).where(Folder.id == folder_id, Folder.id.in_(scope.visible_folder_ids(p)))),
        "folder",
        folder_id,
    )
    p.require("studies.view")
    rows = s.execute(
        scope.studies_query(p)
        .add_columns(FolderStudy.expires_at, FolderStudy.added_by)
        .join(FolderStudy, FolderStudy.study_id == scope.Study.id)
        .where(FolderStudy.folder_id == folder.id, FolderStudy.expires_at > utcnow())
        .order_by(FolderStudy.added_at.desc())
        .limit(limit)
    ).all()
    audit.record(
        s, "folder.open", object_type="folder", object_id=folder.name, detail=f"{len(rows)} studies", **p.audit_fields()
    )
    s.commit()
    return {
        "folder": folder.name,
        "kind": folder.kind,
        "items": [
            {**study_row(st, pa, src), "leaves_folder_at": iso(expires), "added_by": by}
            for st, pa, src, expires, by in rows
        ],
    }


def folders_for_study(s: Session, p: Principal) -> list[dict[str, Any]]:
    """The folders a user may put a study into (shown on the study page)."""
    if not p.can("studies.send"):
        return []
    return [
        {"id": f.id, "name": f.name, "kind": f.kind}
        for f in s.scalars(select(Folder).where(Folder.id.in_(scope.visible_folder_ids(p))).order_by(Folder.name))
    ]


def import_pacs(s: Session, p: Principal, node_id: int | None) -> Node:
    """The local PACS `p` imports into (guardian_import.pacs_for_import); a node not theirs is 404, audited."""
    return visible_or_deny(s, p, guardian_import.pacs_for_import(s, p.institution_id, node_id), "node", node_id)


def import_preview(
    s: Session, p: Principal, config: Config, study_id: int, node_id: int | None, search: str
) -> dict[str, Any]:
    """Before importing: the study's identity and the local PACS's patients with that ID or NHS number."""
    p.require("studies.import")
    study, patient, source = visible_study(s, p, study_id)
    node = import_pacs(s, p, node_id)
    found = guardian_import.look_up_patient(s, config, study.id, node, search, p)
    s.commit()
    return {
        "study": study_row(study, patient, source),
        "pacs": {"id": node.id, "name": node.name},
        "searched_for": found.searched_for,
        "local_patients": [lp.__dict__ for lp in found.local_patients],
        "problem": found.problem,
    }
