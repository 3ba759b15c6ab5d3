"""The `[[oidc]]` tables of imex.toml: each an OpenID Connect provider a hospital signs its staff in with,
and how its claims map to an institution and roles. Checked once at start-up, so a mistake stops `imex
serve` with a message that names the table and the key rather than failing at someone's sign-in."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from imex.config import Config, ConfigError
from imex.directory import DirectoryError, check_ods

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # it is part of the callback's path
_KEYS = {
    "name",
    "title",
    "issuer",
    "client_id",
    "client_secret",
    "client_secret_env",
    "scopes",
    "institution_claim",
    "institutions",
    "role_claim",
    "roles",
    "username_claim",
    "end_session",
    "redirect_uri",
    "ca_file",
}


@dataclass(frozen=True)
class Provider:
    """One identity provider, as configured; the secret is kept out of its repr."""

    name: str
    title: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: str
    institution_claim: str
    institutions: Mapping[str, str]  # claim value -> ODS code
    role_claim: str
    roles: Mapping[str, tuple[str, ...]]  # claim value -> imex role names
    username_claim: str = "preferred_username"
    # a [[scim]] directory of the same name makes these accounts and gives their roles: the provider then
    # only signs in the accounts it made, and its claims change nothing (no tables to map them)
    directory_managed: bool = False
    end_session: bool = False
    redirect_uri: str = ""  # empty: the address the browser used, + /login/sso/<name>/callback
    ca_file: str = ""  # empty: the system's certificate authorities


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(value: Any, what: str, fail: Any) -> str:
    """An https URL; plain http only to this machine (a test or development provider)."""
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{what} must be a URL such as https://login.example.nhs.uk/realms/kings")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise fail(f"{what} {value!r} must be an https:// URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise fail(f"{what} {value!r} must use https:// (plain http is allowed only on this machine)")
    if parts.query or parts.fragment:
        raise fail(f"{what} {value!r} must have no query or fragment")
    return value.strip()


def _text(item: dict[str, Any], key: str, fail: Any, default: str | None = None) -> str:
    value = item.get(key, default)
    if value is None:
        raise fail(f"lacks {key}")
    if not isinstance(value, str) or not value.strip():
        raise fail(f"{key} must be a non-empty string")
    return value.strip()


def _table(item: dict[str, Any], key: str, fail: Any) -> dict[str, Any]:
    value = item.get(key)
    if not isinstance(value, dict) or not value:
        raise fail(f'{key} must be a table such as {key} = {{ "claim value" = "..." }} with at least one entry')
    return value


def _secret(item: dict[str, Any], fail: Any, env: Mapping[str, str]) -> str:
    if ("client_secret" in item) == ("client_secret_env" in item):
        raise fail("give either client_secret or client_secret_env (the environment variable holding it)")
    if "client_secret" in item:
        return _text(item, "client_secret", fail)
    variable = _text(item, "client_secret_env", fail)
    secret = env.get(variable, "")
    if not secret:
        raise fail(f"the environment variable {variable} (client_secret_env) is not set")
    return secret


def _roles(item: dict[str, Any], fail: Any) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for claim_value, target in _table(item, "roles", fail).items():
        names = [target] if isinstance(target, str) else target
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
            raise fail(f"roles.{claim_value} must be an imex role name or a list of them")
        out[str(claim_value)] = tuple(n.strip() for n in names)
    return out


def _institutions(item: dict[str, Any], fail: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for claim_value, ods in _table(item, "institutions", fail).items():
        if not isinstance(ods, str):
            raise fail(f'institutions.{claim_value} must be an ODS code (a string such as "RJZ")')
        try:
            out[str(claim_value)] = check_ods(ods)
        except DirectoryError as exc:
            raise fail(f"institutions.{claim_value}: {exc}") from None
    return out


_MAPPING_KEYS = ("institution_claim", "institutions", "role_claim", "roles")


def parse_provider(
    item: dict[str, Any], index: int, env: Mapping[str, str], directories: frozenset[str] = frozenset()
) -> Provider:
    label = f"[[oidc]] table {index + 1}" + (f" ({item['name']!r})" if isinstance(item.get("name"), str) else "")

    def fail(message: str) -> ConfigError:
        return ConfigError(f"{label}: {message}")

    unknown = set(item) - _KEYS
    if unknown:
        raise fail(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    name = _text(item, "name", fail)
    if not _NAME_RE.match(name):
        raise fail(f"name {name!r} must be 1-64 lower-case letters, digits, '-' or '_' (it is part of a URL)")
    scopes_value = item.get("scopes", "openid profile email")
    if isinstance(scopes_value, list) and all(isinstance(s, str) for s in scopes_value):
        scopes_value = " ".join(scopes_value)
    if not isinstance(scopes_value, str) or "openid" not in scopes_value.split():
        raise fail("scopes must be a string (or list) of scopes that includes openid")
    end_session = item.get("end_session", False)
    if not isinstance(end_session, bool):
        raise fail("end_session must be true or false")
    redirect_uri = _check_url(item["redirect_uri"], "redirect_uri", fail) if "redirect_uri" in item else ""
    if redirect_uri and not urlsplit(redirect_uri).path.endswith(f"/login/sso/{name}/callback"):
        raise fail(f"redirect_uri must end with /login/sso/{name}/callback (the hub's callback for this provider)")
    ca_file = _text(item, "ca_file", fail) if "ca_file" in item else ""
    if ca_file and not Path(ca_file).is_file():
        raise fail(f"ca_file {ca_file} does not exist")
    managed = name in directories
    if managed:
        given = [k for k in _MAPPING_KEYS if k in item]
        if given:
            raise fail(
                f"the [[scim]] directory {name!r} gives these accounts their institution and roles: "
                f"remove {', '.join(given)}"
            )
    return Provider(
        name=name,
        title=_text(item, "title", fail, default=name),
        issuer=_check_url(item.get("issuer"), "issuer", fail),
        client_id=_text(item, "client_id", fail),
        client_secret=_secret(item, fail, env),
        scopes=" ".join(scopes_value.split()),
        institution_claim="" if managed else _text(item, "institution_claim", fail),
        institutions={} if managed else _institutions(item, fail),
        role_claim="" if managed else _text(item, "role_claim", fail),
        roles={} if managed else _roles(item, fail),
        username_claim=_text(item, "username_claim", fail, default="preferred_username"),
        directory_managed=managed,
        end_session=end_session,
        redirect_uri=redirect_uri,
        ca_file=ca_file,
    )


def parse_providers(
    items: list[dict[str, Any]], env: Mapping[str, str] | None = None, directories: frozenset[str] = frozenset()
) -> dict[str, Provider]:
    """The configured providers by name; ConfigError for the first mistake. `directories`: the names of
    the [[scim]] directories (a provider of the same name signs in the accounts that directory manages)."""
    env = os.environ if env is None else env
    providers: dict[str, Provider] = {}
    for index, item in enumerate(items):
        provider = parse_provider(item, index, env, directories)
        if provider.name in providers:
            raise ConfigError(f"[[oidc]] table {index + 1}: the name {provider.name!r} is used by another provider")
        providers[provider.name] = provider
    return providers


def providers_of(config: Config) -> dict[str, Provider]:
    """The [[oidc]] providers of a configuration, knowing its [[scim]] directories."""
    directories = frozenset(str(t.get("name")) for t in config.scim if isinstance(t, dict))
    return parse_providers(config.oidc, directories=directories)
