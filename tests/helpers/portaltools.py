"""Portal test helpers: users with roles at the demo hospitals, and signed-in HTTP clients (a browser-like
client with cookies and its CSRF token, or a bearer token client)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pyotp

from imex.auth import accounts
from imex.db.models import User

PASSWORD = "correct horse battery staple"


def add_user(
    hub: Any,
    username: str,
    ods: str,
    roles: list[str],
    *,
    password: str = PASSWORD,
    email: str = "",
    totp_secret: str | None = None,
) -> int:
    """A ready user (no forced password change); with `totp_secret`, enrolled in the second factor."""
    from imex.auth.secrets_box import SecretBox, load_secret

    with hub.db.sessions() as s:
        user = accounts.add_user(
            s,
            username=username,
            institution=accounts.institution_by_ods(s, ods),
            password=password,
            roles=roles,
            email=email,
        )
        if totp_secret:
            box = SecretBox(load_secret(hub.config["auth.secret_key"], hub.config.data_dir))
            user.totp_secret = box.seal(totp_secret)
            user.totp_enabled = True
        s.commit()
        return user.id


def base_url(hub: Any) -> str:
    return f"http://127.0.0.1:{hub.config['http.port']}"


def login_form_token(client: httpx.Client) -> str:
    page = client.get("/login")
    assert page.status_code == 200, page.text
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def browser(hub: Any, username: str, password: str = PASSWORD, totp_secret: str | None = None) -> httpx.Client:
    """Sign in through the login form like a browser; the client sends the CSRF header on changes."""
    client = httpx.Client(base_url=base_url(hub), follow_redirects=False, timeout=15)
    token = login_form_token(client)
    answer = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    assert answer.status_code == 303, answer.text
    if answer.headers["location"] == "/login/second-factor":
        page = client.get("/login/second-factor")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        done = client.post("/login/second-factor", data={"code": pyotp.TOTP(totp_secret).now(), "csrf_token": csrf})
        assert done.status_code == 303, done.text
    home = client.get("/")
    assert home.status_code == 200, home.text
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', home.text).group(1)
    client.headers["X-CSRF-Token"] = csrf
    return client


def bearer(hub: Any, username: str, password: str = PASSWORD) -> httpx.Client:
    answer = httpx.post(f"{base_url(hub)}/api/v1/auth/token", json={"username": username, "password": password})
    assert answer.status_code == 201, answer.text
    return httpx.Client(
        base_url=base_url(hub), headers={"Authorization": f"Bearer {answer.json()['token']}"}, timeout=15
    )


def user_row(hub: Any, username: str) -> User:
    from sqlalchemy import select

    with hub.db.sessions() as s:
        return s.scalar(select(User).where(User.username == username))


def assert_audit_is_append_only(hub: Any) -> None:
    """The database itself refuses to change or delete audit events (triggers of migration 0002)."""
    import pytest
    from sqlalchemy import text

    with hub.db.engine.connect() as conn:
        before = conn.execute(text("SELECT count(*) FROM audit_events")).scalar()
        assert before > 0
        for statement in ("UPDATE audit_events SET username = 'nobody'", "DELETE FROM audit_events"):
            with pytest.raises(Exception, match="(?i)append-only|audit"):
                conn.execute(text(statement))
            conn.rollback()
        assert conn.execute(text("SELECT count(*) FROM audit_events WHERE username = 'nobody'")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar() == before


def sign_in_page(page: Any, hub: Any, username: str, password: str = PASSWORD) -> None:
    """Sign in through the login form in a browser page; returns on the dashboard."""
    page.goto(base_url(hub) + "/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(base_url(hub) + "/")
