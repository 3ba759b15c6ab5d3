"""Identity providers for the single sign-on tests.

`TestIdP` runs the certified oidc-provider package (tests/helpers/oidc_idp/idp.mjs, installed by
`scripts/setup.sh --test`) under node on a free loopback port; its issuer is http://localhost:PORT, so a
browser sees it as another site than a hub at 127.0.0.1, as a hospital's provider is.

`ScriptedProvider` answers the token endpoint with whatever ID token a test gives it (signed with a key of
its JWKS or not): what a compromised or misconfigured provider, or an attacker in the middle, could send,
which the real provider never would."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from peers import free_port

IDP_DIR = Path(__file__).with_name("oidc_idp")
CLIENT_ID = "imex-test"
CLIENT_SECRET = "test-client-secret-not-for-production"


def need_node_idp() -> None:
    """Skip the test when node or the IdP's packages are missing (scripts/setup.sh --test installs them)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("the test IdP's packages are not installed: run scripts/setup.sh --test")


def provider_table(name: str, issuer: str, **overrides: Any) -> dict[str, Any]:
    """An [[oidc]] table for a test provider: org_code KCH/IMP -> RJZ/RYJ, roles -> imex roles."""
    table: dict[str, Any] = {
        "name": name,
        "title": f"Test IdP {name}",
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "institution_claim": "org_code",
        "institutions": {"KCH": "RJZ", "IMP": "RYJ"},
        "role_claim": "roles",
        "roles": {"radiologist": "viewer", "pacs-team": ["pacs_guardian", "sender"], "it-admin": "institution_admin"},
    }
    table.update(overrides)
    return table


class TestIdP:
    """oidc-provider under node; accounts (login name -> claims) can be changed while it runs."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, workdir: Path, hub_base: str, provider_names: tuple[str, ...] = ("kch",)) -> None:
        self.port = free_port()
        self.issuer = f"http://localhost:{self.port}"
        self.accounts_path = workdir / "idp-accounts.json"
        self.log_path = workdir / "idp.log"
        self.clients = [
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [f"{hub_base}/login/sso/{n}/callback" for n in provider_names],
                "post_logout_redirect_uris": [f"{hub_base}/login"],
            }
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.set_accounts({})

    def set_accounts(self, accounts: dict[str, dict[str, Any]]) -> None:
        tmp = self.accounts_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(accounts))
        os.replace(tmp, self.accounts_path)

    def start(self, timeout: float = 20.0) -> TestIdP:
        env = dict(os.environ)
        env.update(
            IDP_PORT=str(self.port),
            IDP_ISSUER=self.issuer,
            IDP_CLIENTS=json.dumps(self.clients),
            IDP_ACCOUNTS=str(self.accounts_path),
        )
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["node", str(IDP_DIR / "idp.mjs")], cwd=IDP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/.well-known/openid-configuration"
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test IdP did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# -- a provider whose answers the test writes ------------------------------------------------------------


def new_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"}, private=True)


def sign(claims: dict[str, Any], key: RSAKey, alg: str = "RS256") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key)


class ScriptedProvider:
    """Discovery, JWKS and a token endpoint on 127.0.0.1; the token endpoint answers `id_token(form)`,
    after checking the client's secret and the PKCE verifier against the challenge of the authorization
    URL the hub sent the browser to (`expect_challenge`)."""

    def __init__(self) -> None:
        self.key = new_key("scripted-1")
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.id_token: Callable[[dict[str, str]], str] = lambda form: ""
        self.challenges: dict[str, str] = {}  # code -> S256 challenge it was issued for
        self.token_requests: list[dict[str, str]] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's names)
                if self.path == "/.well-known/openid-configuration":
                    self._json(200, provider.discovery())
                elif self.path == "/jwks":
                    self._json(200, {"keys": [provider.key.as_dict(private=False)]})
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                provider.token_requests.append(form)
                expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self._json(401, {"error": "invalid_client"})
                    return
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if provider.challenges.get(form.get("code", "")) != challenge:
                    self._json(400, {"error": "invalid_grant", "error_description": "PKCE verification failed"})
                    return
                self._json(
                    200,
                    {"access_token": "at-" + form["code"], "token_type": "Bearer", "id_token": provider.id_token(form)},
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/auth",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        }

    def start(self) -> ScriptedProvider:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def authorize(self, authorization_url: str, code: str) -> dict[str, str]:
        """What the browser would bring back: records the code's PKCE challenge; returns the request's
        parameters (state, nonce, redirect_uri ...)."""
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorization_url).query))
        assert params["code_challenge_method"] == "S256" and params["response_type"] == "code"
        self.challenges[code] = params["code_challenge"]
        return params

    def claims(self, nonce: str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "scripted-subject-1",
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "preferred_username": "scripted.user",
            "org_code": "KCH",
            "roles": ["radiologist"],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}
