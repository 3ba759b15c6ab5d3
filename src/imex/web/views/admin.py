"""Reads of the administration screens that the JSON API (web/api/admin.py) and the pages
(web/pages/admin.py) both show: institutions, the directory, nodes, rules, users, roles and worklists,
scoped to what the caller administers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex.auth import accounts, scope
from imex.auth.permissions import BUILTIN_ROLES, Principal
from imex.config import Config
from imex.db.models import Institution, Node, Role, User, Worklist
from imex.web.views import node_row, user_row, worklist_row


def institutions(s: Session, p: Principal) -> list[dict[str, Any]]:
    """Institutions `p` administers (all of them for system admins)."""
    return [
        {
            "id": i.id,
            "ods": i.ods_code,
            "name": i.name,
            "alias": i.alias,
            "contact_email": i.contact_email,
            "require_second_factor": i.require_second_factor,
            "require_certificate": i.require_certificate,
            "local_passwords": i.local_passwords,
            "retention_hours": i.retention_hours,
            "quota_bytes": i.quota_bytes,
            "require_recipient": i.require_recipient,
        }
        for i in s.scalars(scope.institutions_query(p).order_by(Institution.ods_code))
    ]


def directory(s: Session) -> list[dict[str, str]]:
    """Every institution's ODS code and name (to choose a destination)."""
    return [
        {"ods": ods, "name": name}
        for ods, name in s.execute(select(Institution.ods_code, Institution.name).order_by(Institution.ods_code))
    ]


def nodes(s: Session, p: Principal) -> list[dict[str, Any]]:
    p.require("nodes.manage")
    return [node_row(n, i) for n, i in s.execute(scope.nodes_query(p).order_by(Node.name))]


def rules(p: Principal, config: Config) -> list[dict[str, Any]]:
    """The routing rules in force (declared in imex.toml)."""
    p.require("nodes.manage")
    return [dict(rule) for rule in config.rules]


def users(s: Session, p: Principal) -> list[dict[str, Any]]:
    p.require("users.manage")
    return [
        user_row(u, i, accounts.role_names(s, u.id)) for u, i in s.execute(scope.users_query(p).order_by(User.username))
    ]


def roles(s: Session, p: Principal) -> list[dict[str, Any]]:
    """Built-in roles and the caller's institution's own."""
    stmt = select(Role).where(Role.institution_id.is_(None) | scope.own_institution_clause(p, Role.institution_id))
    return [
        {
            "id": r.id,
            "name": r.name,
            "builtin": r.institution_id is None and r.name in BUILTIN_ROLES,
            "institution_id": r.institution_id,
            "description": r.description,
            "permissions": r.permissions.split(),
        }
        for r in s.scalars(stmt.order_by(Role.institution_id.is_not(None), Role.name))
    ]


def worklists(s: Session, p: Principal) -> list[dict[str, Any]]:
    p.require("transfers.view")
    return [worklist_row(w) for w in s.scalars(scope.worklists_query(p).order_by(Worklist.name))]
