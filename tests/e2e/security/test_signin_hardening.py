"""Sign-in hardening (OWASP ASVS 2.2.1, 2.1.x): a one-time password buys nothing but its own change (no
API token, and tokens stop while a change is forced); wrong passwords throttle password sign-in per
account and per address, but never cut the account's working API tokens and sessions off."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from imex.auth import accounts
from imex.db.models import AuditEvent, User, WebSession
from imex.directory import add_institution
from portaltools import PASSWORD, add_user, base_url, bearer, browser


@pytest.fixture
def hub(make_config, start_hub):  # type: ignore[no-untyped-def]
    hub = start_hub(
        make_config(
            auth__max_failed_logins=5,
            auth__lockout_minutes=10,
            auth__signin_failures_per_ip=50,
            http__trusted_proxies="127.0.0.1",
        )
    )
    add_institution(hub.db, "RJZ", "King's College Hospital")
    return hub


def ask_token(hub: Any, username: str, password: str, address: str = "192.0.2.10") -> httpx.Response:
    """POST /api/v1/auth/token as a caller at `address` (the hub believes X-Forwarded-For from 127.0.0.1)."""
    return httpx.post(
        f"{base_url(hub)}/api/v1/auth/token",
        json={"username": username, "password": password},
        headers={"X-Forwarded-For": address},
    )


def tokens_of(hub: Any, username: str) -> int:
    with hub.db.sessions() as s:
        user_id = s.scalar(select(User.id).where(User.username == username))
        return len(
            s.scalars(select(WebSession.id).where(WebSession.user_id == user_id, WebSession.kind == "token")).all()
        )


def test_a_one_time_password_buys_no_api_token(hub) -> None:  # type: ignore[no-untyped-def]
    add_user(hub, "newcomer", "RJZ", ["sender"])
    with hub.db.sessions() as s:  # what `imex user add` and an admin's reset hand out
        temporary = accounts.reset_user(s, accounts.user_by_name(s, "newcomer"))
        s.commit()
    refused = ask_token(hub, "newcomer", temporary)
    assert refused.status_code == 403 and "new password" in refused.json()["detail"]
    assert tokens_of(hub, "newcomer") == 0
    with hub.db.sessions() as s:
        denied = s.scalar(select(AuditEvent).where(AuditEvent.action == "auth.token", AuditEvent.outcome == "denied"))
        assert denied is not None and denied.username == "newcomer"
    # the password changed in the portal: tokens are given
    with hub.db.sessions() as s:
        accounts.set_password(s, accounts.user_by_name(s, "newcomer"), PASSWORD)
        s.commit()
    assert ask_token(hub, "newcomer", PASSWORD).status_code == 201


def test_tokens_stop_while_a_password_change_is_forced(hub) -> None:  # type: ignore[no-untyped-def]
    add_user(hub, "script", "RJZ", ["viewer"])
    api = bearer(hub, "script")
    assert api.get("/api/v1/me").status_code == 200
    with hub.db.sessions() as s:
        s.execute(update(User).where(User.username == "script").values(must_change_password=True))
        s.commit()
    stopped = api.get("/api/v1/me")
    assert stopped.status_code == 401 and "new password" in stopped.json()["detail"]
    assert api.get("/dicomweb/studies").status_code == 401
    with hub.db.sessions() as s:
        s.execute(update(User).where(User.username == "script").values(must_change_password=False))
        s.commit()
    assert api.get("/api/v1/me").status_code == 200


def test_wrong_passwords_lock_sign_in_but_not_working_tokens_and_sessions(hub) -> None:  # type: ignore[no-untyped-def]
    add_user(hub, "clinician", "RJZ", ["viewer"])
    api = bearer(hub, "clinician")
    portal = browser(hub, "clinician")
    for _ in range(5):  # anyone who knows the user name, from anywhere
        assert ask_token(hub, "clinician", "wrong guess", "203.0.113.66").status_code == 401
    locked = ask_token(hub, "clinician", PASSWORD, "192.0.2.10")  # password sign-in is throttled for all
    assert locked.status_code == 401 and "locked" in locked.json()["detail"]
    with hub.db.sessions() as s:
        assert s.scalar(select(User.locked_until).where(User.username == "clinician")) is not None
    # the credentials the user already holds are separate: they keep working
    assert api.get("/api/v1/me").json()["username"] == "clinician"
    assert portal.get("/").status_code == 200
    assert portal.put("/api/v1/me/preferences", json={"email_events": []}).status_code == 200


def test_guessing_is_throttled_per_address_as_well_as_per_account(make_config, start_hub) -> None:  # type: ignore[no-untyped-def]
    hub = start_hub(
        make_config(auth__max_failed_logins=5, auth__signin_failures_per_ip=4, http__trusted_proxies="127.0.0.1")
    )
    add_institution(hub.db, "RJZ", "King's College Hospital")
    for name in ("alice", "bob"):
        add_user(hub, name, "RJZ", ["viewer"])
    for name in ("alice", "bob", "carol", "dave"):  # one or two guesses per account: none locks
        assert ask_token(hub, name, "guess", "203.0.113.66").status_code == 401
    refused = ask_token(hub, "alice", PASSWORD, "203.0.113.66")  # that address is held back, right or wrong
    assert refused.status_code == 429
    assert ask_token(hub, "alice", PASSWORD, "192.0.2.10").status_code == 201  # others are not
    with hub.db.sessions() as s:
        assert s.scalar(select(User.locked_until).where(User.username == "alice")) is None
