"""Permissions, the built-in roles, and the signed-in principal every query is scoped by."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

from imex.errors import Forbidden

# name -> what it allows, shown to admins who define roles
PERMISSIONS: dict[str, str] = {
    "transfers.view": "See the institution's incoming and outgoing transfers and their studies",
    "transfers.manage": "Retry and cancel the institution's transfers",
    "studies.view": "Open studies and images",
    "studies.send": "Send studies and route quarantined ones",
    "studies.import": "Import shared studies into the local PACS (PACS guardian)",
    "studies.download": "Download studies",
    "links.manage": "Create, list and revoke links to a study for recipients outside the network",
    "requests.create": "Ask another institution for a patient's images (image requests)",
    "requests.fulfil": "Accept, decline and fulfil image requests made to the institution",
    "locator.search": "Find a patient's imaging held by other institutions (NHS number, date of birth, reason)",
    "quarantine.manage": "Route or delete the institution's quarantined studies",
    "nodes.manage": "Add, change, remove and test the institution's DICOM nodes and contacts",
    "users.manage": "Add, disable and reset the institution's users and grant roles",
    "roles.manage": "Define the institution's own roles from this permission list",
    "audit.view": "Read and export the institution's audit trail",
    "system.admin": "Everything, for every institution (hub operators)",
}

BUILTIN_ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "system_admin": ("Runs the hub: every permission for every institution", tuple(PERMISSIONS)),
    "institution_admin": (
        "Manages the institution's users, nodes, transfers and quarantine",
        (
            "transfers.view",
            "transfers.manage",
            "studies.view",
            "studies.send",
            "studies.download",
            "quarantine.manage",
            "nodes.manage",
            "users.manage",
            "roles.manage",
            "links.manage",
            "requests.create",
            "requests.fulfil",
            "locator.search",
        ),
    ),
    "sender": (
        "Sends studies and follows their transfers",
        (
            "transfers.view",
            "studies.view",
            "studies.send",
            "links.manage",
            "requests.create",
            "requests.fulfil",
            "locator.search",
        ),
    ),
    "viewer": ("Sees the worklists and views studies", ("transfers.view", "studies.view", "locator.search")),
    "pacs_guardian": (
        "Imports shared studies into the local PACS",
        ("transfers.view", "transfers.manage", "studies.view", "studies.import", "studies.download", "requests.fulfil"),
    ),
    "auditor": ("Reads and exports the audit trail", ("audit.view",)),
}


class AuditActor(TypedDict):
    """The actor fields of an audit event, as keyword arguments of `imex.audit.record`."""

    user_id: int
    username: str
    institution_id: int
    ip: str


class PermissionDenied(Forbidden):
    """The principal lacks a permission; the portal answers 403 and audits the attempt."""

    def __init__(self, permission: str) -> None:
        super().__init__(f"this needs the permission {permission!r}")
        self.permission = permission


@dataclass(frozen=True)
class Principal:
    """Who is asking: a signed-in user (or their API token), with their institution and permissions."""

    user_id: int
    username: str
    institution_id: int
    institution_ods: str
    permissions: frozenset[str] = field(default_factory=frozenset)
    ip: str = ""
    session_id: int | None = None

    @property
    def is_system_admin(self) -> bool:
        return "system.admin" in self.permissions

    def can(self, permission: str) -> bool:
        return self.is_system_admin or permission in self.permissions

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise PermissionDenied(permission)

    def audit_fields(self) -> AuditActor:
        """The actor fields of an audit event."""
        return {
            "user_id": self.user_id,
            "username": self.username,
            "institution_id": self.institution_id,
            "ip": self.ip,
        }


def parse_permissions(text: str) -> frozenset[str]:
    return frozenset(p for p in text.split() if p in PERMISSIONS)


def unknown_permissions(names: list[str]) -> list[str]:
    return [n for n in names if n not in PERMISSIONS]
