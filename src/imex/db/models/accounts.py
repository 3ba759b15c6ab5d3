"""Portal accounts: users, roles and the grants between them, and signed-in sessions and API tokens."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imex.db.models.base import Base, core_table, utcnow


class User(Base):
    """A person who signs in to the portal; belongs to one institution, which scopes what they see."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("identity_provider", "subject"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    # the name's parts as a SCIM directory sends them (0018), so a change to one rebuilds full_name
    given_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    family_name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    email: Mapped[str] = mapped_column(String(320), default="")
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="RESTRICT"), index=True)
    password_hash: Mapped[str] = mapped_column(String(200), default="")
    password_changed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # the password must be changed at the next sign-in (set by `imex user reset` and admin resets)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_secret: Mapped[str | None] = mapped_column(String(200))  # encrypted at rest
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # the last TOTP time step accepted, so a code cannot be replayed within its window
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # e-mail preferences: which events reach this user by e-mail (space-separated event kinds)
    email_events: Mapped[str] = mapped_column(String(400), default="transfer.arrived transfer.failed")
    # arrivals to notify about: only those on these worklists (space-separated IDs); empty: all of them
    notify_worklists: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    # single sign-on (0016): the OpenID Connect provider or SCIM directory that manages this account (its
    # [[oidc]]/[[scim]] name) and the person's identifier there (OIDC `sub`, SCIM externalId); NULL for
    # accounts managed in imex
    identity_provider: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(255))
    # certificate sign-in (0016): the client certificate subject (RFC 4514) or e-mail SAN that identifies
    # this user on the HTTPS port
    certificate_subject: Mapped[str | None] = mapped_column(String(400), unique=True)


users = core_table(User)


class Role(Base):
    """A named set of permissions: built-in (institution_id NULL) or defined by an institution's admins."""

    __tablename__ = "roles"
    __table_args__ = (UniqueConstraint("institution_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"))
    permissions: Mapped[str] = mapped_column(Text, default="")  # space-separated permission names
    description: Mapped[str] = mapped_column(String(200), default="")


roles = core_table(Role)


class RoleGrant(Base):
    __tablename__ = "role_grants"
    __table_args__ = (UniqueConstraint("user_id", "role_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id", ondelete="CASCADE"), index=True)


role_grants = core_table(RoleGrant)


class WebSession(Base):
    """A signed-in browser or API token: only a hash of the token is stored, so a database leak does not
    hand out sessions."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # browser | token (bearer token for scripts)
    kind: Mapped[str] = mapped_column(String(8), default="browser")
    name: Mapped[str] = mapped_column(String(100), default="")
    csrf_token: Mapped[str] = mapped_column(String(64), default="")
    # a browser session is fully signed in only after the second factor, when the user has one
    second_factor_done: Mapped[bool] = mapped_column(Boolean, default=False)
    ip: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


web_sessions = core_table(WebSession)


class SsoLogin(Base):
    """One OpenID Connect sign-in under way: the state, nonce and PKCE verifier sent to the provider,
    kept in the database (any process may take the callback) and used at most once (a replayed state
    is refused)."""

    __tablename__ = "sso_logins"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(128), unique=True)
    provider: Mapped[str] = mapped_column(String(64))
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    return_to: Mapped[str] = mapped_column(String(400), default="/")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


sso_logins = core_table(SsoLogin)
