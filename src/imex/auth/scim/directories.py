"""The `[[scim]]` directories of imex.toml: read and checked at start-up (a bad table stops the hub with a
ConfigError saying what to fix), and told apart by their bearer token, of which only the SHA-256 is known.

    [[scim]]
    name = "kings-entra"            # the users it creates are managed by this name (users.identity_provider)
    institution = "RJZ"             # it manages this institution's users and roles only
    token_sha256 = "9f86d0..."      # from `imex scim token kings-entra`; or token_env = "VARIABLE"
    roles = { "IMEX senders" = "sender" }   # optional: group displayName -> imex role
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imex.auth.accounts import ensure_builtin_roles
from imex.auth.permissions import BUILTIN_ROLES
from imex.config import ConfigError
from imex.db.models import Institution, Role

KEYS = frozenset({"name", "institution", "token_sha256", "token_env", "roles"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
MIN_TOKEN_LENGTH = 32
# hub-wide power is never the directory of one institution's to give
UNGRANTABLE = frozenset({"system_admin"})


def token_sha256(token: str) -> str:
    """What imex.toml holds instead of the token: its SHA-256 in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A random bearer token for a directory (256 bits), shown once by `imex scim token`."""
    return "scim_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ScimDirectory:
    """One directory: its name, the institution (ODS code) it manages, its token's digest and the group
    names it uses for imex roles (empty: a group's displayName is the role's name)."""

    name: str
    institution: str
    digest: bytes = field(repr=False)
    roles: Mapping[str, str] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        """The user name its changes are audited under."""
        return f"scim:{self.name}"

    def group_name(self, role_name: str) -> str | None:
        """The displayName of the group standing for an imex role; None when the directory has no group for it."""
        if role_name in UNGRANTABLE:
            return None
        if not self.roles:
            return role_name
        return next((group for group, role in self.roles.items() if role == role_name), None)

    def role_name(self, group_name: str) -> str | None:
        """The imex role a group's displayName stands for (exact, then ignoring case); None when none."""
        if not self.roles:
            return None if group_name in UNGRANTABLE else group_name
        if group_name in self.roles:
            return self.roles[group_name]
        folded = {group.casefold(): role for group, role in self.roles.items()}
        return folded.get(group_name.casefold())


def _problem(index: int, table: Mapping[str, Any], message: str) -> ConfigError:
    name = table.get("name")
    where = f"[[scim]] {name!r}" if isinstance(name, str) and name else f"[[scim]] number {index + 1}"
    return ConfigError(f"{where}: {message}")


def _digest(index: int, table: Mapping[str, Any], env: Mapping[str, str]) -> bytes:
    if "token" in table:
        raise _problem(
            index,
            table,
            "never put the token itself in imex.toml: give token_sha256 (from `imex scim token NAME`) or token_env",
        )
    has_hash, has_env = "token_sha256" in table, "token_env" in table
    if has_hash == has_env:
        raise _problem(index, table, "give exactly one of token_sha256 (from `imex scim token NAME`) and token_env")
    if has_hash:
        value = table["token_sha256"]
        if not isinstance(value, str) or not _HEX64.fullmatch(value.strip().lower()):
            raise _problem(index, table, "token_sha256 must be 64 hexadecimal digits (the SHA-256 of the token)")
        return bytes.fromhex(value.strip())
    variable = table["token_env"]
    if not isinstance(variable, str) or not variable:
        raise _problem(index, table, "token_env must name an environment variable")
    token = env.get(variable, "").strip()
    if not token:
        raise _problem(index, table, f"the environment variable {variable} (token_env) is not set")
    if len(token) < MIN_TOKEN_LENGTH:
        raise _problem(index, table, f"the token in {variable} is shorter than {MIN_TOKEN_LENGTH} characters")
    return hashlib.sha256(token.encode()).digest()


def _roles(index: int, table: Mapping[str, Any]) -> dict[str, str]:
    roles = table.get("roles", {})
    if not isinstance(roles, dict) or not all(
        isinstance(k, str) and k.strip() and isinstance(v, str) and v for k, v in roles.items()
    ):
        raise _problem(index, table, 'roles must be a table of group displayName = "imex role name"')
    for group, role in roles.items():
        if role in UNGRANTABLE:
            raise _problem(index, table, f"group {group!r}: a directory cannot grant {role}")
    targets = list(roles.values())
    doubled = sorted({role for role in targets if targets.count(role) > 1})
    if doubled:
        raise _problem(
            index, table, f"roles: more than one group stands for {', '.join(doubled)}; give each role one group"
        )
    return dict(roles)


def parse_directories(tables: Sequence[Mapping[str, Any]], env: Mapping[str, str]) -> tuple[ScimDirectory, ...]:
    """The `[[scim]]` tables as directories; ConfigError names the table and what is wrong with it."""
    directories: list[ScimDirectory] = []
    for index, table in enumerate(tables):
        unknown = sorted(set(table) - KEYS - {"token"})
        if unknown:
            raise _problem(index, table, f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})")
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise _problem(index, table, "name must be 1-64 letters, digits, '.', '_' or '-'")
        if any(d.name == name for d in directories):
            raise _problem(index, table, "two [[scim]] tables have this name")
        institution = table.get("institution")
        if not isinstance(institution, str) or not institution.strip():
            raise _problem(index, table, "institution must be the ODS code of the institution whose users it manages")
        digest = _digest(index, table, env)
        if any(hmac.compare_digest(d.digest, digest) for d in directories):
            raise _problem(index, table, "its token is another directory's too; give each directory its own")
        directories.append(ScimDirectory(name, institution.strip().upper(), digest, _roles(index, table)))
    return tuple(directories)


def check_directories(session: Session, directories: Sequence[ScimDirectory]) -> None:
    """At start-up: each directory's institution is registered and each role it maps to exists there (the
    built-in roles are made first: a new hub has none until its first user)."""
    if directories:
        ensure_builtin_roles(session)
    for directory in directories:
        institution_id = session.scalar(select(Institution.id).where(Institution.ods_code == directory.institution))
        if institution_id is None:
            raise ConfigError(
                f"[[scim]] {directory.name!r}: no institution has the ODS code {directory.institution!r} "
                "(add it to [[institutions]] or with `imex institution add`)"
            )
        known = set(BUILTIN_ROLES) | set(
            session.scalars(select(Role.name).where(Role.institution_id == institution_id)).all()
        )
        missing = sorted(set(directory.roles.values()) - known)
        if missing:
            raise ConfigError(
                f"[[scim]] {directory.name!r}: no role named {', '.join(map(repr, missing))} at {directory.institution} "
                "(built-in roles, or one the institution defined)"
            )


def directory_for_token(directories: Sequence[ScimDirectory], token: str | None) -> ScimDirectory | None:
    """The directory whose token this is, or None. Every digest is compared, in constant time, whichever
    matches, so the answer's timing does not tell how much of a guess was right."""
    if not token or len(token) > 512:
        return None
    digest = hashlib.sha256(token.encode()).digest()
    found = None
    for directory in directories:
        if hmac.compare_digest(directory.digest, digest):
            found = directory
    return found
