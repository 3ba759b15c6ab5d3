"""Users and roles: adding, resetting, disabling, granting; signing in with lock-out after repeated
failures. Used by the `imex user` commands and the portal alike, so both follow the same rules."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import passwords, sessions, totp
from imex.auth.permissions import BUILTIN_ROLES, AuditActor, Principal, parse_permissions, unknown_permissions
from imex.auth.secrets_box import SecretBox
from imex.db.models import Institution, Role, RoleGrant, User, utcnow
from imex.errors import Conflict, Invalid, NotFound

if TYPE_CHECKING:
    from imex.config import Config


class AccountError(Invalid, ValueError):
    """A request about an account cannot be done; the message says why and what to do."""


class NameTaken(AccountError, Conflict):
    """The user or role name asked for is in use already; choose another."""


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int = 5
    lockout: dt.timedelta = dt.timedelta(minutes=15)
    min_length: int = 12

    @classmethod
    def from_config(cls, config: Config) -> LoginPolicy:
        return cls(
            max_failures=config["auth.max_failed_logins"],
            lockout=dt.timedelta(minutes=config["auth.lockout_minutes"]),
            min_length=config["auth.password_min_length"],
        )


def ensure_builtin_roles(session: Session) -> None:
    """Create or refresh the built-in roles (their permissions follow the code)."""
    existing = {r.name: r for r in session.scalars(select(Role).where(Role.institution_id.is_(None)))}
    for name, (description, perms) in BUILTIN_ROLES.items():
        role = existing.get(name) or Role(name=name, institution_id=None)
        role.permissions = " ".join(perms)
        role.description = description
        session.add(role)
    session.flush()


def institution_by_ods(session: Session, ods: str) -> Institution:
    inst = session.scalar(select(Institution).where(Institution.ods_code == ods.upper()))
    if inst is None:
        raise AccountError(f"no institution has the ODS code {ods!r}; add it with `imex institution add`")
    return inst


def find_role(session: Session, name: str, institution_id: int) -> Role:
    """A built-in role, or one the user's institution defined."""
    role = session.scalar(
        select(Role)
        .where(Role.name == name, (Role.institution_id.is_(None)) | (Role.institution_id == institution_id))
        .order_by(Role.institution_id.is_(None))
    )
    if role is None:
        known = ", ".join(sorted(BUILTIN_ROLES))
        raise AccountError(f"no role named {name!r} (built-in roles: {known}, or one your institution defined)")
    return role


def check_password(password: str, user: User, policy: LoginPolicy) -> None:
    problems = passwords.policy_problems(
        password, username=user.username, full_name=user.full_name, min_length=policy.min_length
    )
    if problems:
        raise AccountError("the password is not accepted: " + "; ".join(problems))


def add_user(
    session: Session,
    *,
    username: str,
    institution: Institution,
    password: str,
    full_name: str = "",
    email: str = "",
    roles: Sequence[str] = (),
    policy: LoginPolicy = LoginPolicy(),
    must_change_password: bool = False,
) -> User:
    username = username.strip()
    if not username or len(username) > 64 or not all(ch.isalnum() or ch in "._-@" for ch in username):
        raise AccountError("a user name is 1-64 letters, digits, '.', '_', '-' or '@'")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise NameTaken(f"the user name {username!r} is taken")
    ensure_builtin_roles(session)
    user = User(
        username=username,
        full_name=full_name.strip()[:200],
        email=email.strip()[:320],
        institution_id=institution.id,
        must_change_password=must_change_password,
    )
    check_password(password, user, policy)
    user.password_hash = passwords.hash_password(password)
    session.add(user)
    session.flush()
    for name in roles:
        grant_role(session, user, name)
    return user


def set_password(session: Session, user: User, password: str, policy: LoginPolicy = LoginPolicy()) -> None:
    check_password(password, user, policy)
    if passwords.verify_password(user.password_hash, password):
        raise AccountError("choose a password different from the current one")
    user.password_hash = passwords.hash_password(password)
    user.password_changed_at = utcnow()
    user.must_change_password = False
    user.failed_logins = 0
    user.locked_until = None


def reset_password(session: Session, user: User) -> str:
    """A one-time password the user must change at the next sign-in; unlocks the account."""
    temporary = "-".join(secrets.token_urlsafe(6) for _ in range(3))
    user.password_hash = passwords.hash_password(temporary)
    user.password_changed_at = utcnow()
    user.must_change_password = True
    user.failed_logins = 0
    user.locked_until = None
    return temporary


def user_by_name(session: Session, username: str) -> User:
    found = session.scalar(select(User).where(User.username == username))
    if found is None:
        raise NotFound(f"no user {username!r}; `imex user list` shows them")
    return found


def reset_user(session: Session, user: User, *, remove_second_factor: bool = False, **actor: Any) -> str:
    """Give a user a one-time password (returned), unlock them and end their sessions; with
    remove_second_factor also remove their authenticator (a lost phone). `actor`: audit.record's user fields."""
    temporary = reset_password(session, user)
    if remove_second_factor:
        user.totp_enabled, user.totp_secret, user.totp_last_step = False, None, None
    sessions.revoke_all(session, user.id)
    audit.record(
        session,
        "user.reset",
        object_type="user",
        object_id=user.username,
        detail="second factor removed" if remove_second_factor else "",
        **actor,
    )
    return temporary


def disable_user(session: Session, user: User, **actor: Any) -> None:
    """Disable a user and end their sessions and tokens; the audit trail keeps their history.
    `actor`: who did it, as audit.record's user fields."""
    user.disabled = True
    sessions.revoke_all(session, user.id)
    audit.record(session, "user.disable", object_type="user", object_id=user.username, **actor)


def enable_user(session: Session, user: User, **actor: Any) -> None:
    user.disabled = False
    audit.record(session, "user.enable", object_type="user", object_id=user.username, **actor)


def grant_role(session: Session, user: User, role_name: str) -> Role:
    role = find_role(session, role_name, user.institution_id)
    exists = session.scalar(select(RoleGrant.id).where(RoleGrant.user_id == user.id, RoleGrant.role_id == role.id))
    if exists is None:
        session.add(RoleGrant(user_id=user.id, role_id=role.id))
        session.flush()
    return role


def revoke_role(session: Session, user: User, role_name: str) -> None:
    role = find_role(session, role_name, user.institution_id)
    grant = session.scalar(select(RoleGrant).where(RoleGrant.user_id == user.id, RoleGrant.role_id == role.id))
    if grant is not None:
        session.delete(grant)


def define_role(
    session: Session, institution_id: int, name: str, permissions: list[str], description: str = ""
) -> Role:
    """An institution's own role, made from the permission list (never `system.admin`)."""
    name = name.strip()
    if not name or len(name) > 64:
        raise AccountError("a role name is 1-64 characters")
    if name in BUILTIN_ROLES:
        raise AccountError(f"{name!r} is a built-in role")
    unknown = unknown_permissions(permissions)
    if unknown:
        raise AccountError(f"unknown permission(s): {', '.join(unknown)}")
    if "system.admin" in permissions:
        raise AccountError("an institution's role cannot include system.admin")
    if session.scalar(select(Role.id).where(Role.name == name, Role.institution_id == institution_id)) is not None:
        raise NameTaken(f"your institution already has a role named {name!r}")
    role = Role(
        name=name,
        institution_id=institution_id,
        permissions=" ".join(sorted(set(permissions))),
        description=description.strip()[:200],
    )
    session.add(role)
    session.flush()
    return role


def permissions_of(session: Session, user_id: int) -> frozenset[str]:
    texts = session.scalars(
        select(Role.permissions).join(RoleGrant, RoleGrant.role_id == Role.id).where(RoleGrant.user_id == user_id)
    ).all()
    return frozenset().union(*(parse_permissions(t) for t in texts)) if texts else frozenset()


def role_names(session: Session, user_id: int) -> list[str]:
    return sorted(
        session.scalars(
            select(Role.name).join(RoleGrant, RoleGrant.role_id == Role.id).where(RoleGrant.user_id == user_id)
        ).all()
    )


def principal_for(session: Session, user: User, ip: str = "", session_id: int | None = None) -> Principal:
    ods = session.scalar(select(Institution.ods_code).where(Institution.id == user.institution_id)) or ""
    return Principal(
        user_id=user.id,
        username=user.username,
        institution_id=user.institution_id,
        institution_ods=ods,
        permissions=permissions_of(session, user.id),
        ip=ip,
        session_id=session_id,
    )


# -- signing in -----------------------------------------------------------------------------------------


class LoginFailed(Exception):
    """Sign-in refused; `public` is what the person is told (never which of name or password was wrong)."""

    def __init__(self, public: str) -> None:
        super().__init__(public)
        self.public = public


GENERIC_FAILURE = "The user name or password is wrong."
LOCAL_PASSWORDS_OFF = (
    "Your institution does not use imex passwords: sign in with your organisation's account "
    '("Sign in with ..." on the sign-in page).'
)


def record_sign_in(session: Session, user: User, ip: str, detail: str = "", action: str = "auth.login") -> None:
    """A sign-in that is complete (`auth.login`: the time stamped on the user) or waits for its second factor
    (another action), in the audit trail: by password, identity provider or certificate alike."""
    if action == "auth.login":
        user.last_login_at = utcnow()
    audit.record(
        session,
        action,
        user_id=user.id,
        username=user.username,
        institution_id=user.institution_id,
        ip=ip,
        detail=detail[:500],
    )


def authenticate(session: Session, username: str, password: str, ip: str, policy: LoginPolicy) -> User:
    """Check a user name and password, counting failures and locking the account after too many. Every
    outcome is audited. Raises LoginFailed."""
    user = session.scalar(select(User).where(User.username == username.strip()[:64]))
    now = utcnow()
    if user is None:
        passwords.burn_time(password)
        audit.record(
            session, "auth.login_failed", outcome="failure", username=username[:64], ip=ip, detail="unknown user name"
        )
        raise LoginFailed(GENERIC_FAILURE)
    who: AuditActor = {"user_id": user.id, "username": user.username, "institution_id": user.institution_id, "ip": ip}
    if user.locked_until is not None and user.locked_until > now:
        passwords.burn_time(password)
        audit.record(session, "auth.login_failed", outcome="denied", detail="account locked", **who)
        minutes = max(1, int((user.locked_until - now).total_seconds() // 60) + 1)
        raise LoginFailed(
            f"Too many failed attempts: this account is locked for {minutes} more minute(s). "
            "Ask your institution's administrator if you need in sooner."
        )
    if not passwords.verify_password(user.password_hash, password):
        user.failed_logins += 1
        detail = f"wrong password ({user.failed_logins} in a row)"
        if user.failed_logins >= policy.max_failures:
            user.locked_until = now + policy.lockout
            user.failed_logins = 0
            detail += "; account locked"
        audit.record(session, "auth.login_failed", outcome="failure", detail=detail, **who)
        raise LoginFailed(GENERIC_FAILURE)
    if user.disabled:
        audit.record(session, "auth.login_failed", outcome="denied", detail="account disabled", **who)
        raise LoginFailed("This account is disabled. Ask your institution's administrator.")
    # only after the right password: a wrong one must not tell whose institution uses single sign-on
    if not session.scalar(select(Institution.local_passwords).where(Institution.id == user.institution_id)):
        audit.record(
            session, "auth.login_failed", outcome="denied", detail="local passwords off for the institution", **who
        )
        raise LoginFailed(LOCAL_PASSWORDS_OFF)
    user.failed_logins = 0
    user.locked_until = None
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(password)
    return user


def second_factor_required(session: Session, user: User) -> bool:
    """Whether this user must pass TOTP: they enrolled, or their institution makes it mandatory."""
    if user.totp_enabled:
        return True
    return bool(session.scalar(select(Institution.require_second_factor).where(Institution.id == user.institution_id)))


def verify_second_factor(session: Session, user: User, code: str, box: SecretBox, ip: str) -> bool:
    """Check a TOTP code (no replays); failures count toward the lock-out like wrong passwords."""
    ok = False
    if user.totp_enabled and user.totp_secret:
        step = totp.accepted_step(box.open(user.totp_secret), code, user.totp_last_step)
        if step is not None:
            user.totp_last_step = step
            ok = True
    who: AuditActor = {"user_id": user.id, "username": user.username, "institution_id": user.institution_id, "ip": ip}
    if ok:
        user.failed_logins = 0
    else:
        user.failed_logins += 1
        audit.record(session, "auth.totp_failed", outcome="failure", detail="wrong or reused code", **who)
    return ok


def start_enrolment(user: User, box: SecretBox) -> str:
    """A new TOTP secret for the user, stored encrypted but not active until confirmed with a code."""
    secret = totp.new_secret()
    user.totp_secret = box.seal(secret)
    user.totp_enabled = False
    user.totp_last_step = None
    return secret


def confirm_enrolment(user: User, code: str, box: SecretBox) -> bool:
    if not user.totp_secret:
        return False
    step = totp.accepted_step(box.open(user.totp_secret), code, None)
    if step is None:
        return False
    user.totp_enabled = True
    user.totp_last_step = step
    return True
