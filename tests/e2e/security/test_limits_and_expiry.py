"""Limits that keep the hub serving under abuse (per-address sign-in limit, per-node association limit)
and the certificate lifecycle around them (`imex tls list`, expiry alerts to admins, CRL renewal)."""

from __future__ import annotations

import datetime as dt

import httpx
from click.testing import CliRunner
from sqlalchemy import select

from hubtools import register_hospitals
from imex.auth import signin_limit
from imex.cli import main
from imex.db.models import Email, Node, Notification
from imex.notify import certificates as expiry
from portaltools import PASSWORD, add_user, base_url, login_form_token
from sectools import make_ca, tls_overrides


def test_an_address_that_keeps_failing_is_refused_429(make_config, start_hub):
    hub = start_hub(make_config(auth__signin_failures_per_ip=3))
    register_hospitals(hub, dest_port=11112)
    add_user(hub, "rad", "RJZ", ["viewer"])
    token_url = f"{base_url(hub)}/api/v1/auth/token"
    for name in ("alice", "bob", "carol"):  # guessing across accounts: no single account locks
        assert httpx.post(token_url, json={"username": name, "password": "guess"}).status_code == 401
    refused = httpx.post(token_url, json={"username": "rad", "password": PASSWORD})
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.json()["detail"]
    with httpx.Client(base_url=base_url(hub)) as browser:
        token = login_form_token(browser)
        page = browser.post("/login", data={"username": "rad", "password": PASSWORD, "csrf_token": token})
    assert page.status_code == 429 and "Too many failed sign-ins" in page.text
    # successful sign-ins do not count: another hub (its own limiter) lets rad in as often as needed
    other = start_hub(make_config(auth__signin_failures_per_ip=3))
    register_hospitals(other, dest_port=11112)
    add_user(other, "rad", "RJZ", ["viewer"])
    for _ in range(5):
        assert (
            httpx.post(
                f"{base_url(other)}/api/v1/auth/token", json={"username": "rad", "password": PASSWORD}
            ).status_code
            == 201
        )


def test_limiter_forgets_failures_after_the_window(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(signin_limit.time, "monotonic", lambda: clock[0])
    limiter = signin_limit.SigninLimiter(2, 60.0)
    limiter.failed("10.0.0.1")
    limiter.failed("10.0.0.1")
    assert limiter.refusal("10.0.0.1") and not limiter.refusal("10.0.0.2")
    clock[0] += 61
    assert limiter.refusal("10.0.0.1") == ""


def test_a_node_cannot_open_more_associations_than_its_limit(make_config, start_hub):
    from pynetdicom import AE

    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=11112)
    with hub.db.session() as s:
        s.scalar(select(Node).where(Node.name == "KINGS_PACS")).max_associations = 1
    hub.nodes.invalidate()
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    first = ae.associate("127.0.0.1", hub.listener.port, ae_title="IMEX")
    assert first.is_established
    second = ae.associate("127.0.0.1", hub.listener.port, ae_title="IMEX")
    assert second.is_rejected
    assert first.send_c_echo().Status == 0
    first.release()
    third = ae.associate("127.0.0.1", hub.listener.port, ae_title="IMEX")
    assert third.is_established
    third.release()


def test_expiring_certificates_alert_admins_once_and_show_in_tls_list(make_config, start_hub, tmp_path):
    ca = make_ca(tmp_path / "ca")
    hub = start_hub(make_config(**tls_overrides(ca)))
    register_hospitals(hub, dest_port=11112)
    admin = add_user(hub, "admin", "RJZ", ["system_admin"], email="admin@kings.test")
    add_user(hub, "viewer", "RJZ", ["viewer"], email="viewer@kings.test")
    ca.issue("KINGS_PACS", ["127.0.0.1"], days=5)
    ca.issue("IMPERIAL_PACS", ["127.0.0.1"])
    assert [e.name for e in expiry.expiring(hub.config)] == ["certificate of KINGS_PACS"]
    assert expiry.alert(hub.db, hub.config) == 1
    assert expiry.alert(hub.db, hub.config) == 0  # once a day, not every hour
    with hub.db.session() as s:
        notes = s.scalars(select(Notification).where(Notification.kind == expiry.KIND)).all()
        mails = s.scalars(select(Email)).all()
    assert [(n.user_id, "KINGS_PACS" in n.title) for n in notes] == [(admin, True)]
    assert [m.recipient for m in mails] == ["admin@kings.test"]
    env = {"IMEX_TLS_CA_DIR": str(ca.folder), "IMEX_DATABASE_URL": hub.config.database_url}
    listing = CliRunner().invoke(main, ["tls", "list"], env=env).output
    kings = next(line for line in listing.splitlines() if line.startswith("KINGS_PACS"))
    assert "EXPIRING in 4 days" in kings or "EXPIRING in 5 days" in kings
    assert "valid" in next(line for line in listing.splitlines() if line.startswith("IMPERIAL_PACS"))
    # renewing the certificate ends the alerts
    ca.issue("KINGS_PACS", ["127.0.0.1"])
    assert expiry.expiring(hub.config) == []


def test_crl_is_renewed_before_it_lapses(tmp_path, make_config):
    ca = make_ca(tmp_path / "ca")
    config = make_config(tls__ca_dir=str(ca.folder))
    assert not expiry.renew_crl(config)  # fresh: nothing to do
    ca.write_crl(days=3)
    assert expiry.renew_crl(config)
    assert (ca.crl_next_update() - dt.datetime.now(dt.UTC)).days >= 29


def test_serve_stops_with_a_clear_message_when_tls_files_are_missing(tmp_path):
    env = {
        "IMEX_DATA_DIR": str(tmp_path / "data"),
        "IMEX_DICOM_TLS_PORT": "2762",
        "IMEX_HTTP_PORT": "0",
        "IMEX_HL7_PORT": "0",
        "IMEX_DICOM_PORT": "0",
    }
    result = CliRunner().invoke(main, ["serve"], env=env)
    assert result.exit_code == 1
    assert "does not exist" in result.output and "imex tls init" in result.output, result.output
