"""What a directory may see: the users it manages (created by it, at its institution, not deleted) and its
institution's roles that it has a group for. Anything else is answered exactly like something missing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scim2_models import NotFoundException
from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from imex.auth.scim.directories import ScimDirectory
from imex.auth.scim.resources import Place
from imex.db.models import Institution, Role, User

MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class Caller:
    """A directory making a request: itself, its institution's row id, its address and where SCIM is served."""

    directory: ScimDirectory
    institution_id: int
    ip: str
    place: Place

    @classmethod
    def of(cls, session: Session, directory: ScimDirectory, ip: str, base_url: str) -> Caller:
        institution_id = session.scalar(select(Institution.id).where(Institution.ods_code == directory.institution))
        if institution_id is None:  # checked at start-up; only an institution removed since gets here
            raise NotFoundException(detail=f"the institution {directory.institution} is not registered on this hub")
        return cls(directory, institution_id, ip[:64], Place(base_url))

    def audit_fields(self) -> dict[str, Any]:
        """The actor of an audit event: the directory (`scim:NAME`), at its institution."""
        return {
            "user_id": None,
            "username": self.directory.actor,
            "institution_id": self.institution_id,
            "ip": self.ip,
        }


def managed_users(caller: Caller) -> Select[Any]:
    """The users this directory manages. A deleted one keeps its row without a subject, and drops out."""
    return select(User).where(
        User.identity_provider == caller.directory.name,
        User.institution_id == caller.institution_id,
        User.subject.is_not(None),
    )


def as_id(text: str) -> int | None:
    """A resource id from a URL or a member value; None when it cannot be one of ours."""
    text = text.strip()
    if not text.isdigit() or len(text) > 10 or not 1 <= int(text) <= MAX_ID:
        return None
    return int(text)


def managed_user(session: Session, caller: Caller, user_id: str) -> User:
    """The user with this id if the directory manages it; 404 otherwise, whoever else has it."""
    ident = as_id(user_id)
    user = session.scalar(managed_users(caller).where(User.id == ident)) if ident is not None else None
    if user is None:
        raise NotFoundException(detail=f"no user {user_id[:64]!r}")
    return user


def visible_roles(session: Session, caller: Caller) -> list[tuple[Role, str]]:
    """(role, the directory's group name for it) for every role it has a group for, by role id."""
    roles = session.scalars(
        select(Role)
        .where(or_(Role.institution_id.is_(None), Role.institution_id == caller.institution_id))
        .order_by(Role.id)
    ).all()
    found = []
    for role in roles:
        name = caller.directory.group_name(role.name)
        if name is not None:
            found.append((role, name))
    return found


def visible_role(session: Session, caller: Caller, group_id: str) -> tuple[Role, str]:
    ident = as_id(group_id)
    for role, name in visible_roles(session, caller):
        if role.id == ident:
            return role, name
    raise NotFoundException(detail=f"no group {group_id[:64]!r}")
