"""Certificate sign-in (smart cards) on the HTTPS port, against a running hub with
http.client_certificates = "optional": curl with a user's certificate signs in at /login/certificate and
the session works on the API; no certificate, an unregistered one and (after `imex tls revoke`) a revoked
one are refused; an institution that requires a certificate refuses password sign-ins (form and API token)
without the user's own certificate. Debian's chromium presents a certificate from its NSS database."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from imex.cli import main
from imex.db.models import AuditEvent, Institution, User, WebSession
from imex.directory import add_institution
from portaltools import PASSWORD, add_user
from sectools import make_ca

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


class Hub:
    """A hub over HTTPS asking for client certificates, its CA, and two users at two institutions."""

    def __init__(self, hub, ca) -> None:  # type: ignore[no-untyped-def]
        self.hub, self.ca = hub, ca
        self.base = f"https://127.0.0.1:{hub.config['http.port']}"
        self.env = {
            "IMEX_DATABASE_URL": hub.config.database_url,
            "IMEX_DATA_DIR": str(hub.config.data_dir),
            "IMEX_TLS_CA_DIR": str(ca.folder),
            "IMEX_HTTP_TLS": "true",
            "IMEX_HTTP_CLIENT_CERTIFICATES": "optional",
        }

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(main, list(args), env=self.env)
        assert result.exit_code == 0, result.output
        return result.output

    def curl(self, path: str, *args: str, card: str | None = None, jar: Path | None = None) -> tuple[int, int, str]:
        """(curl's exit code, HTTP status or 0, response head and body) of a request over HTTPS."""
        cmd = ["curl", "-sS", "-i", "--max-time", "15", "--cacert", str(self.ca.ca_cert_path)]
        if card:
            cmd += ["--cert", str(self.ca.cert_path(card)), "--key", str(self.ca.key_path(card))]
        if jar:
            cmd += ["-b", str(jar), "-c", str(jar)]
        run = subprocess.run([*cmd, *args, self.base + path], capture_output=True, text=True, timeout=30)
        status = re.match(r"HTTP/\S+ (\d+)", run.stdout)
        return run.returncode, int(status.group(1)) if status else 0, run.stdout + run.stderr

    def client(self, card: str | None = None) -> httpx.Client:
        """An HTTPS client trusting the CA, presenting `card`'s certificate when given."""
        context = ssl.create_default_context(cafile=str(self.ca.ca_cert_path))
        if card:
            context.load_cert_chain(self.ca.cert_path(card), self.ca.key_path(card))
        return httpx.Client(base_url=self.base, verify=context, follow_redirects=False, timeout=15)

    def audit(self, action: str) -> list[tuple[str, str, str]]:
        with self.hub.db.sessions() as s:
            rows = s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id))
            return [(e.outcome, e.username, e.detail) for e in rows]


@pytest.fixture
def card_hub(make_config, start_hub, tmp_path) -> Hub:
    ca = make_ca(tmp_path / "ca")
    hub = start_hub(
        make_config(http__tls=True, http__client_certificates="optional", tls__ca_dir=str(ca.folder), hl7__port=0)
    )
    add_institution(hub.db, "RJZ", "King's College Hospital")
    add_institution(hub.db, "RYJ", "Imperial College Healthcare")
    add_user(hub, "jsmith", "RJZ", ["sender"])
    add_user(hub, "mjones", "RYJ", ["system_admin"])
    ca.issue("jsmith-card", [], emails=["j.smith@kings.example"])
    return Hub(hub, ca)


def _sign_in_with_card(h: Hub, card: str | None, jar: Path) -> tuple[int, int, str]:
    return h.curl("/login/certificate", card=card, jar=jar)


def test_curl_signs_in_with_a_registered_certificate_and_others_are_refused(card_hub, tmp_path):
    h = card_hub
    # registered with the command line, from the certificate file
    out = h.cli("user", "certificate", "jsmith", "--from-file", str(h.ca.cert_path("jsmith-card")))
    assert "cn=jsmith-card" in out

    jar = tmp_path / "jsmith.jar"
    rc, status, text = _sign_in_with_card(h, "jsmith-card", jar)
    assert rc == 0 and status == 303, text
    assert re.search(r"(?im)^location: /\s*$", text) and "imex_session=" in text
    assert re.search(r"(?i)set-cookie: imex_session=[^\n]*secure", text)
    rc, status, text = h.curl("/api/v1/me", jar=jar)  # the session works on the API (no certificate needed)
    assert status == 200 and '"username":"jsmith"' in text.replace(" ", ""), text
    with h.hub.db.sessions() as s:
        row = s.scalar(select(WebSession).join(User, User.id == WebSession.user_id).where(User.username == "jsmith"))
        assert row.second_factor_done and row.kind == "browser"  # the card is the second factor
    assert ("success", "jsmith", "certificate CN=jsmith-card") in h.audit("auth.login")

    # no certificate: the clear page, audited as denied
    rc, status, text = _sign_in_with_card(h, None, tmp_path / "none.jar")
    assert status == 401 and "No certificate was presented" in text and "imex_session=" not in text
    # a certificate of the CA that is registered to nobody
    h.ca.issue("stranger", [])
    rc, status, text = _sign_in_with_card(h, "stranger", tmp_path / "stranger.jar")
    assert status == 403 and "This certificate is not registered to any user" in text, text
    assert "imex_session=" not in text
    denied = h.audit("auth.login_failed")
    assert ("denied", "", "no certificate: none presented") in denied
    assert ("denied", "", "certificate CN=stranger: not registered to any user") in denied
    # another CA's certificate: the handshake itself fails
    other = make_ca(tmp_path / "other-ca")
    other.issue("jsmith-card", [])
    foreign = subprocess.run(
        ["curl", "-sS", "--max-time", "15", "--cacert", str(h.ca.ca_cert_path)]
        + ["--cert", str(other.cert_path("jsmith-card")), "--key", str(other.key_path("jsmith-card"))]
        + [h.base + "/login/certificate"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert foreign.returncode != 0 and "HTTP/" not in foreign.stdout

    # an e-mail address of the certificate, registered through the admin API (case does not matter)
    with h.hub.db.sessions() as s:
        jsmith_id = s.scalar(select(User.id).where(User.username == "jsmith"))
    with h.client() as admin:
        token = admin.post("/api/v1/auth/token", json={"username": "mjones", "password": PASSWORD})
        assert token.status_code == 201, token.text
        admin.headers["Authorization"] = f"Bearer {token.json()['token']}"
        address = {"certificate_subject": "J.Smith@Kings.Example"}
        put = admin.put(f"/api/v1/users/{jsmith_id}/certificate", json=address)
        assert put.status_code == 200 and put.json()["certificate_subject"] == "j.smith@kings.example", put.text
        assert admin.put("/api/v1/users/999999/certificate", json={"certificate_subject": "CN=x"}).status_code == 404
        bad = admin.put(f"/api/v1/users/{jsmith_id}/certificate", json={"certificate_subject": "not a subject"})
        assert bad.status_code == 422
    h.ca.issue("jsmith-laptop", [], emails=["j.smith@KINGS.example"])  # another certificate, the same address
    rc, status, text = _sign_in_with_card(h, "jsmith-laptop", tmp_path / "laptop.jar")
    assert status == 303, text
    assert ("success", "jsmith", "certificate CN=jsmith-laptop") in h.audit("auth.login")

    # revoked with the command line while the hub runs: the next handshake fails (CRL reloaded)
    h.cli("tls", "revoke", "jsmith-laptop")
    logins = len(h.audit("auth.login"))
    rc, status, text = _sign_in_with_card(h, "jsmith-laptop", tmp_path / "revoked.jar")
    assert rc != 0 and status == 0, text  # curl: no HTTP answer at all, the TLS connection was refused
    assert len(h.audit("auth.login")) == logins
    rc, status, text = h.curl("/login", card="jsmith-laptop")
    assert rc != 0 and status == 0  # not just the sign-in: that certificate opens no connection at all
    assert h.curl("/login")[1] == 200  # while connections without a certificate are served as before


def test_an_institution_can_require_the_users_certificate_for_password_sign_in(card_hub):
    h = card_hub
    h.ca.issue("mjones-card", [])
    h.cli("user", "certificate", "jsmith", "CN=jsmith-card")
    h.cli("user", "certificate", "mjones", "--certificate-subject", "CN=mjones-card")
    out = h.cli("institution", "require-certificate", "RJZ", "on")
    assert "certificate required" in out
    with h.hub.db.sessions() as s:
        assert s.scalar(select(Institution.require_certificate).where(Institution.ods_code == "RJZ"))

    def password_sign_in(card: str | None) -> httpx.Response:
        with h.client(card) as client:
            page = client.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            answer = client.post("/login", data={"username": "jsmith", "password": PASSWORD, "csrf_token": token})
            if answer.status_code == 303:
                assert client.get("/api/v1/me").status_code == 200
            return answer

    refused = password_sign_in(None)
    assert refused.status_code == 403 and "requires a certificate" in refused.text
    assert "imex_session" not in refused.headers.get("set-cookie", "")
    wrong = password_sign_in("mjones-card")  # a registered certificate, but someone else's
    assert wrong.status_code == 403 and "requires a certificate" in wrong.text
    accepted = password_sign_in("jsmith-card")
    assert accepted.status_code == 303 and accepted.headers["location"] == "/"
    details = [d for outcome, user, d in h.audit("auth.login_failed") if user == "jsmith" and outcome == "denied"]
    assert details == [
        "certificate required: none presented",
        "certificate required: certificate CN=mjones-card is not this user's",
    ]

    # the API token endpoint follows the same rule; mjones's institution does not require one
    body = {"username": "jsmith", "password": PASSWORD}
    with h.client() as client:
        no_card = client.post("/api/v1/auth/token", json=body)
        assert no_card.status_code == 403 and "requires a certificate" in no_card.text
        assert client.post("/api/v1/auth/token", json={"username": "mjones", "password": PASSWORD}).status_code == 201
    with h.client("jsmith-card") as client:
        assert client.post("/api/v1/auth/token", json=body).status_code == 201

    # through the institutions API as well; refused on a hub that does not ask for certificates
    with h.client("mjones-card") as admin:
        token = admin.post("/api/v1/auth/token", json={"username": "mjones", "password": PASSWORD}).json()["token"]
        admin.headers["Authorization"] = f"Bearer {token}"
        rjz = next(i for i in admin.get("/api/v1/institutions").json() if i["ods"] == "RJZ")
        assert rjz["require_certificate"] is True
        off = admin.patch(f"/api/v1/institutions/{rjz['id']}", json={"require_certificate": False})
        assert off.status_code == 200 and off.json()["require_certificate"] is False
    assert password_sign_in(None).status_code == 303
    result = CliRunner().invoke(
        main, ["institution", "require-certificate", "RJZ", "on"], env={**h.env, "IMEX_HTTP_CLIENT_CERTIFICATES": "off"}
    )
    assert result.exit_code == 4 and "http.client_certificates is off" in result.output


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("pk12util") is None or shutil.which("certutil") is None,
    reason="needs Debian's chromium and NSS tools (libnss3-tools)",
)
def test_chromium_signs_in_with_the_certificate_in_its_nss_database(card_hub, tmp_path):
    """Chromium on Linux takes client certificates from the NSS database in $HOME/.pki/nssdb, and picks one
    without asking for the sites of the AutoSelectCertificateForUrls setting (here in the profile's
    preferences, where the policy would put it)."""
    from playwright.sync_api import sync_playwright

    h = card_hub
    h.cli("user", "certificate", "jsmith", "CN=jsmith-card")
    home = tmp_path / "home"
    nss = home / ".pki" / "nssdb"
    nss.mkdir(parents=True)
    p12 = tmp_path / "jsmith.p12"
    tools = [
        ["certutil", "-N", "-d", f"sql:{nss}", "--empty-password"],
        ["openssl", "pkcs12", "-export", "-passout", "pass:", "-out", str(p12)]
        + ["-inkey", str(h.ca.key_path("jsmith-card")), "-in", str(h.ca.cert_path("jsmith-card"))],
        ["pk12util", "-i", str(p12), "-d", f"sql:{nss}", "-W", ""],
        ["certutil", "-A", "-d", f"sql:{nss}", "-n", "imex CA", "-t", "C,,", "-i", str(h.ca.ca_cert_path)],
    ]
    for command in tools:
        subprocess.run(command, check=True, capture_output=True, timeout=30)
    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    choose = {"filters": [{"ISSUER": {"CN": "imex deployment CA"}}]}
    prefs = {
        "profile": {
            "content_settings": {"exceptions": {"auto_select_certificate": {f"{h.base},*": {"setting": choose}}}}
        }
    }
    (profile / "Default" / "Preferences").write_text(json.dumps(prefs))

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
            env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        )
        try:
            page = context.new_page()
            page.goto(h.base + "/login")  # the hub's certificate is trusted through the CA in NSS
            link = page.locator("#certificate-signin a")
            assert link.inner_text() == "Sign in with your smart card or certificate"
            form = page.locator("form[action='/login']")
            assert link.bounding_box()["y"] < form.bounding_box()["y"]  # above the password form
            link.click()
            page.wait_for_url(h.base + "/")
            assert "jsmith · RJZ" in page.inner_text("header")

            h.cli("user", "certificate", "jsmith", "--clear")  # no longer registered: the refusal page
            page.goto(h.base + "/login/certificate")
            assert "This certificate is not registered to any user" in page.inner_text("#certificate-error")
            assert "CN=jsmith-card" in page.inner_text("main")
        finally:
            context.close()
    assert ("success", "jsmith", "certificate CN=jsmith-card") in h.audit("auth.login")
