"""Signing in and staying safe: passwords, lock-out, the second factor, forced password change, session
expiry, CSRF, cross-site requests, security headers and request size limits, against a running hub."""

from __future__ import annotations

import datetime as dt
import re
import time

import httpx
import pyotp
import pytest
from sqlalchemy import select

from imex.db.models import AuditEvent, Institution, WebSession
from portaltools import PASSWORD, add_user, base_url, browser, login_form_token, user_row


@pytest.fixture
def hub(make_config, start_hub):
    hub = start_hub(make_config(auth__max_failed_logins=3, auth__lockout_minutes=10))
    from imex.directory import add_institution

    add_institution(hub.db, "RJZ", "King's College Hospital")
    add_institution(hub.db, "RYJ", "Imperial College Healthcare")
    return hub


def audit_actions(hub, username: str) -> list[tuple[str, str]]:
    with hub.db.sessions() as s:
        return [
            (e.action, e.outcome)
            for e in s.scalars(select(AuditEvent).where(AuditEvent.username == username).order_by(AuditEvent.id))
        ]


def post_login(client: httpx.Client, username: str, password: str) -> httpx.Response:
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": login_form_token(client)}
    )


def test_sign_in_shows_the_dashboard_and_sign_out_ends_the_session(hub):
    add_user(hub, "jsmith", "RJZ", ["sender"])
    client = browser(hub, "jsmith")
    page = client.get("/")
    assert "Dashboard" in page.text and "jsmith · RJZ" in page.text
    cookie = next(c for c in client.cookies.jar if c.name == "imex_session")
    set_cookie = client.get("/login").headers.get("set-cookie", "")  # the login form's own cookie
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    assert cookie.has_nonstandard_attr("HttpOnly")

    out = client.post("/logout", data={"csrf_token": client.headers["X-CSRF-Token"]})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    client.cookies.set("imex_session", cookie.value)  # a stolen copy of the cookie is now useless
    again = client.get("/", headers={"Accept": "text/html"})
    assert again.status_code == 303 and again.headers["location"].startswith("/login")
    assert ("auth.login", "success") in audit_actions(hub, "jsmith")
    assert ("auth.logout", "success") in audit_actions(hub, "jsmith")


def test_wrong_passwords_lock_the_account_and_are_audited(hub):
    add_user(hub, "jsmith", "RJZ", ["sender"])
    client = httpx.Client(base_url=base_url(hub))
    for _ in range(3):
        answer = post_login(client, "jsmith", "wrong password entirely")
        assert answer.status_code == 401
        assert "user name or password is wrong" in answer.text.lower() or "not right" in answer.text.lower()
    locked = post_login(client, "jsmith", PASSWORD)  # even the right password is refused while locked
    assert locked.status_code == 401 and "locked" in locked.text.lower()
    assert user_row(hub, "jsmith").locked_until is not None
    unknown = post_login(client, "nobody", PASSWORD)
    assert unknown.status_code == 401 and "locked" not in unknown.text.lower()  # no user enumeration
    actions = audit_actions(hub, "jsmith")
    assert actions.count(("auth.login_failed", "failure")) == 3
    assert ("auth.login_failed", "denied") in actions  # the attempt while locked


def test_institution_can_require_a_second_factor_enrolled_with_a_qr_code(hub):
    with hub.db.sessions() as s:
        s.execute(
            Institution.__table__.update().where(Institution.ods_code == "RYJ").values(require_second_factor=True)
        )
        s.commit()
    add_user(hub, "rad", "RYJ", ["viewer"])
    client = httpx.Client(base_url=base_url(hub))
    first = post_login(client, "rad", PASSWORD)
    assert first.status_code == 303 and first.headers["location"] == "/login/enrol"
    # nothing else is reachable before the second factor
    assert client.get("/api/v1/transfers").status_code == 401
    enrol = client.get("/login/enrol")
    assert "<svg" in enrol.text
    secret = re.search(r'<code id="totp-key">([A-Z2-7]+)</code>', enrol.text).group(1)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', enrol.text).group(1)
    wrong = client.post("/login/enrol", data={"code": "000000", "csrf_token": csrf})
    assert wrong.status_code == 422 and "not right" in wrong.text
    code = pyotp.TOTP(secret).now()
    done = client.post("/login/enrol", data={"code": code, "csrf_token": csrf})
    assert done.status_code == 303 and client.get("/api/v1/me").json()["second_factor"] is True
    stored = user_row(hub, "rad").totp_secret
    assert stored and secret not in stored  # encrypted at rest

    # next sign-in asks for the code; a wrong one and a replayed one are refused
    other = httpx.Client(base_url=base_url(hub))
    assert post_login(other, "rad", PASSWORD).headers["location"] == "/login/second-factor"
    page = other.get("/login/second-factor")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert other.post("/login/second-factor", data={"code": "123456", "csrf_token": csrf}).status_code == 401
    replay = other.post("/login/second-factor", data={"code": code, "csrf_token": csrf})
    assert replay.status_code == 401
    deadline = time.time() + 35
    while pyotp.TOTP(secret).now() == code and time.time() < deadline:
        time.sleep(0.5)
    ok = other.post("/login/second-factor", data={"code": pyotp.TOTP(secret).now(), "csrf_token": csrf})
    assert ok.status_code == 303 and other.get("/api/v1/me").status_code == 200
    assert audit_actions(hub, "rad").count(("auth.totp_failed", "failure")) == 2


def test_reset_password_must_be_changed_at_next_sign_in(hub):
    add_user(hub, "jsmith", "RJZ", ["sender"])
    admin_id = add_user(hub, "boss", "RJZ", ["institution_admin"])
    assert admin_id
    boss = browser(hub, "boss")
    jsmith_id = user_row(hub, "jsmith").id
    reset = boss.post(f"/api/v1/users/{jsmith_id}/reset")
    temporary = reset.json()["temporary_password"]
    client = httpx.Client(base_url=base_url(hub))
    answer = post_login(client, "jsmith", temporary)
    assert answer.headers["location"] == "/login/password"
    assert client.get("/api/v1/me").status_code == 401  # nothing until the password is changed
    page = client.get("/login/password")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    weak = client.post(
        "/login/password", data={"current_password": temporary, "new_password": "password", "csrf_token": csrf}
    )
    assert weak.status_code == 422 and "at least" in weak.text
    good = client.post(
        "/login/password",
        data={"current_password": temporary, "new_password": "a brand new passphrase", "csrf_token": csrf},
    )
    assert good.status_code == 303 and client.get("/api/v1/me").json()["username"] == "jsmith"


def test_idle_sessions_expire(make_config, start_hub):
    hub = start_hub(make_config(http__session_idle_minutes=1))
    from imex.directory import add_institution

    add_institution(hub.db, "RJZ", "King's College Hospital")
    add_user(hub, "jsmith", "RJZ", ["sender"])
    client = browser(hub, "jsmith")
    with hub.db.sessions() as s:  # an hour passes without a request
        s.execute(WebSession.__table__.update().values(last_seen_at=dt.datetime.utcnow() - dt.timedelta(hours=1)))
        s.commit()
    answer = client.get("/api/v1/me")
    assert answer.status_code == 401 and "session has ended" in answer.json()["detail"]


def test_changes_need_the_csrf_token_and_the_same_origin(hub):
    add_user(hub, "boss", "RJZ", ["institution_admin"])
    client = browser(hub, "boss")
    token = client.headers.pop("X-CSRF-Token")
    body = {"name": "CT", "modalities": "CT"}
    missing = client.post("/api/v1/worklists", json=body)
    assert missing.status_code == 403 and missing.json()["title"] == "CSRF check failed"
    forged = client.post("/api/v1/worklists", json=body, headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 403
    cross = client.post(
        "/api/v1/worklists", json=body, headers={"X-CSRF-Token": token, "Origin": "https://evil.example"}
    )
    assert cross.status_code == 403 and "another site" in cross.json()["detail"]
    ok = client.post("/api/v1/worklists", json=body, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201
    login_without_token = httpx.post(f"{base_url(hub)}/login", data={"username": "boss", "password": PASSWORD})
    assert login_without_token.status_code == 403 and "expired" in login_without_token.text


def test_security_headers_and_size_limit(make_config, start_hub):
    hub = start_hub(make_config(http__max_body_bytes=10_000, http__max_upload_bytes=50_000))
    page = httpx.get(f"{base_url(hub)}/login")
    headers = page.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"
    assert "<script>" not in page.text  # no inline script anywhere (the CSP would block it)

    big = httpx.post(
        f"{base_url(hub)}/api/v1/auth/token",
        content=b"{" + b" " * 20_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert big.status_code == 413 and big.json()["status"] == 413

    def chunks():
        for _ in range(30):
            yield b" " * 1000

    streamed = httpx.post(
        f"{base_url(hub)}/api/v1/auth/token", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    # STOW-RS uploads have their own, larger limit
    stow = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    assert httpx.post(f"{base_url(hub)}/dicomweb/studies", content=b"x" * 20_000, headers=stow).status_code == 401
    assert httpx.post(f"{base_url(hub)}/dicomweb/studies", content=b"x" * 60_000, headers=stow).status_code == 413
    assert httpx.get(f"{base_url(hub)}/healthz").status_code == 200  # still serving


def test_bearer_tokens_for_scripts_can_be_revoked(hub):
    add_user(hub, "script", "RJZ", ["viewer"])
    made = httpx.post(
        f"{base_url(hub)}/api/v1/auth/token",
        json={"username": "script", "password": PASSWORD, "name": "nightly report", "days": 2},
    )
    assert made.status_code == 201
    token = made.json()["token"]
    api = httpx.Client(base_url=base_url(hub), headers={"Authorization": f"Bearer {token}"})
    assert api.get("/api/v1/me").json()["username"] == "script"
    tokens = api.get("/api/v1/auth/tokens").json()
    assert [t["name"] for t in tokens] == ["nightly report"]
    assert api.delete(f"/api/v1/auth/tokens/{tokens[0]['id']}").status_code == 200  # no CSRF for bearer
    gone = api.get("/api/v1/me")
    assert gone.status_code == 401 and gone.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(f"{base_url(hub)}/api/v1/auth/token", json={"username": "script", "password": "nope"})
    assert wrong.status_code == 401 and wrong.headers["content-type"] == "application/problem+json"
