"""Administration: the institution's nodes (with a C-ECHO test), contacts, routing rules, users, roles and
worklists. Institution admins manage their own institution; system admins every one."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit, directory
from imex.auth import accounts, certificates, scope
from imex.auth.permissions import PERMISSIONS, Principal
from imex.db.models import Institution, Node, User, Worklist
from imex.dicom.echo import echo
from imex.tls import client_certs
from imex.web.context import Portal
from imex.web.deps import ObjectId, db_session, portal, signed_in, visible_or_deny
from imex.web.errors import Problem
from imex.web.views import admin as admin_views
from imex.web.views import node_row, user_row, worklist_row

router = APIRouter(prefix="/api/v1", tags=["administration"])

_ODS = Field(..., min_length=1, max_length=16)


# -- institutions ---------------------------------------------------------------------------------------


@router.get("/institutions", summary="Institutions you administer (all of them for system admins)")
def get_institutions(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    return admin_views.institutions(s, p)


@router.get("/directory", summary="Every institution's ODS code and name (to choose a destination)")
def get_directory(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, str]]:
    return admin_views.directory(s)


class InstitutionChange(BaseModel):
    contact_email: str | None = Field(None, max_length=320)
    require_second_factor: bool | None = None
    retention_hours: int | None = Field(
        None,
        ge=0,
        le=24 * 3650,
        description="Hours studies are kept after they were last sent (0: until deleted); the institution's own choice",
    )
    quota_bytes: int | None = Field(None, ge=0, le=2**62, description="Storage quota (system admins only; 0: none)")
    quota_gib: float | None = Field(None, ge=0, le=2**32, description="The same quota in GiB (the settings page)")
    require_recipient: bool | None = Field(None, description="Transfers sent here must name a recipient")
    require_certificate: bool | None = Field(
        None, description="Its users sign in with their certificate (smart card); a password alone is refused"
    )
    local_passwords: bool | None = Field(
        None, description="Its users may sign in with imex passwords (false: only through single sign-on)"
    )


@router.patch("/institutions/{institution_id}", summary="Change an institution's contact or sign-in policy")
def patch_institution(
    institution_id: ObjectId,
    body: InstitutionChange,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    p.require("users.manage")
    inst = visible_or_deny(
        s,
        p,
        s.scalar(scope.institutions_query(p).where(Institution.id == institution_id)),
        "institution",
        institution_id,
    )
    changes = []
    if body.contact_email is not None:
        inst.contact_email = body.contact_email.strip() or None
        changes.append("contact e-mail")
    if body.require_second_factor is not None:
        inst.require_second_factor = body.require_second_factor
        changes.append(f"second factor {'required' if body.require_second_factor else 'optional'}")
    if body.retention_hours is not None:
        inst.retention_hours = body.retention_hours
        changes.append(f"retention {body.retention_hours} h")
    if body.require_recipient is not None:
        inst.require_recipient = body.require_recipient
        changes.append(f"named recipient {'required' if body.require_recipient else 'optional'}")
    if body.require_certificate is not None:
        offered = client_certs.requested(pt.config)
        changes.append(certificates.set_required(inst, body.require_certificate, offered=offered))
    if body.local_passwords is not None:
        inst.local_passwords = body.local_passwords
        changes.append(f"local passwords {'on' if body.local_passwords else 'off'}")
    if body.quota_gib is not None and body.quota_bytes is None:
        body.quota_bytes = int(body.quota_gib * 2**30)
    if body.quota_bytes is not None:
        p.require("system.admin")
        inst.quota_bytes = body.quota_bytes or None
        changes.append(f"quota {body.quota_bytes or 'none'} bytes")
        if pt.hub is not None:
            pt.hub.quota.invalidate()
    audit.record(
        s,
        "institution.change",
        object_type="institution",
        object_id=inst.ods_code,
        detail=", ".join(changes),
        **p.audit_fields(),
    )
    s.commit()
    return {
        "id": inst.id,
        "ods": inst.ods_code,
        "contact_email": inst.contact_email,
        "require_second_factor": inst.require_second_factor,
        "retention_hours": inst.retention_hours,
        "quota_bytes": inst.quota_bytes,
        "require_recipient": inst.require_recipient,
        "require_certificate": inst.require_certificate,
        "local_passwords": inst.local_passwords,
    }


# -- nodes ------------------------------------------------------------------------------------------------


@router.get("/nodes", summary="DICOM nodes of your institution")
def get_nodes(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    return admin_views.nodes(s, p)


class NodeIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    ae_title: str = Field(..., min_length=1, max_length=16)
    host: str = Field(
        ..., min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:\-]+$", description="Host name or IP address"
    )
    port: int = Field(..., ge=1, le=65535)
    institution: str | None = Field(None, max_length=16, description="ODS code; default: your institution")
    alias: str | None = Field(None, max_length=16)
    contact_email: str | None = Field(None, max_length=320)
    destination: bool = True
    max_associations: int | None = Field(None, ge=1, le=64)
    confirm: Literal["none", "commitment", "count"] = Field(
        "none", description="How delivery is confirmed: Storage Commitment, a C-FIND count, or not at all"
    )
    query_retrieve: bool = Field(
        False,
        description="The hub may search (C-FIND) and retrieve (C-MOVE) from it "
        "for exchanges; it must know the hub's AE title as a move destination",
    )
    allow_find: bool = Field(True, description="It may search the hub (C-FIND); it sees what its institution may see")
    allow_move: bool = Field(True, description="It may retrieve from the hub (C-MOVE) to its institution's nodes")
    allow_get: bool = Field(True, description="It may retrieve from the hub over its own association (C-GET)")


def _visible_node(s: Session, p: Principal, node_id: int) -> Node:
    p.require("nodes.manage")
    row = visible_or_deny(s, p, s.execute(scope.nodes_query(p).where(Node.id == node_id)).first(), "node", node_id)
    return row[0]


def _save_node(s: Session, p: Principal, pt: Portal, body: NodeIn, update: bool) -> dict[str, Any]:
    ods = (body.institution or p.institution_ods).upper()
    if not p.is_system_admin and ods != p.institution_ods:
        raise Problem(403, "you can only manage your own institution's nodes")
    s.commit()
    directory.add_node(
        pt.db,
        body.name,
        body.ae_title,
        body.host,
        body.port,
        ods,
        alias=body.alias or None,
        contact_email=body.contact_email or None,
        destination=body.destination,
        max_associations=body.max_associations,
        update=update,
        confirm=body.confirm,
        query_retrieve=body.query_retrieve,
        allow_find=body.allow_find,
        allow_move=body.allow_move,
        allow_get=body.allow_get,
    )
    if pt.hub is not None:
        pt.hub.nodes.invalidate()
    audit.record(
        s,
        "node.change" if update else "node.add",
        object_type="node",
        object_id=body.name,
        detail=f"{body.ae_title}@{body.host}:{body.port} ({ods})",
        **p.audit_fields(),
    )
    s.commit()
    node, inst = s.execute(
        select(Node, Institution)
        .join(Institution)
        .where(Node.name == body.name)
        .execution_options(populate_existing=True)
    ).one()  # changed by add_node's session
    return node_row(node, inst)


@router.post("/nodes", status_code=201, summary="Register a DICOM node")
def post_node(
    body: NodeIn, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("nodes.manage")
    return _save_node(s, p, pt, body, update=False)


@router.put("/nodes/{node_id}", summary="Change a DICOM node")
def put_node(
    node_id: ObjectId,
    body: NodeIn,
    p: Principal = Depends(signed_in),
    pt: Portal = Depends(portal),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    node = _visible_node(s, p, node_id)
    if node.name != body.name:
        raise Problem(422, "a node's name cannot be changed; add a new node instead")
    return _save_node(s, p, pt, body, update=True)


@router.delete("/nodes/{node_id}", summary="Remove a node (disabled instead when transfers refer to it)")
def delete_node(
    node_id: ObjectId, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    node = _visible_node(s, p, node_id)
    name = node.name
    s.commit()
    directory.remove_node(pt.db, name)
    if pt.hub is not None:
        pt.hub.nodes.invalidate()
    audit.record(s, "node.remove", object_type="node", object_id=name, **p.audit_fields())
    s.commit()
    return {"removed": name}


@router.post("/nodes/{node_id}/echo", summary="Test a node with C-ECHO from the hub")
def echo_node(
    node_id: ObjectId, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    node = _visible_node(s, p, node_id)
    name, ae, host, port = node.name, node.ae_title, node.host, node.port
    s.commit()
    result = echo(pt.config["dicom.ae_title"], name, ae, host, port, timeout=5.0)
    audit.record(
        s,
        "node.echo",
        outcome="success" if result.ok else "failure",
        object_type="node",
        object_id=name,
        detail=result.message,
        **p.audit_fields(),
    )
    s.commit()
    return {"ok": result.ok, "message": result.message}


# -- routing rules -------------------------------------------------------------------------------------


@router.get("/rules", summary="The routing rules in force (declared in imex.toml)")
def get_rules(p: Principal = Depends(signed_in), pt: Portal = Depends(portal)) -> list[dict[str, Any]]:
    return admin_views.rules(p, pt.config)


# -- users and roles ------------------------------------------------------------------------------------


def _visible_user(s: Session, p: Principal, user_id: int) -> User:
    p.require("users.manage")
    row = visible_or_deny(s, p, s.execute(scope.users_query(p).where(User.id == user_id)).first(), "user", user_id)
    return row[0]


def _user_view(s: Session, user: User) -> dict[str, Any]:
    inst = s.get(Institution, user.institution_id)
    return user_row(user, inst, accounts.role_names(s, user.id))


@router.get("/users", summary="Your institution's users")
def get_users(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    return admin_views.users(s, p)


class UserIn(BaseModel):
    username: str = Field(..., min_length=1, max_length=64)
    full_name: str = Field("", max_length=200)
    email: str = Field("", max_length=320)
    password: str = Field(..., min_length=1, max_length=256)
    roles: list[str] = Field(default_factory=list, max_length=20)
    institution: str | None = Field(None, max_length=16, description="ODS code; default: your institution")


def _check_grantable(p: Principal, role_names: list[str]) -> None:
    if "system_admin" in role_names and not p.is_system_admin:
        raise Problem(403, "only a system admin can grant system_admin")


@router.post("/users", status_code=201, summary="Add a user (they choose a new password at first sign-in)")
def post_user(
    body: UserIn, p: Principal = Depends(signed_in), pt: Portal = Depends(portal), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("users.manage")
    ods = (body.institution or p.institution_ods).upper()
    if not p.is_system_admin and ods != p.institution_ods:
        raise Problem(403, "you can only add users to your own institution")
    _check_grantable(p, body.roles)
    inst = accounts.institution_by_ods(s, ods)
    user = accounts.add_user(
        s,
        username=body.username,
        institution=inst,
        password=body.password,
        full_name=body.full_name,
        email=body.email,
        roles=body.roles,
        policy=pt.policy,
        must_change_password=True,
    )
    audit.record(
        s,
        "user.add",
        object_type="user",
        object_id=user.username,
        detail=f"roles: {', '.join(body.roles) or 'none'}",
        **p.audit_fields(),
    )
    s.commit()
    return _user_view(s, user)


@router.post("/users/{user_id}/disable", summary="Disable a user and end their sessions")
def disable_user(
    user_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    user = _visible_user(s, p, user_id)
    if user.id == p.user_id:
        raise Problem(409, "you cannot disable your own account")
    accounts.disable_user(s, user, **p.audit_fields())
    s.commit()
    return _user_view(s, user)


@router.post("/users/{user_id}/enable", summary="Enable a disabled user")
def enable_user(
    user_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    user = _visible_user(s, p, user_id)
    accounts.enable_user(s, user, **p.audit_fields())
    s.commit()
    return _user_view(s, user)


@router.post("/users/{user_id}/reset", summary="Give a user a one-time password, unlock them, end their sessions")
def reset_user(
    user_id: ObjectId,
    remove_second_factor: bool = False,
    p: Principal = Depends(signed_in),
    s: Session = Depends(db_session),
) -> dict[str, Any]:
    user = _visible_user(s, p, user_id)
    temporary = accounts.reset_user(s, user, remove_second_factor=remove_second_factor, **p.audit_fields())
    s.commit()
    return {**_user_view(s, user), "temporary_password": temporary}


class CertificateIn(BaseModel):
    certificate_subject: str | None = Field(
        None,
        max_length=400,
        description="The subject of the user's client certificate (RFC 4514, e.g. CN=Jane Smith,O=Kings,C=GB) "
        "or an e-mail address in it; null or empty removes it",
    )


@router.put("/users/{user_id}/certificate", summary="Register the client certificate a user signs in with")
def put_user_certificate(
    user_id: ObjectId, body: CertificateIn, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    user = _visible_user(s, p, user_id)
    certificates.set_subject(s, user, body.certificate_subject, **p.audit_fields())
    s.commit()
    return _user_view(s, user)


class RoleGrantIn(BaseModel):
    role: str = Field(..., min_length=1, max_length=64)


@router.post("/users/{user_id}/roles", summary="Grant a role")
def grant_role(
    user_id: ObjectId, body: RoleGrantIn, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    user = _visible_user(s, p, user_id)
    _check_grantable(p, [body.role])
    accounts.grant_role(s, user, body.role)
    audit.record(s, "role.grant", object_type="user", object_id=user.username, detail=body.role, **p.audit_fields())
    s.commit()
    return _user_view(s, user)


@router.delete("/users/{user_id}/roles/{role}", summary="Take a role away")
def revoke_role(
    user_id: ObjectId, role: str, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    user = _visible_user(s, p, user_id)
    _check_grantable(p, [role])
    accounts.revoke_role(s, user, role[:64])
    audit.record(s, "role.revoke", object_type="user", object_id=user.username, detail=role[:64], **p.audit_fields())
    s.commit()
    return _user_view(s, user)


@router.get("/permissions", summary="The permissions roles are made of")
def get_permissions(p: Principal = Depends(signed_in)) -> dict[str, str]:
    return dict(PERMISSIONS)


@router.get("/roles", summary="Built-in roles and your institution's own")
def get_roles(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    return admin_views.roles(s, p)


class RoleIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\- ]+$")
    description: str = Field("", max_length=200)
    permissions: list[str] = Field(..., min_length=1, max_length=len(PERMISSIONS))


@router.post("/roles", status_code=201, summary="Define a role for your institution")
def post_role(body: RoleIn, p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> dict[str, Any]:
    p.require("roles.manage")
    role = accounts.define_role(s, p.institution_id, body.name, body.permissions, body.description)
    audit.record(
        s, "role.add", object_type="role", object_id=role.name, detail=" ".join(body.permissions), **p.audit_fields()
    )
    s.commit()
    return {"id": role.id, "name": role.name, "permissions": role.permissions.split()}


# -- worklists (virtual nodes) -----------------------------------------------------------------------------


class WorklistIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=64)
    modalities: str = Field("", max_length=128, pattern=r"^[A-Za-z0-9 ]*$")
    description_pattern: str = Field("", max_length=128)
    source_ods: str = Field("", max_length=128, pattern=r"^[A-Za-z0-9 ]*$")


@router.get("/worklists", summary="Your institution's worklists (virtual nodes)")
def get_worklists(p: Principal = Depends(signed_in), s: Session = Depends(db_session)) -> list[dict[str, Any]]:
    return admin_views.worklists(s, p)


@router.post("/worklists", status_code=201, summary="Add a worklist: incoming studies matching its conditions")
def post_worklist(
    body: WorklistIn, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("nodes.manage")
    if (
        s.scalar(
            select(Worklist.id).where(Worklist.institution_id == p.institution_id, Worklist.name == body.name.strip())
        )
        is not None
    ):
        raise Problem(409, f"your institution already has a worklist named {body.name.strip()!r}")
    w = Worklist(
        institution_id=p.institution_id,
        name=body.name.strip(),
        modalities=body.modalities.upper().strip(),
        description_pattern=body.description_pattern.strip(),
        source_ods=body.source_ods.upper().strip(),
    )
    s.add(w)
    s.flush()
    audit.record(s, "worklist.add", object_type="worklist", object_id=w.name, **p.audit_fields())
    s.commit()
    return worklist_row(w)


@router.delete("/worklists/{worklist_id}", summary="Remove a worklist")
def delete_worklist(
    worklist_id: ObjectId, p: Principal = Depends(signed_in), s: Session = Depends(db_session)
) -> dict[str, Any]:
    p.require("nodes.manage")
    w = visible_or_deny(
        s, p, s.scalar(scope.worklists_query(p).where(Worklist.id == worklist_id)), "worklist", worklist_id
    )
    s.delete(w)
    audit.record(s, "worklist.remove", object_type="worklist", object_id=w.name, **p.audit_fields())
    s.commit()
    return {"removed": w.name}
