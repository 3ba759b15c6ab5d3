"""Role groups: each imex role the directory has a group for (a built-in role other than system_admin, or
one its institution defined; named as in the directory's `roles` table, or by the role's own name) is a
Group whose members are the directory's users who have the role. The directory changes membership only:
roles and their permissions are imex's, so POST finds no group to create (409 when it exists already,
400 when imex has no such role) and DELETE empties the group of the directory's users, keeping the role.
Each member added or removed is audited as `scim.group.update`."""

from __future__ import annotations

from collections import defaultdict

from scim2_models import (
    Group,
    InvalidValueException,
    MutabilityException,
    PatchOp,
    SearchRequest,
    UniquenessException,
)
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth.scim.resources import POLICY, Page, group_resource, page_bounds
from imex.auth.scim.scope import Caller, as_id, managed_users, visible_role, visible_roles
from imex.db.models import Role, RoleGrant, User


def _members(session: Session, caller: Caller, role_ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    """For each role, the directory's users who have it: (user id, user name), by id."""
    found: dict[int, list[tuple[int, str]]] = defaultdict(list)
    if not role_ids:
        return found
    mine = managed_users(caller).subquery()
    rows = session.execute(
        select(RoleGrant.role_id, mine.c.id, mine.c.username)
        .join(mine, mine.c.id == RoleGrant.user_id)
        .where(RoleGrant.role_id.in_(role_ids))
        .order_by(mine.c.id)
    )
    for role_id, user_id, username in rows:
        found[role_id].append((user_id, username))
    return found


def get_group(session: Session, caller: Caller, group_id: str) -> Group:
    role, name = visible_role(session, caller, group_id)
    return group_resource(role, name, _members(session, caller, [role.id])[role.id], caller.place)


def search_groups(session: Session, caller: Caller, search: SearchRequest[Group]) -> Page:
    """Every group, or those matching the filter (any filter: an institution has a handful of roles, so the
    groups are matched as resources, members included)."""
    roles = visible_roles(session, caller)
    members = _members(session, caller, [role.id for role, _ in roles])
    groups = [group_resource(role, name, members[role.id], caller.place) for role, name in roles]
    if search.filter is not None:
        groups = [group for group in groups if search.filter.match(group)]
    start, count = page_bounds(search)
    return Page(len(groups), start, groups[start - 1 : start - 1 + count])


def create_group(session: Session, caller: Caller, resource: Group) -> Group:
    """Nothing is created: a group imex has answers 409 with its id, any other 400."""
    wanted = (resource.display_name or "").strip()
    for role, name in visible_roles(session, caller):
        if name.casefold() == wanted.casefold():
            raise UniquenessException(
                attribute="displayName",
                detail=f"the group {name!r} exists (id {role.id}); find it with filter=displayName eq {name!r}",
            )
    role_name = caller.directory.role_name(wanted)
    hint = (
        "add it to the roles table of this [[scim]] directory"
        if caller.directory.roles
        else "an institution admin defines roles in the portal"
    )
    raise InvalidValueException(
        attribute="displayName",
        detail=f"imex has no role for the group {wanted!r}"
        + (f" ({role_name!r})" if role_name and role_name != wanted else "")
        + f" at {caller.directory.institution}: {hint}",
    )


def _member_ids(session: Session, caller: Caller, group: Group) -> set[int]:
    """The users a group's members name; each must be one of the directory's users (400 otherwise)."""
    wanted: set[int] = set()
    for member in group.members or []:
        ident = as_id(member.value or "")
        if ident is not None:
            wanted.add(ident)
        else:
            raise InvalidValueException(attribute="members", detail=f"no user {str(member.value)[:64]!r}")
    if wanted:
        known = set(session.scalars(managed_users(caller).with_only_columns(User.id).where(User.id.in_(wanted))))
        unknown = sorted(wanted - known)
        if unknown:
            raise InvalidValueException(attribute="members", detail=f"no user {unknown[0]}")
    return wanted


def _set_members(session: Session, caller: Caller, role: Role, name: str, wanted: set[int]) -> None:
    """Grant the role to the users added and take it from those removed, one audit event each."""
    current = {uid: username for uid, username in _members(session, caller, [role.id])[role.id]}
    added = wanted - set(current)
    removed = set(current) - wanted
    usernames = dict(current)
    if added:
        usernames.update(
            {uid: name for uid, name in session.execute(select(User.id, User.username).where(User.id.in_(added)))}
        )
    for user_id in sorted(added):
        session.add(RoleGrant(user_id=user_id, role_id=role.id))
    if removed:
        session.execute(delete(RoleGrant).where(RoleGrant.role_id == role.id, RoleGrant.user_id.in_(removed)))
    session.flush()
    for user_id, verb in [(u, "added to") for u in sorted(added)] + [(u, "removed from") for u in sorted(removed)]:
        audit.record(
            session,
            "scim.group.update",
            object_type="user",
            object_id=usernames[user_id],
            detail=f"{verb} group {name!r} (role {role.name})",
            **caller.audit_fields(),
        )


def _same_name(role_name: str, group: Group) -> None:
    if (group.display_name or "").strip().casefold() != role_name.casefold():
        raise MutabilityException(
            attribute="displayName",
            detail=f"a group's displayName is its imex role's ({role_name!r}); it cannot change",
        )


def replace_group(session: Session, caller: Caller, group_id: str, resource: Group) -> Group:
    """PUT: the members become the resource's (the directory's users only; others who have the role keep it)."""
    role, name = visible_role(session, caller, group_id)
    _same_name(name, resource)
    _set_members(session, caller, role, name, _member_ids(session, caller, resource))
    return get_group(session, caller, group_id)


def patch_group(session: Session, caller: Caller, group_id: str, patch: PatchOp[Group]) -> Group:
    """PATCH: add, remove or replace members (Entra's `remove` with a value too); the displayName stays."""
    role, name = visible_role(session, caller, group_id)
    group = group_resource(role, name, _members(session, caller, [role.id])[role.id], caller.place)
    patch.patch(group, scim_policy=POLICY)
    _same_name(name, group)
    _set_members(session, caller, role, name, _member_ids(session, caller, group))
    return get_group(session, caller, group_id)


def delete_group(session: Session, caller: Caller, group_id: str) -> None:
    """The role stays (it is imex's); the directory's users lose it."""
    role, name = visible_role(session, caller, group_id)
    _set_members(session, caller, role, name, set())
