"""Single sign-on in a real browser (Debian's chromium) through a real OpenID Connect provider (the certified
oidc-provider package under node, at http://localhost:PORT, so another site than the hub at 127.0.0.1):
the first sign-in makes the account in the institution and with the roles the claims map to; roles the
provider stops giving are taken away at the next sign-in; signing out ends the provider's session too;
claims that map to nothing are refused (no account made, or an existing one disabled, and enabled again
when they map again); a replayed callback is refused."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from imex.auth import accounts
from imex.db.models import AuditEvent, Institution, User
from oidctools import TestIdP, need_node_idp, provider_table
from portaltools import base_url

ALICE = {
    "name": "Alice Smith",
    "preferred_username": "asmith",
    "email": "alice.smith@kings.example",
    "org_code": "KCH",
    "roles": ["radiologist", "pacs-team"],
}


@pytest.fixture
def sso_hub(make_config, start_hub, tmp_path):
    need_node_idp()
    config = make_config()
    hub_base = f"http://127.0.0.1:{config['http.port']}"
    idp = TestIdP(tmp_path, hub_base).start()
    config.oidc = [provider_table("kch", idp.issuer, title="King's staff account", end_session=True)]
    hub = start_hub(config)
    from imex.directory import add_institution

    add_institution(hub.db, "RJZ", "King's College Hospital")
    add_institution(hub.db, "RYJ", "Imperial College Healthcare")
    yield hub, idp
    idp.stop()


def loopback_only(page) -> None:  # type: ignore[no-untyped-def]
    """Nothing the pages ask for may leave this machine."""

    def route(route):  # type: ignore[no-untyped-def]
        host = route.request.url.split("/")[2].split(":")[0]
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            route.abort()

    page.route("**/*", route)


def sso_sign_in(page, hub, login: str | None) -> None:  # type: ignore[no-untyped-def]
    """From imex's sign-in page through the provider's (its form only when it has no session of its own)."""
    page.goto(base_url(hub) + "/login")
    page.click("text=Sign in with King's staff account")
    page.wait_for_load_state()
    if login is not None:
        page.wait_for_selector("input[name=login]")
        page.fill("input[name=login]", login)
        page.click("button[type=submit]")


def roles_of(hub, username: str) -> list[str]:
    with hub.db.sessions() as s:
        user = s.scalar(select(User).where(User.username == username))
        return accounts.role_names(s, user.id)


def audit(hub, action: str) -> list[AuditEvent]:
    with hub.db.sessions() as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def test_sign_in_through_the_provider_follows_its_claims(sso_hub, browser_page, tmp_path):
    hub, idp = sso_hub
    page = browser_page
    loopback_only(page)
    idp.set_accounts(
        {"asmith": ALICE, "stranger": {**ALICE, "preferred_username": "stranger", "org_code": "ELSEWHERE"}}
    )
    callbacks: list[str] = []
    page.on("request", lambda r: callbacks.append(r.url) if "/login/sso/kch/callback" in r.url else None)

    # first sign-in: the account is made in King's (KCH -> RJZ) with the mapped roles; the dashboard
    page.goto(base_url(hub) + "/login?next=/")
    assert page.locator("#sso-providers a").get_attribute("href") == "/login/sso/kch?next=/"
    page.screenshot(path=str(tmp_path / "sso-login.png"), full_page=True)
    sso_sign_in(page, hub, "asmith")
    page.wait_for_url(base_url(hub) + "/")
    assert page.locator("h1").inner_text() == "Dashboard"
    assert "asmith · RJZ" in page.content()
    with hub.db.sessions() as s:
        alice = s.scalar(select(User).where(User.username == "asmith"))
        assert (alice.identity_provider, alice.subject, alice.full_name) == ("kch", "asmith", "Alice Smith")
        assert alice.email == "alice.smith@kings.example" and alice.password_hash == ""
        assert s.scalar(select(Institution.ods_code).where(Institution.id == alice.institution_id)) == "RJZ"
    assert roles_of(hub, "asmith") == ["pacs_guardian", "sender", "viewer"]
    assert audit(hub, "auth.login")[-1].detail == "via kch, subject asmith"
    page.screenshot(path=str(tmp_path / "sso-dashboard.png"), full_page=True)

    # no imex password to change; an API token comes from this fresh session instead, and works
    page.goto(base_url(hub) + "/account")
    assert page.locator("text=Change password").count() == 0 and "Managed by" in page.content()
    page.click("#session-token-form button[type=submit]")
    shown = page.locator("#session-token-form [data-result]")
    shown.filter(has_text="token:").wait_for()
    token = shown.inner_text().split("token:", 1)[1].strip()
    me = httpx.get(base_url(hub) + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert me.status_code == 200 and me.json()["username"] == "asmith"

    # the callback again, in the same browser: the state is spent
    page.goto(callbacks[-1])
    assert page.locator("h1").inner_text() == "Sign-in refused"
    assert "state already used" in audit(hub, "auth.sso")[-1].detail

    # signing out ends the provider's session too (it asks, then comes back to imex's sign-in page)
    page.goto(base_url(hub) + "/")
    page.click("text=Sign out")
    page.wait_for_selector("text=Yes, sign me out")
    assert page.url.startswith(idp.issuer + "/session/end") and "id_token_hint=" in page.url
    page.click("text=Yes, sign me out")
    page.wait_for_url(base_url(hub) + "/login")
    assert page.locator("input[name=username]").count() == 1

    # the provider stops giving pacs-team: at the next sign-in those roles are gone in imex
    idp.set_accounts({**_accounts(idp), "asmith": {**ALICE, "roles": ["radiologist"]}})
    sso_sign_in(page, hub, "asmith")  # the provider asks again: its session ended with imex's
    page.wait_for_url(base_url(hub) + "/")
    assert roles_of(hub, "asmith") == ["viewer"]
    assert audit(hub, "user.roles")[-1].detail == "revoked pacs_guardian, sender (claims of kch)"

    # no role maps any more: refused, the account disabled; when the claims map again, enabled again
    idp.set_accounts({**_accounts(idp), "asmith": {**ALICE, "roles": ["canteen"]}})
    sso_sign_in(page, hub, None)  # the provider still has its session: no form
    page.wait_for_selector("h1:has-text('Sign-in refused')")
    assert "gives you no access to imex" in page.content()
    with hub.db.sessions() as s:
        assert s.scalar(select(User.disabled).where(User.username == "asmith")) is True
    assert audit(hub, "user.disable")[-1].detail.startswith("access removed by identity provider kch")
    idp.set_accounts({**_accounts(idp), "asmith": ALICE})
    sso_sign_in(page, hub, None)
    page.wait_for_url(base_url(hub) + "/")
    assert roles_of(hub, "asmith") == ["pacs_guardian", "sender", "viewer"]
    assert audit(hub, "user.enable")[-1].detail == "access given again by identity provider kch"

    # an administrator's disable in imex is not undone by the provider
    with hub.db.sessions() as s:
        accounts.disable_user(s, s.scalar(select(User).where(User.username == "asmith")), username="cli:admin")
        s.commit()
    sso_sign_in(page, hub, None)
    page.wait_for_selector("h1:has-text('Sign-in refused')")
    assert "This account is disabled" in page.content()
    assert audit(hub, "auth.sso")[-1].detail == "provider kch, subject asmith: account disabled in imex"

    # someone whose organisation maps to no institution: refused, audited, nothing made
    page.context.clear_cookies()  # a new person at this browser: the provider's session goes too
    sso_sign_in(page, hub, "stranger")
    page.wait_for_selector("h1:has-text('Sign-in refused')")
    assert "gives you no access to imex" in page.content()
    page.screenshot(path=str(tmp_path / "sso-refused.png"), full_page=True)
    refusal = audit(hub, "auth.sso")[-1]
    assert refusal.outcome == "denied" and refusal.object_id == "kch"
    assert refusal.detail == (
        "provider kch, subject stranger: org_code ['ELSEWHERE'] maps to no institution; nothing created"
    )
    with hub.db.sessions() as s:
        assert s.scalar(select(User).where(User.subject == "stranger")) is None
    assert page.console_errors == [] or all("403" in e for e in page.console_errors)  # type: ignore[attr-defined]


def _accounts(idp: TestIdP) -> dict:
    import json

    return json.loads(idp.accounts_path.read_text())
