"""Talking to an OpenID Connect provider: its discovery document and keys (cached a few minutes per
process), the authorization request (code flow, PKCE S256, state and nonce), the code exchange and the ID
token's checks. Authlib builds the requests and checks the claims; joserfc (Authlib's JOSE library) checks
the signature. Nothing here touches the database: the sign-in flow (auth/sso_flow.py) does."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from imex.auth.oidc_config import Provider

CACHE_SECONDS = 300.0  # a provider's discovery document and keys, per process
HTTP_TIMEOUT = 10.0
LEEWAY_SECONDS = 60  # clock difference tolerated on exp and iat
# never "none" nor an HMAC: the keys come from the provider's JWKS, and its public key must not become a secret
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class ProviderError(Exception):
    """The provider could not be reached or answered something unusable; the message says what."""


class TokenRefused(Exception):
    """The ID token (or the token answer) failed a check; the message says which, for the audit trail."""


@dataclass(frozen=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str
    signing_algorithms: tuple[str, ...]
    token_auth_methods: tuple[str, ...]


@dataclass
class _Cached:
    fetched: float
    metadata: Metadata
    keys: dict[str, Any] | None = None


_cache: dict[str, _Cached] = {}  # by issuer
_lock = threading.Lock()


def http_client(provider: Provider) -> httpx.Client:
    verify: ssl.SSLContext | bool = True
    if provider.ca_file:
        verify = ssl.create_default_context(cafile=provider.ca_file)
    return httpx.Client(timeout=HTTP_TIMEOUT, verify=verify, follow_redirects=False)


def _get_json(provider: Provider, url: str) -> dict[str, Any]:
    try:
        with http_client(provider) as client:
            answer = client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise ProviderError(f"{url} could not be reached: {type(exc).__name__}") from None
    if answer.status_code != 200:
        raise ProviderError(f"{url} answered HTTP {answer.status_code}")
    try:
        data = answer.json()
    except ValueError:
        raise ProviderError(f"{url} did not answer JSON") from None
    if not isinstance(data, dict):
        raise ProviderError(f"{url} did not answer a JSON object")
    return data


def _parse_metadata(provider: Provider, doc: dict[str, Any]) -> Metadata:
    if doc.get("issuer") != provider.issuer:  # OpenID Connect Discovery 1.0, 4.3
        raise ProviderError(f"the discovery document names the issuer {doc.get('issuer')!r}, not {provider.issuer!r}")
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise ProviderError(f"the discovery document has no {key}")
    algorithms = doc.get("id_token_signing_alg_values_supported") or ["RS256"]
    methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    return Metadata(
        issuer=doc["issuer"],
        authorization_endpoint=doc["authorization_endpoint"],
        token_endpoint=doc["token_endpoint"],
        jwks_uri=doc["jwks_uri"],
        end_session_endpoint=str(doc.get("end_session_endpoint") or ""),
        signing_algorithms=tuple(a for a in algorithms if a in SIGNING_ALGORITHMS) or ("RS256",),
        token_auth_methods=tuple(str(m) for m in methods),
    )


def _entry(provider: Provider) -> _Cached:
    with _lock:
        cached = _cache.get(provider.issuer)
        if cached is not None and time.monotonic() - cached.fetched < CACHE_SECONDS:
            return cached
    url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
    entry = _Cached(time.monotonic(), _parse_metadata(provider, _get_json(provider, url)))
    with _lock:
        _cache[provider.issuer] = entry
    return entry


def metadata(provider: Provider) -> Metadata:
    """The provider's discovery document (`/.well-known/openid-configuration`), checked and cached."""
    return _entry(provider).metadata


def _key_set(provider: Provider, refresh: bool = False) -> KeySet:
    entry = _entry(provider)
    if entry.keys is None or refresh:
        entry.keys = _get_json(provider, entry.metadata.jwks_uri)
    try:
        return KeySet.import_key_set(entry.keys)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ProviderError(f"the provider's key set (jwks_uri) is not usable: {exc}") from None


# -- the authorization request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What one sign-in sends to the provider and must find again at the callback."""

    state: str
    nonce: str
    code_verifier: str
    url: str


def authorization_request(provider: Provider, redirect_uri: str) -> Request:
    """A fresh state, nonce and PKCE verifier, and the provider's URL to send the browser to."""
    state, nonce, verifier = generate_token(43), generate_token(43), generate_token(64)
    url = prepare_grant_uri(
        metadata(provider).authorization_endpoint,
        client_id=provider.client_id,
        response_type="code",
        redirect_uri=redirect_uri,
        scope=provider.scopes,
        state=state,
        nonce=nonce,
        code_challenge=create_s256_code_challenge(verifier),
        code_challenge_method="S256",
    )
    return Request(state=state, nonce=nonce, code_verifier=verifier, url=url)


# -- the code exchange and the ID token ----------------------------------------------------------------


def exchange_code(provider: Provider, code: str, code_verifier: str, redirect_uri: str) -> dict[str, Any]:
    """The token endpoint's answer for this code (with the PKCE verifier), as a dict with an id_token."""
    meta = metadata(provider)
    method = (
        "client_secret_post"
        if "client_secret_basic" not in meta.token_auth_methods and "client_secret_post" in meta.token_auth_methods
        else "client_secret_basic"
    )
    body = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
    encoded = str(httpx.QueryParams(body))
    _, headers, encoded = ClientAuth(provider.client_id, provider.client_secret, method).prepare(
        "POST", meta.token_endpoint, headers, encoded
    )
    try:
        with http_client(provider) as client:
            answer = client.post(meta.token_endpoint, content=encoded, headers=headers)
    except httpx.HTTPError as exc:
        raise ProviderError(f"the token endpoint could not be reached: {type(exc).__name__}") from None
    try:
        token = answer.json()
    except ValueError:
        token = None
    if answer.status_code != 200 or not isinstance(token, dict):
        error = token.get("error", "") if isinstance(token, dict) else ""
        raise TokenRefused(f"the token endpoint refused the code: HTTP {answer.status_code} {error}".strip())
    if not isinstance(token.get("id_token"), str):
        raise TokenRefused("the token endpoint answered without an ID token")
    return token


def validate_id_token(
    provider: Provider,
    id_token: str,
    nonce: str,
    *,
    access_token: str | None = None,
    keys: KeySet | None = None,
    algorithms: tuple[str, ...] | None = None,
    now: int | None = None,
) -> dict[str, Any]:
    """The ID token's claims, once its signature (the provider's keys), issuer, audience, expiry, issue
    time and nonce are right; TokenRefused naming the check that failed otherwise. `keys` and
    `algorithms` default to the provider's (from its discovery document)."""
    if algorithms is None:
        algorithms = metadata(provider).signing_algorithms
    registry = JWSRegistry(algorithms=list(algorithms), strict_check_header=False)
    key_set = keys if keys is not None else _key_set(provider)
    try:
        try:
            token = jwt.decode(id_token, key_set, registry=registry)
        except InvalidKeyIdError:
            if keys is not None:
                raise
            token = jwt.decode(id_token, _key_set(provider, refresh=True), registry=registry)  # keys rotated
    except JoseError as exc:
        raise TokenRefused(f"ID token signature not valid ({exc.error})") from None
    except ValueError:
        raise TokenRefused("ID token is not a signed JWT") from None
    claims = CodeIDToken(
        token.claims,
        token.header,
        options={
            "iss": {"essential": True, "value": provider.issuer},
            "aud": {"essential": True, "value": provider.client_id},
            "sub": {"essential": True},
            "exp": {"essential": True},
            "iat": {"essential": True},
            "nonce": {"essential": True},
        },
        params={"nonce": nonce, "client_id": provider.client_id, "access_token": access_token},
    )
    try:
        claims.validate(now=now, leeway=LEEWAY_SECONDS)
    except JoseError as exc:
        raise TokenRefused(f"ID token refused: {exc.description or exc.error}") from None
    if not isinstance(claims.get("sub"), str) or not claims["sub"] or len(claims["sub"]) > 255:
        raise TokenRefused("ID token refused: sub must be a string of 1-255 characters")
    return dict(claims)


def end_session_url(provider: Provider, id_token_hint: str, post_logout_redirect_uri: str) -> str:
    """Where to send the browser to sign out at the provider too ("" when it offers no end_session_endpoint)."""
    try:
        endpoint = metadata(provider).end_session_endpoint
    except ProviderError:
        return ""
    if not endpoint:
        return ""
    params = {"client_id": provider.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
    if id_token_hint:
        params["id_token_hint"] = id_token_hint
    separator = "&" if "?" in endpoint else "?"
    return endpoint + separator + str(httpx.QueryParams(params))
