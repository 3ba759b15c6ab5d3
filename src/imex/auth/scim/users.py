"""Users as a directory provisions them: created at its institution without a password (they sign in
through the institution's identity provider), changed by replacement (PUT) or by PATCH operations,
disabled by `active: false` (their sessions and API tokens end), and removed by DELETE.

A removed user keeps their row, so the audit trail still names them: disabled, without roles, no longer
the directory's (no subject), and renamed `~deletedID~NAME` so that the name can be given to someone
new (RFC 7644 3.6: a deleted resource takes no part in uniqueness). Every change is audited as
`scim.user.*`, with `scim:DIRECTORY` as the actor."""

from __future__ import annotations

from scim2_models import (
    InvalidFilterException,
    InvalidValueException,
    PatchOp,
    SearchRequest,
    UniquenessException,
)
from scim2_models import User as ScimUser
from scim2_models.path import AttrPath, CompareOperator, Comparison, FilterNode, LogicalExpr, LogicalOperator
from sqlalchemy import ColumnElement, and_, delete, false, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import sessions
from imex.auth.scim.resources import POLICY, Page, joined_name, page_bounds, primary_email, user_resource
from imex.auth.scim.scope import Caller, as_id, managed_user, managed_users, visible_roles
from imex.db.models import Role, RoleGrant, User

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"


# -- reading ---------------------------------------------------------------------------------------------


def groups_by_user(session: Session, caller: Caller, user_ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    """For each user, the role groups of the directory they are in: (role id, group name)."""
    names = {role.id: name for role, name in visible_roles(session, caller)}
    found: dict[int, list[tuple[int, str]]] = {uid: [] for uid in user_ids}
    if not user_ids or not names:
        return found
    rows = session.execute(
        select(RoleGrant.user_id, RoleGrant.role_id)
        .where(RoleGrant.user_id.in_(user_ids), RoleGrant.role_id.in_(list(names)))
        .order_by(RoleGrant.role_id)
    )
    for user_id, role_id in rows:
        found[user_id].append((role_id, names[role_id]))
    return found


def resource_of(session: Session, caller: Caller, user: User) -> ScimUser:
    return user_resource(user, groups_by_user(session, caller, [user.id])[user.id], caller.place)


def get_user(session: Session, caller: Caller, user_id: str) -> ScimUser:
    return resource_of(session, caller, managed_user(session, caller, user_id))


# userName is compared ignoring case (RFC 7643 caseExact false), externalId and id exactly
_FILTERABLE = "userName, externalId or id"


def _comparison(node: Comparison) -> ColumnElement[bool]:
    path: AttrPath = node.attr_path
    attribute = path.attr.lower()
    if node.op != CompareOperator.eq or path.sub_attr or (path.uri and path.uri.rstrip(":") != CORE_USER):
        attribute = ""
    value = node.value
    if attribute == "username" and isinstance(value, str):
        return func.lower(User.username) == value.lower()
    if attribute == "externalid" and isinstance(value, str):
        return User.subject == value
    if attribute == "id" and isinstance(value, str):
        ident = as_id(value)
        return User.id == ident if ident is not None else false()
    raise InvalidFilterException(
        detail=f"imex answers user filters of 'eq' on {_FILTERABLE}, joined by 'and' (not {node.attr_path} {node.op})"
    )


def user_condition(node: FilterNode) -> ColumnElement[bool]:
    """A parsed filter as SQL, for the filters directories send (`userName eq "x"`, `externalId eq "y"`,
    and `and` of those); invalidFilter for any other."""
    if isinstance(node, Comparison):
        return _comparison(node)
    if isinstance(node, LogicalExpr) and node.op == LogicalOperator.and_:
        return and_(*(user_condition(term) for term in node.terms))
    raise InvalidFilterException(detail=f"imex answers user filters of 'eq' on {_FILTERABLE}, joined by 'and'")


def search_users(session: Session, caller: Caller, search: SearchRequest[ScimUser]) -> Page:
    query = managed_users(caller)
    if search.filter is not None:
        query = query.where(user_condition(search.filter.ast))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    start, count = page_bounds(search)
    users = list(session.scalars(query.order_by(User.id).offset(start - 1).limit(count))) if count else []
    groups = groups_by_user(session, caller, [u.id for u in users])
    return Page(total, start, [user_resource(u, groups[u.id], caller.place) for u in users])


# -- writing ---------------------------------------------------------------------------------------------


def _username(resource: ScimUser) -> str:
    """userName as an imex user name (the same rule as accounts.add_user)."""
    name = (resource.user_name or "").strip()
    if not name or len(name) > 64 or not all(ch.isalnum() or ch in "._-@" for ch in name):
        raise InvalidValueException(
            attribute="userName", detail="userName must be 1-64 letters, digits, '.', '_', '-' or '@'"
        )
    return name


def _check_free(session: Session, caller: Caller, user: User | None, username: str, subject: str) -> None:
    """409 uniqueness when another user has this name (ignoring case: any account on the hub) or another
    of the directory's users has this externalId."""
    others = select(User.id).where(User.id != user.id) if user is not None else select(User.id)
    if session.scalar(others.where(func.lower(User.username) == username.lower())) is not None:
        raise UniquenessException(attribute="userName", detail=f"the userName {username!r} is taken")
    if (
        session.scalar(others.where(User.identity_provider == caller.directory.name, User.subject == subject))
        is not None
    ):
        raise UniquenessException(attribute="externalId", detail=f"another user has the externalId {subject!r}")


def _names(resource: ScimUser) -> tuple[str, str, str]:
    """(displayName, name.formatted, givenName + familyName) of a resource, "" for what it lacks."""
    name = resource.name
    formatted = (name.formatted or "").strip() if name else ""
    joined = joined_name(name.given_name, name.family_name) if name else ""
    return (resource.display_name or "").strip(), formatted, joined


def full_name(after: ScimUser, before: ScimUser | None = None, current: str = "") -> str:
    """The one full name imex shows. For a new or replaced user: displayName, else name.formatted, else the
    name's parts. For a PATCH (`before` the resource as it was): what the operations changed, in that order;
    a changed part rebuilds it only when it was made of the parts."""
    display, formatted, joined = _names(after)
    if before is None:
        return display or formatted or joined
    was_display, was_formatted, was_joined = _names(before)
    if display != was_display and display:
        return display
    if formatted != was_formatted and formatted:
        return formatted
    if joined != was_joined and current in ("", was_joined):
        return joined
    if not (display or formatted or joined):
        return ""
    return current


def _text(value: str, attribute: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidValueException(attribute=attribute, detail=f"{attribute} is longer than {limit} characters")
    return value


def _write(session: Session, caller: Caller, user: User, after: ScimUser, before: ScimUser | None) -> list[str]:
    """Put a resource's mapped attributes on the row; the names of those that changed."""
    username = _username(after)
    subject = (after.external_id or "").strip() or user.subject or username
    _check_free(session, caller, user if user.id else None, username, _text(subject, "externalId", 255))
    name = after.name
    values = {
        "username": username,
        "subject": subject,
        "given_name": _text(((name.given_name if name else None) or "").strip(), "name.givenName", 100),
        "family_name": _text(((name.family_name if name else None) or "").strip(), "name.familyName", 100),
        "full_name": _text(full_name(after, before, user.full_name or ""), "displayName", 200),
        "email": _text(primary_email(after), "emails", 320),
    }
    labels = {
        "username": "userName",
        "subject": "externalId",
        "given_name": "name.givenName",
        "family_name": "name.familyName",
        "full_name": "displayName",
        "email": "emails",
    }
    changed = []
    for column, value in values.items():
        if getattr(user, column) != value:
            changed.append(
                f"{labels[column]} (was {user.username!r})" if column == "username" and user.id else labels[column]
            )
            setattr(user, column, value)
    return changed


def _flush(session: Session) -> None:
    """Two requests may race for a name: the database's unique constraints settle it, answered 409."""
    try:
        session.flush()
    except IntegrityError:
        raise UniquenessException(detail="the userName or externalId was taken meanwhile") from None


def _set_active(session: Session, caller: Caller, user: User, active: bool | None) -> None:
    """active false: disabled, and every session and API token ends; true: enabled again (ended sessions
    and tokens stay ended)."""
    if active is None or active == (not user.disabled):
        return
    user.disabled = not active
    if not active:
        sessions.revoke_all(session, user.id)
    action = "scim.user.enable" if active else "scim.user.disable"
    audit.record(session, action, object_type="user", object_id=user.username, **caller.audit_fields())


def create_user(session: Session, caller: Caller, resource: ScimUser) -> ScimUser:
    user = User(
        institution_id=caller.institution_id,
        identity_provider=caller.directory.name,
        password_hash="",  # no password: they sign in through the institution's identity provider
        must_change_password=False,
        disabled=resource.active is False,
    )
    _write(session, caller, user, resource, None)
    session.add(user)
    _flush(session)
    audit.record(
        session,
        "scim.user.create",
        object_type="user",
        object_id=user.username,
        detail=f"externalId {user.subject}" + ("; inactive" if user.disabled else ""),
        **caller.audit_fields(),
    )
    return resource_of(session, caller, user)


def _update(session: Session, caller: Caller, user: User, after: ScimUser, before: ScimUser | None) -> ScimUser:
    changed = _write(session, caller, user, after, before)
    _flush(session)
    if changed:
        audit.record(
            session,
            "scim.user.update",
            object_type="user",
            object_id=user.username,
            detail="changed: " + ", ".join(changed),
            **caller.audit_fields(),
        )
    _set_active(session, caller, user, after.active)
    return resource_of(session, caller, user)


def replace_user(session: Session, caller: Caller, user_id: str, resource: ScimUser) -> ScimUser:
    """PUT: the mapped attributes become the resource's (those it leaves out are cleared; an absent
    `active` leaves the account as it is)."""
    user = managed_user(session, caller, user_id)
    return _update(session, caller, user, resource, None)


def patch_user(session: Session, caller: Caller, user_id: str, patch: PatchOp[ScimUser]) -> ScimUser:
    """PATCH: the operations applied to the user as the directory sees it, then the result stored."""
    user = managed_user(session, caller, user_id)
    before = resource_of(session, caller, user)
    after = before.model_copy(deep=True)
    patch.patch(after, scim_policy=POLICY)
    return _update(session, caller, user, after, before)


def delete_user(session: Session, caller: Caller, user_id: str) -> None:
    """Access removed: disabled, sessions and tokens ended, every role taken away; the row stays for the
    audit trail, out of the directory's sight and of uniqueness checks."""
    user = managed_user(session, caller, user_id)
    name = user.username
    roles = session.scalars(
        select(Role.name).join(RoleGrant, RoleGrant.role_id == Role.id).where(RoleGrant.user_id == user.id)
    ).all()
    user.disabled = True
    sessions.revoke_all(session, user.id)
    session.execute(delete(RoleGrant).where(RoleGrant.user_id == user.id))
    user.subject = None
    user.username = f"~deleted{user.id}~{name}"[:64]  # '~' is in no user name, the id makes it unique
    _flush(session)
    audit.record(
        session,
        "scim.user.delete",
        object_type="user",
        object_id=name,
        detail=f"disabled, roles removed: {', '.join(sorted(roles)) or 'none'}; kept as {user.username}",
        **caller.audit_fields(),
    )
