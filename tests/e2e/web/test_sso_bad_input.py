"""Single sign-on callbacks that must be refused, against a running hub over HTTP: ID tokens with a forged
signature, another audience, an unknown issuer, an expiry in the past or another nonce (from a provider
whose token endpoint answers what the test writes), a replayed state, another provider's state and a
callback from a browser that did not start the sign-in. Each is refused with a page that says so and an
audit event; no account is made. Local passwords turned off for an institution (API and command line)."""

from __future__ import annotations

import time

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, update

from hubtools import write_toml
from imex.cli import main
from imex.db.models import AuditEvent, Institution, User
from oidctools import CLIENT_ID, ScriptedProvider, new_key, provider_table, sign
from peers import free_port
from portaltools import PASSWORD, add_user, base_url, bearer, login_form_token


@pytest.fixture
def scripted():
    provider = ScriptedProvider().start()
    yield provider
    provider.stop()


@pytest.fixture
def hub(make_config, start_hub, scripted):
    config = make_config()
    config.oidc = [
        provider_table("scripted", scripted.issuer),
        provider_table("other", scripted.issuer, title="Another provider"),
        provider_table("down", f"http://127.0.0.1:{free_port()}", title="A provider that is down"),
    ]
    hub = start_hub(config)
    from imex.directory import add_institution

    add_institution(hub.db, "RJZ", "King's College Hospital")
    add_institution(hub.db, "RYJ", "Imperial College Healthcare")
    return hub


def sso_audit(hub) -> list[str]:
    with hub.db.sessions() as s:
        return list(s.scalars(select(AuditEvent.detail).where(AuditEvent.action == "auth.sso").order_by(AuditEvent.id)))


def user_count(hub) -> int:
    with hub.db.sessions() as s:
        return s.scalar(select(func.count()).select_from(User))


def start(client: httpx.Client, scripted: ScriptedProvider, code: str, name: str = "scripted") -> dict[str, str]:
    answer = client.get(f"/login/sso/{name}", params={"next": "/worklist"})
    assert answer.status_code == 303, answer.text
    assert "imex_sso_state" in answer.headers["set-cookie"] and "samesite=lax" in answer.headers["set-cookie"].lower()
    return scripted.authorize(answer.headers["location"], code)


def test_forged_and_wrong_id_tokens_are_refused_and_nothing_is_made(hub, scripted):
    client = httpx.Client(base_url=base_url(hub), follow_redirects=False, timeout=15)
    login_page = client.get("/login")
    assert 'href="/login/sso/scripted?next=/"' in login_page.text and "Sign in with Another provider" in login_page.text

    # first the control: a right token signs in (so each refusal below is for its one fault)
    params = start(client, scripted, "good")
    assert params["redirect_uri"] == f"{base_url(hub)}/login/sso/scripted/callback"
    assert params["client_id"] == CLIENT_ID and params["scope"] == "openid profile email"
    scripted.id_token = lambda form: sign(scripted.claims(params["nonce"]), scripted.key)
    good = client.get("/login/sso/scripted/callback", params={"code": "good", "state": params["state"]})
    assert good.status_code == 200, good.text
    assert 'http-equiv="refresh" content="0; url=/worklist"' in good.text
    assert (
        scripted.token_requests[-1]["code_verifier"]
        and scripted.token_requests[-1]["redirect_uri"] == params["redirect_uri"]
    )
    with hub.db.sessions() as s:
        made = s.scalar(select(User).where(User.subject == "scripted-subject-1"))
        assert made.username == "scripted.user" and made.identity_provider == "scripted"
    users = user_count(hub)
    # the control's callback again: the state is spent
    replay = client.get("/login/sso/scripted/callback", params={"code": "good", "state": params["state"]})
    assert replay.status_code == 403 and "Sign-in refused" in replay.text
    assert "state already used" in sso_audit(hub)[-1]

    now = int(time.time())
    stranger = new_key("scripted-1")  # the provider's key id, not its key
    unknown = new_key("not-in-the-jwks")
    cases = [
        ("forged", lambda n: sign(scripted.claims(n, sub="s-forged"), stranger), "signature not valid"),
        ("unknown-key", lambda n: sign(scripted.claims(n, sub="s-unknown"), unknown), "signature not valid"),
        ("audience", lambda n: sign(scripted.claims(n, sub="s-aud", aud="someone-else"), scripted.key), "'aud'"),
        ("issuer", lambda n: sign(scripted.claims(n, sub="s-iss", iss="https://evil.example"), scripted.key), "'iss'"),
        (
            "expired",
            lambda n: sign(scripted.claims(n, sub="s-exp", iat=now - 900, exp=now - 600), scripted.key),
            "expired",
        ),
        ("nonce", lambda n: sign(scripted.claims("another-nonce", sub="s-nonce"), scripted.key), "'nonce'"),
    ]
    for code, make_token, reason in cases:
        params = start(client, scripted, code)
        nonce = params["nonce"]
        scripted.id_token = lambda form, make_token=make_token, nonce=nonce: make_token(nonce)
        answer = client.get("/login/sso/scripted/callback", params={"code": code, "state": params["state"]})
        assert answer.status_code == 403, (code, answer.text)
        assert "Sign-in refused" in answer.text and "did not pass imex" in answer.text, code
        detail = sso_audit(hub)[-1]
        assert detail.startswith("provider scripted: ") and reason in detail, (code, detail)
    assert user_count(hub) == users

    # another provider's state, brought to this provider's callback
    theirs = start(client, scripted, "theirs", name="other")
    crossed = client.get("/login/sso/scripted/callback", params={"code": "theirs", "state": theirs["state"]})
    assert crossed.status_code == 403 and "no longer valid" in crossed.text
    assert "state of another provider (other)" in sso_audit(hub)[-1]

    # a callback in a browser that did not start the sign-in (login CSRF): refused, and the state is spent
    params = start(client, scripted, "elsewhere")
    scripted.id_token = lambda form: sign(scripted.claims(params["nonce"], sub="s-else"), scripted.key)
    victim = httpx.Client(base_url=base_url(hub), follow_redirects=False, timeout=15)
    planted = victim.get("/login/sso/scripted/callback", params={"code": "elsewhere", "state": params["state"]})
    assert planted.status_code == 403 and "another browser" in planted.text
    assert "state not bound to this browser" in sso_audit(hub)[-1]
    again = client.get("/login/sso/scripted/callback", params={"code": "elsewhere", "state": params["state"]})
    assert again.status_code == 403 and "state already used" in sso_audit(hub)[-1]

    # made-up states and an unknown provider
    made_up = client.get("/login/sso/scripted/callback", params={"code": "x", "state": "made-up"})
    assert made_up.status_code == 403 and "unknown state" in sso_audit(hub)[-1]
    assert client.get("/login/sso/nobody/callback", params={"code": "x", "state": "y"}).status_code == 404
    assert user_count(hub) == users

    # a provider that cannot be reached: said so at once, nothing stored
    down = client.get("/login/sso/down")
    assert down.status_code == 503 and "could not be reached" in down.text
    assert sso_audit(hub)[-1].startswith("provider down: discovery failed: ")

    # an institution that requires a second factor: the provider's sign-in leads on to enrolment
    with hub.db.sessions() as s:
        s.execute(update(Institution).where(Institution.ods_code == "RYJ").values(require_second_factor=True))
        s.commit()
    params = start(client, scripted, "second")
    scripted.id_token = lambda form: sign(scripted.claims(params["nonce"], sub="s-2fa", org_code="IMP"), scripted.key)
    second = client.get("/login/sso/scripted/callback", params={"code": "second", "state": params["state"]})
    assert second.status_code == 200 and 'content="0; url=/login/enrol"' in second.text
    assert client.get("/", headers={"Accept": "text/html"}).headers["location"].startswith("/login")  # not yet in
    assert client.get("/login/enrol").status_code == 200
    with hub.db.sessions() as s:
        assert s.scalar(select(AuditEvent.detail).where(AuditEvent.action == "auth.sso_ok")).endswith(
            "subject s-2fa; second factor next"
        )

    with hub.db.sessions() as s:
        denied = s.scalars(select(AuditEvent).where(AuditEvent.action == "auth.sso")).all()
        assert denied and all(e.outcome == "denied" and e.object_id in ("scripted", "other", "down") for e in denied)


def test_local_passwords_off_refuses_password_sign_in(hub, tmp_path):
    add_user(hub, "jsmith", "RJZ", ["sender"])
    add_user(hub, "operator", "RYJ", ["system_admin"])
    admin = bearer(hub, "operator")
    institutions = {i["ods"]: i for i in admin.get("/api/v1/institutions").json()}
    assert institutions["RJZ"]["local_passwords"] is True
    changed = admin.patch(f"/api/v1/institutions/{institutions['RJZ']['id']}", json={"local_passwords": False})
    assert changed.status_code == 200 and changed.json()["local_passwords"] is False

    client = httpx.Client(base_url=base_url(hub), follow_redirects=False, timeout=15)
    refused = client.post(
        "/login", data={"username": "jsmith", "password": PASSWORD, "csrf_token": login_form_token(client)}
    )
    assert refused.status_code == 401
    assert "does not use imex passwords" in refused.text and "Sign in with Test IdP scripted" in refused.text
    token = httpx.post(f"{base_url(hub)}/api/v1/auth/token", json={"username": "jsmith", "password": PASSWORD})
    assert token.status_code == 401 and "does not use imex passwords" in token.text
    # a wrong password is answered as for anyone: it does not tell whose institution uses single sign-on
    wrong = client.post(
        "/login", data={"username": "jsmith", "password": "nope", "csrf_token": login_form_token(client)}
    )
    assert wrong.status_code == 401 and "user name or password is wrong" in wrong.text
    with hub.db.sessions() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.username == "jsmith", AuditEvent.detail == "local passwords off for the institution")
            )
            == 2
        )

    # the command line turns them on again
    toml = write_toml(tmp_path / "imex.toml", hub.config)
    cli = CliRunner()
    done = cli.invoke(
        main, ["--config", str(toml), "institution", "local-passwords", "RJZ", "on"], env={"IMEX_CONFIG": None}
    )
    assert done.exit_code == 0, done.output
    assert "RJZ: imex passwords allowed" in done.output
    signed_in = client.post(
        "/login", data={"username": "jsmith", "password": PASSWORD, "csrf_token": login_form_token(client)}
    )
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    unknown = cli.invoke(
        main, ["--config", str(toml), "institution", "local-passwords", "XYZ", "off"], env={"IMEX_CONFIG": None}
    )
    assert unknown.exit_code == 3 and "no institution has the ODS code XYZ" in unknown.output
    assert "local passwords on" in _details(hub, "institution.change")


def _details(hub, action: str) -> list[str]:
    with hub.db.sessions() as s:
        return list(s.scalars(select(AuditEvent.detail).where(AuditEvent.action == action)))


def test_two_callbacks_racing_with_one_state_sign_in_once_on_postgresql(postgres_url, make_config, start_hub, scripted):
    from concurrent.futures import ThreadPoolExecutor

    from imex.directory import add_institution

    config = make_config(database__url=postgres_url)
    config.oidc = [provider_table("scripted", scripted.issuer)]
    hub = start_hub(config)
    add_institution(hub.db, "RJZ", "King's College Hospital")
    client = httpx.Client(base_url=base_url(hub), follow_redirects=False, timeout=15)
    params = start(client, scripted, "race")
    scripted.id_token = lambda form: sign(scripted.claims(params["nonce"], sub="s-race"), scripted.key)
    cookies = dict(client.cookies)

    def callback(_: int) -> int:
        with httpx.Client(base_url=base_url(hub), cookies=cookies, timeout=15) as racer:
            return racer.get(
                "/login/sso/scripted/callback", params={"code": "race", "state": params["state"]}
            ).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(callback, range(4)))
    assert statuses == [200, 403, 403, 403]
    assert sum("state already used" in d for d in sso_audit(hub)) == 3
    with hub.db.sessions() as s:
        assert s.scalar(select(func.count()).select_from(User).where(User.subject == "s-race")) == 1
