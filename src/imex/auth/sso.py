"""Accounts from an identity provider's claims. A person signing in through an `[[oidc]]` provider is found
by (provider, subject); the first time, an account is made for them. Their institution and roles follow
the provider's claims at every sign-in, through the provider's tables: a role the provider no longer gives
is taken away, and claims that map to no institution or no role remove their access (the account is
disabled; a later sign-in whose claims map again enables it, unless an administrator disabled it in imex)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex import audit
from imex.auth import accounts, sessions
from imex.auth.oidc_config import Provider
from imex.db.models import AuditEvent, Institution, User

log = logging.getLogger(__name__)

# the audit detail of a disable done because the provider's claims stopped mapping: only such a disable is
# undone by the provider (an administrator's disable in imex stays)
REMOVED_BY_PROVIDER = "access removed by identity provider"
_USERNAME_CHARS = re.compile(r"[^A-Za-z0-9._@-]")


class SignInRefused(Exception):
    """A single sign-on that must not go ahead: `public` is what the person is told, `detail` what the
    audit trail records (with the provider and, once known, the subject)."""

    def __init__(self, public: str, detail: str, subject: str = "") -> None:
        super().__init__(detail)
        self.public = public
        self.detail = detail
        self.subject = subject


def record_refusal(session: Session, provider: str, refusal: SignInRefused, ip: str) -> None:
    """The audit event of a refused single sign-on (action auth.sso, outcome denied)."""
    subject = f", subject {refusal.subject}" if refusal.subject else ""
    audit.record(
        session,
        "auth.sso",
        outcome="denied",
        username=f"sso:{provider}",
        ip=ip,
        object_type="identity_provider",
        object_id=provider,
        detail=f"provider {provider}{subject}: {refusal.detail}",
    )


# -- claims -> institution and roles ---------------------------------------------------------------------


def _values(value: Any, split: bool) -> list[str]:
    """A claim as a list of strings: a list as it is, a string whole (or split on spaces with `split`)."""
    if isinstance(value, str):
        return value.split() if split else [value.strip()]
    if isinstance(value, list):
        return [str(v).strip() for v in value if isinstance(v, (str, int))]
    if isinstance(value, int) and not isinstance(value, bool):
        return [str(value)]
    return []


@dataclass(frozen=True)
class Access:
    """What the claims map to: the institution (None: none, or more than one) and the imex roles."""

    institution: Institution | None
    roles: tuple[str, ...]
    problems: tuple[str, ...]


def map_claims(session: Session, provider: Provider, claims: dict[str, Any]) -> Access:
    problems: list[str] = []
    given = _values(claims.get(provider.institution_claim), split=False)
    codes = sorted({provider.institutions[v] for v in given if v in provider.institutions})
    institution = None
    if not codes:
        problems.append(f"{provider.institution_claim} {given or 'absent'} maps to no institution")
    elif len(codes) > 1:
        problems.append(f"{provider.institution_claim} maps to several institutions ({', '.join(codes)})")
    else:
        institution = session.scalar(select(Institution).where(Institution.ods_code == codes[0]))
        if institution is None:
            log.warning("[[oidc]] %s maps to the ODS code %s, which no institution has", provider.name, codes[0])
            problems.append(f"{provider.institution_claim} maps to {codes[0]}, which is no institution here")
    roles: list[str] = []
    if institution is not None:
        wanted = [r for v in _values(claims.get(provider.role_claim), split=True) for r in provider.roles.get(v, ())]
        for name in dict.fromkeys(wanted):
            try:
                accounts.find_role(session, name, institution.id)
            except accounts.AccountError:
                log.warning("[[oidc]] %s maps to the role %r, which %s does not have", provider.name, name, codes[0])
                continue
            roles.append(name)
        if not roles:
            given_roles = _values(claims.get(provider.role_claim), split=True)
            problems.append(f"{provider.role_claim} {given_roles or 'absent'} maps to no role")
    return Access(institution, tuple(roles), tuple(problems))


# -- the account -----------------------------------------------------------------------------------------


def _username(provider: Provider, claims: dict[str, Any]) -> str:
    raw = claims.get(provider.username_claim) or claims.get("email") or ""
    return _USERNAME_CHARS.sub("", str(raw))[:64] if isinstance(raw, str) else ""


def _free_username(session: Session, provider: Provider, wanted: str, subject: str) -> str:
    """`wanted`, or a variant of it when another provider's account has it; a local account of that name is
    never taken over: the person is refused and an administrator decides."""
    holder = session.scalar(select(User).where(User.username == wanted))
    if holder is None:
        return wanted
    if holder.identity_provider is None:
        raise SignInRefused(
            f"An imex account named {wanted!r} exists already and is not linked to {provider.title}. "
            "Ask your institution's imex administrator to remove or rename it, then sign in again.",
            f"user name {wanted} is a local account's; not taken over",
            subject,
        )
    for n in range(1, 100):
        suffix = f"-{provider.name}" if n == 1 else f"-{provider.name}{n}"
        candidate = wanted[: 64 - len(suffix)] + suffix
        if session.scalar(select(User.id).where(User.username == candidate)) is None:
            return candidate
    raise SignInRefused(
        "No free imex user name could be made for you; ask your institution's imex administrator.",
        f"no free user name for {wanted}",
        subject,
    )


def _disabled_by_provider(session: Session, user: User) -> bool:
    """Whether the account's last disable was the provider's removal (not an administrator's)."""
    last = session.scalar(
        select(AuditEvent)
        .where(
            AuditEvent.action.in_(("user.disable", "user.enable")),
            AuditEvent.object_type == "user",
            AuditEvent.object_id == user.username,
        )
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    return last is not None and last.action == "user.disable" and last.detail.startswith(REMOVED_BY_PROVIDER)


def _actor(provider: Provider, ip: str, detail: str) -> dict[str, Any]:
    return {"username": f"sso:{provider.name}", "ip": ip, "detail": detail}


def _sync_roles(session: Session, user: User, wanted: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Grant the wanted roles and take away every other: a provider-managed user's roles follow the claims."""
    current = accounts.role_names(session, user.id)
    granted = [r for r in wanted if r not in current]
    revoked = [r for r in current if r not in wanted]
    for name in revoked:
        accounts.revoke_role(session, user, name)
    session.flush()
    for name in granted:
        accounts.grant_role(session, user, name)
    return granted, revoked


def _directory_account(provider: Provider, user: User | None, subject: str) -> User:
    """A provider whose [[scim]] directory manages the accounts: it signs in the enabled account the
    directory made for this subject, and changes nothing (the directory gives institution and roles)."""
    if user is None:
        raise SignInRefused(
            "You have no imex account yet: your organisation's directory creates them. "
            "Ask your organisation's identity team or your imex administrator.",
            "no account made by the directory for this subject; nothing created",
            subject,
        )
    if user.disabled:
        raise SignInRefused(
            "This account is disabled. Ask your institution's administrator.", "account disabled", subject
        )
    return user


def sign_in(session: Session, provider: Provider, claims: dict[str, Any], ip: str) -> User:
    """The account for these (already validated) claims, created or brought up to date; SignInRefused when
    they give no access. Nothing is created for a refused person; an existing account whose claims no longer
    map is disabled (its sessions end)."""
    subject = str(claims["sub"])
    user = session.scalar(
        select(User).where(User.identity_provider == provider.name, User.subject == subject).with_for_update()
    )
    if provider.directory_managed:
        return _directory_account(provider, user, subject)
    accounts.ensure_builtin_roles(session)  # a fresh hub has none until its first account
    access = map_claims(session, provider, claims)
    if access.institution is None or not access.roles:
        reason = "; ".join(access.problems)
        if user is not None and not user.disabled:
            accounts.disable_user(
                session, user, **_actor(provider, ip, f"{REMOVED_BY_PROVIDER} {provider.name}: {reason}")
            )
        raise SignInRefused(
            f"{provider.title} signed you in, but gives you no access to imex (no institution or role of "
            "yours is mapped). Ask your organisation's identity team or your imex administrator.",
            reason + ("; account disabled" if user is not None else "; nothing created"),
            subject,
        )
    full_name = str(claims.get("name") or "").strip()[:200]
    email = str(claims.get("email") or "").strip()[:320]
    if user is None:
        wanted = _username(provider, claims)
        if not wanted:
            raise SignInRefused(
                f"{provider.title} sent no user name ({provider.username_claim}) to make your imex account from.",
                f"no {provider.username_claim} claim",
                subject,
            )
        user = User(
            username=_free_username(session, provider, wanted, subject),
            full_name=full_name,
            email=email,
            institution_id=access.institution.id,
            password_hash="",  # no imex password: signs in only through the provider
            identity_provider=provider.name,
            subject=subject,
        )
        session.add(user)
        session.flush()
        audit.record(
            session,
            "user.add",
            object_type="user",
            object_id=user.username,
            institution_id=user.institution_id,
            **_actor(
                provider,
                ip,
                f"from identity provider {provider.name}, subject {subject}; roles {', '.join(access.roles)}",
            ),
        )
        for name in access.roles:
            accounts.grant_role(session, user, name)
        return user
    if user.disabled:
        if not _disabled_by_provider(session, user):
            raise SignInRefused(
                "This account is disabled. Ask your institution's administrator.",
                "account disabled in imex",
                subject,
            )
        accounts.enable_user(
            session, user, **_actor(provider, ip, f"access given again by identity provider {provider.name}")
        )
    if user.institution_id != access.institution.id:
        old = session.scalar(select(Institution.ods_code).where(Institution.id == user.institution_id))
        for name in accounts.role_names(session, user.id):
            accounts.revoke_role(session, user, name)
        user.institution_id = access.institution.id
        sessions.revoke_all(session, user.id)  # what they could see changes
        audit.record(
            session,
            "user.change",
            object_type="user",
            object_id=user.username,
            institution_id=user.institution_id,
            **_actor(provider, ip, f"institution {old} -> {access.institution.ods_code}"),
        )
    if full_name:
        user.full_name = full_name
    if email:
        user.email = email
    granted, revoked = _sync_roles(session, user, access.roles)
    if granted or revoked:
        change = "; ".join(
            part
            for part in (
                f"granted {', '.join(granted)}" if granted else "",
                f"revoked {', '.join(revoked)}" if revoked else "",
            )
            if part
        )
        audit.record(
            session,
            "user.roles",
            object_type="user",
            object_id=user.username,
            institution_id=user.institution_id,
            **_actor(provider, ip, f"{change} (claims of {provider.name})"),
        )
    return user


def signed_in(
    session: Session, user: User, provider: Provider, subject: str, ip: str, second_factor_next: bool
) -> None:
    """Audit the sign-in (auth.login, or auth.sso_ok when the institution's second factor comes next)."""
    detail = f"via {provider.name}, subject {subject}"
    if second_factor_next:
        accounts.record_sign_in(session, user, ip, detail + "; second factor next", action="auth.sso_ok")
    else:
        accounts.record_sign_in(session, user, ip, detail)
