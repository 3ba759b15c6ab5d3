"""After an end-to-end run with known secrets configured (database password, SMTP password, the keys that
seal second-factor secrets and key pseudonyms, the CA and hub private keys, a user's TOTP secret and
password), none of them appears in any log line, audit row, queued e-mail, CLI output or HTTP response,
including error pages and failed sign-ins."""

from __future__ import annotations

import logging
import os
import re
import ssl
from pathlib import Path

import httpx
import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.cli import main
from imex.samples import make_study
from portaltools import PASSWORD, add_user, base_url, login_form_token
from sectools import dcmtk_tls, make_ca, tls_overrides

TOTP = pyotp.random_base32()
DB_PASSWORD = "db-Pw-7c1e0f9a2b"
SECRETS = {
    "smtp password": "smtp-Pw-5d3c8e21f0",
    "auth secret key": "auth-Key-0a9b8c7d6e5f4a3b",
    "pseudonym key": "pseudo-Key-1f2e3d4c5b6a",
    "TOTP secret": TOTP,
    "user password": PASSWORD,
}


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
        except Exception:  # a bad format string is still text to scan
            line = f"{record.msg!r} {record.args!r}"
        if record.exc_info:
            line += logging.Formatter().formatException(record.exc_info)
        self.lines.append(line)


@pytest.fixture
def all_logs():  # type: ignore[no-untyped-def]
    handler = Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def _key_lines(path: Path) -> list[str]:
    """The base64 lines of a PEM private key (any of them leaking is a leak)."""
    return [line for line in path.read_text().splitlines() if line and not line.startswith("-----")]


def test_no_secret_in_logs_audit_mail_or_responses(make_config, start_hub, storescp, all_logs, tmp_path, request):
    secrets = dict(SECRETS)
    db_url = ""
    if os.environ.get("IMEX_TEST_POSTGRES"):  # a fresh database; trust authentication accepts any password
        db_url = (
            make_url(request.getfixturevalue("postgres_url"))
            .set(password=DB_PASSWORD)
            .render_as_string(hide_password=False)
        )
        secrets["database password"] = DB_PASSWORD
    ca = make_ca(tmp_path / "ca")
    ca.issue("KINGS_PACS", ["127.0.0.1"])
    responses: list[str] = []
    dest = storescp("RYJPACS")
    smtp_port = peers.free_port()  # nothing listens: sending fails, and its error is logged
    config = make_config(
        **tls_overrides(ca),
        http__tls=True,
        hl7__tls=True,
        smtp__host="127.0.0.1",
        smtp__port=smtp_port,
        smtp__username="imex",
        smtp__password=secrets["smtp password"],
        auth__secret_key=secrets["auth secret key"],
        harmonisation__secret_key=secrets["pseudonym key"],
        log_level="DEBUG",
        **({"database__url": db_url} if db_url else {}),
    )
    hub = start_hub(config)
    register_hospitals(hub, dest_port=dest.port)
    add_user(hub, "admin", "RJZ", ["system_admin"], email="admin@kings.test", totp_secret=TOTP)
    add_user(hub, "clerk", "RYJ", ["viewer"], email="clerk@imperial.test")
    for name, path in (
        ("CA key", ca.ca_key_path),
        ("hub key", ca.key_path("hub")),
        ("node key", ca.key_path("KINGS_PACS")),
    ):
        for i, line in enumerate(_key_lines(path)):
            secrets[f"{name} line {i}"] = line

    # DICOM over TLS and plain, delivery, and a TLS connection that fails
    files = make_study(tmp_path / "ct", instances_per_series=2, modality="CT")
    assert peers.storescu(
        files, hub.listener.tls_port, "RYJ", "STORESCU", extra_args=dcmtk_tls(ca, "KINGS_PACS")
    ).statuses == [0, 0]
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    peers.storescu(files, hub.listener.tls_port, "RYJ", "STORESCU")  # plain TCP on the TLS port
    # HTTPS: sign-ins that work and fail, error pages, the API
    verify = ssl.create_default_context(cafile=str(ca.ca_cert_path))
    base = base_url(hub).replace("http://127.0.0.1", "https://localhost")
    with httpx.Client(base_url=base, verify=verify, timeout=15, follow_redirects=False) as client:
        for password in ("wrong " + PASSWORD, PASSWORD):
            token = login_form_token(client)
            answer = client.post("/login", data={"username": "admin", "password": password, "csrf_token": token})
            responses.append(str(answer.headers) + answer.text)
        assert answer.status_code == 303 and answer.headers["location"] == "/login/second-factor", answer.text
        page = client.get("/login/second-factor")
        responses.append(page.text)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        for code in ("000000", pyotp.TOTP(TOTP).now()):
            answer = client.post("/login/second-factor", data={"code": code, "csrf_token": csrf})
            responses.append(str(answer.headers) + answer.text)
        for path in (
            "/",
            "/admin",
            "/no-such-page",
            "/api/v1/me",
            "/api/v1/nodes",
            "/api/v1/audit",
            "/api/v1/transfers/999999999",
            "/api/v1/studies?limit=abc",
        ):
            answer = client.get(path)
            responses.append(str(answer.headers) + answer.text)
        answer = client.post("/api/v1/auth/token", json={"username": "admin", "password": "nope"})
        responses.append(answer.text)
        answer = client.post(
            "/api/v1/auth/token", content=b"x" * (2 << 20), headers={"content-type": "application/json"}
        )
        responses.append(answer.text)
        answer = client.post("/api/v1/auth/token", json={"username": "clerk", "password": PASSWORD})
        assert answer.status_code == 201, answer.text
        responses.append(answer.text)
    wait_until(
        lambda: hub.db.engine.connect().execute(text("SELECT count(*) FROM emails WHERE attempts > 0")).scalar(),
        message="an e-mail attempt",
    )
    # the CLI: settings, certificates
    env = {
        "IMEX_TLS_CA_DIR": str(ca.folder),
        "IMEX_DATABASE_URL": hub.config.database_url,
        "IMEX_SMTP_PASSWORD": secrets["smtp password"],
        "IMEX_AUTH_SECRET_KEY": secrets["auth secret key"],
        "IMEX_HARMONISATION_SECRET_KEY": secrets["pseudonym key"],
        "IMEX_DATA_DIR": str(hub.config.data_dir),
    }
    cli = [
        CliRunner().invoke(main, args, env=env).output
        for args in (
            ["config", "show"],
            ["tls", "list"],
            ["tls", "issue", "NEW_NODE", "--host", "127.0.0.1"],
            ["tls", "revoke", "NEW_NODE"],
        )
    ]
    assert "NEW_NODE" in cli[2]

    with hub.db.engine.connect() as conn:
        audit_rows = [" ".join(map(str, row)) for row in conn.execute(text("SELECT * FROM audit_events"))]
        mails = [" ".join(map(str, row)) for row in conn.execute(text("SELECT * FROM emails"))]
    hub.stop()  # before its database goes
    assert any("auth.login" in row for row in audit_rows) and any("tls.issue" in row for row in audit_rows)
    haystacks = {"log": all_logs.lines, "audit": audit_rows, "e-mail": mails, "HTTP": responses, "CLI": cli}
    assert len(all_logs.lines) > 50  # DEBUG logging was on
    for where, lines in haystacks.items():
        for name, secret in secrets.items():
            found = [line for line in lines if secret in line]
            assert not found, f"{name} appears in {where}: {found[0][:500]}"
