"""What institution admins and auditors do through the API (the same calls the pages make): users and
roles, nodes with a real C-ECHO, quarantine, worklists, notifications after a real delivery, and the
audit trail with its CSV and DICOM audit exports."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import Email, Notification, Study
from imex.samples import make_study
from portaltools import add_user, assert_audit_is_append_only, bearer, browser, user_row


@pytest.fixture
def hub(make_config, start_hub, storescp):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    hub.dest = dest
    return hub


def test_institution_admin_manages_own_users_and_roles(hub):
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    admin = browser(hub, "kings_admin")
    made = admin.post(
        "/api/v1/users",
        json={
            "username": "radiographer1",
            "full_name": "Ann Example",
            "email": "ann@kings.test",
            "password": "a first passphrase",
            "roles": ["sender"],
        },
    )
    assert made.status_code == 201 and made.json()["roles"] == ["sender"]
    new_id = made.json()["id"]
    assert user_row(hub, "radiographer1").must_change_password is True
    weak = admin.post("/api/v1/users", json={"username": "weak", "password": "short", "roles": []})
    assert weak.status_code == 422 and "at least" in weak.json()["detail"]
    taken = admin.post("/api/v1/users", json={"username": "radiographer1", "password": "a first passphrase"})
    assert taken.status_code == 409
    elsewhere = admin.post(
        "/api/v1/users", json={"username": "spy", "password": "a first passphrase", "institution": "RYJ"}
    )
    assert elsewhere.status_code == 403 and user_row(hub, "spy") is None
    escalate = admin.post(f"/api/v1/users/{new_id}/roles", json={"role": "system_admin"})
    assert escalate.status_code == 403

    role = admin.post(
        "/api/v1/roles",
        json={"name": "mdt coordinator", "description": "MDT lists", "permissions": ["transfers.view", "studies.view"]},
    )
    assert role.status_code == 201
    bad = admin.post("/api/v1/roles", json={"name": "x", "permissions": ["make.coffee"]})
    assert bad.status_code == 422 and "make.coffee" in bad.json()["detail"]
    granted = admin.post(f"/api/v1/users/{new_id}/roles", json={"role": "mdt coordinator"})
    assert sorted(granted.json()["roles"]) == ["mdt coordinator", "sender"]
    revoked = admin.delete(f"/api/v1/users/{new_id}/roles/sender")
    assert revoked.json()["roles"] == ["mdt coordinator"]

    disabled = admin.post(f"/api/v1/users/{new_id}/disable")
    assert disabled.json()["disabled"] is True
    refused = admin.post(f"/api/v1/users/{user_row(hub, 'kings_admin').id}/disable")
    assert refused.status_code == 409  # not yourself
    names = {u["username"]: u for u in admin.get("/api/v1/users").json()}
    assert set(names) == {"kings_admin", "radiographer1"}


def test_nodes_are_added_tested_with_c_echo_and_removed(hub):
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    admin = browser(hub, "kings_admin")
    echo_target = peers.StoreSCP(hub.config.data_dir / "echo", aet="KINGSWS").start()
    try:
        made = admin.post(
            "/api/v1/nodes",
            json={
                "name": "KINGS_WS",
                "ae_title": "KINGSWS",
                "host": "127.0.0.1",
                "port": echo_target.port,
                "destination": True,
            },
        )
        assert made.status_code == 201 and made.json()["institution"] == "RJZ"
        assert made.json()["allow_find"] and made.json()["allow_move"] and made.json()["allow_get"]
        node_id = made.json()["id"]
        echo = admin.post(f"/api/v1/nodes/{node_id}/echo").json()
        assert echo["ok"] is True
    finally:
        echo_target.stop()
    down = admin.post(f"/api/v1/nodes/{node_id}/echo").json()
    assert down["ok"] is False and down["message"]
    clash = admin.post("/api/v1/nodes", json={"name": "OTHER", "ae_title": "KINGSWS", "host": "h", "port": 104})
    assert clash.status_code in (409, 422)
    assert admin.delete(f"/api/v1/nodes/{node_id}").status_code == 200
    assert "KINGS_WS" not in [n["name"] for n in admin.get("/api/v1/nodes").json()]


def test_quarantine_is_routed_from_the_portal(hub, tmp_path):
    files = make_study(tmp_path / "mr", instances_per_series=2, patient_id="K999", modality="MR")
    assert peers.storescu(files, hub.listener.port, "IMEX", "STORESCU").statuses == [0, 0]
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    admin = browser(hub, "kings_admin")
    wait_until(lambda: admin.get("/api/v1/quarantine").json()["total"] == 1, message="quarantine")
    study_id = admin.get("/api/v1/quarantine").json()["items"][0]["id"]
    unknown = admin.post(f"/api/v1/quarantine/{study_id}/route", json={"to": ["ZZZ"], "reason": "typo"})
    assert unknown.status_code == 422
    routed = admin.post(f"/api/v1/quarantine/{study_id}/route", json={"to": ["RYJ"], "reason": "clinic asked"})
    assert routed.status_code == 200 and len(routed.json()["transfers"]) == 1
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    assert len(list(hub.dest.out_dir.glob("*"))) == 2


def test_quarantined_study_can_be_deleted_with_a_reason(hub, tmp_path):
    files = make_study(tmp_path / "mr", instances_per_series=2, patient_id="K998", modality="MR")
    assert peers.storescu(files, hub.listener.port, "IMEX", "STORESCU").statuses == [0, 0]
    add_user(hub, "kings_admin", "RJZ", ["institution_admin", "auditor"])
    admin = browser(hub, "kings_admin")
    wait_until(lambda: admin.get("/api/v1/quarantine").json()["total"] == 1, message="quarantine")
    study_id = admin.get("/api/v1/quarantine").json()["items"][0]["id"]
    blobs_before = [p for p in hub.store.root.rglob("*") if p.is_file()]
    assert len(blobs_before) == 2
    assert admin.post(f"/api/v1/quarantine/{study_id}/delete", json={}).status_code == 422  # a reason is required
    gone = admin.post(f"/api/v1/quarantine/{study_id}/delete", json={"reason": "test images sent by mistake"})
    assert gone.json() == {"deleted_instances": 2}
    with hub.db.sessions() as s:
        assert s.get(Study, study_id) is None
    assert not any(p.exists() for p in blobs_before)  # the images are gone from the store
    trail = admin.get("/api/v1/audit", params={"action": "quarantine.delete"}).json()
    assert trail["total"] == 1 and trail["items"][0]["patient_id"] == "K998"
    assert "sent by mistake" in trail["items"][0]["detail"]


def test_delivery_notifies_the_destination_users_in_app_and_by_email(hub, tmp_path):
    add_user(hub, "imperial_rad", "RYJ", ["viewer"], email="rad@imperial.test")
    add_user(hub, "imperial_audit", "RYJ", ["auditor"], email="ig@imperial.test")  # may not see transfers
    add_user(hub, "kings_sender", "RJZ", ["sender"], email="sender@kings.test")
    files = make_study(tmp_path / "ct", instances_per_series=2, patient_name="NOTIFY^ME", modality="CT")
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0, 0]
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    with hub.db.sessions() as s:
        notes = {(n.user_id, n.kind) for n in s.scalars(select(Notification))}
        mails = [m.recipient for m in s.scalars(select(Email))]
    assert notes == {(user_row(hub, "imperial_rad").id, "transfer.arrived")}
    assert "rad@imperial.test" in mails and "ig@imperial.test" not in mails and "sender@kings.test" not in mails
    rad = browser(hub, "imperial_rad")
    listed = rad.get("/api/v1/notifications").json()
    assert listed["unread"] == 1 and "arrived from King's College Hospital" in listed["items"][0]["title"]
    assert "NOTIFY" not in listed["items"][0]["title"]  # no patient identifiers in notifications
    assert 'class="badge" id="unread">1<' in rad.get("/").text
    assert rad.post("/api/v1/notifications/read").json() == {"marked": 1}
    assert rad.get("/api/v1/notifications").json()["unread"] == 0
    board = rad.get("/api/v1/dashboard").json()
    assert [t["patient_name"] for t in board["arrived"]] == ["NOTIFY, Me"]
    # preferences: no more e-mail for arrivals
    assert rad.put("/api/v1/me/preferences", json={"email_events": []}).json()["email_events"] == []
    assert rad.put("/api/v1/me/preferences", json={"email_events": ["spam"]}).status_code == 422


def test_audit_trail_filters_and_exports(hub, tmp_path):
    add_user(hub, "ig_lead", "RJZ", ["auditor"])
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    add_user(hub, "barts_like", "RYJ", ["auditor"])
    admin = browser(hub, "kings_admin")
    admin.post("/api/v1/worklists", json={"name": '=HYPERLINK("http://x")', "modalities": "CT"})
    browser(hub, "ig_lead")
    ig = bearer(hub, "ig_lead")
    everything = ig.get("/api/v1/audit").json()
    actions = {e["action"] for e in everything["items"]}
    assert {"auth.login", "worklist.add", "auth.token"} <= actions
    assert all(e["institution_id"] is not None for e in everything["items"])
    mine = ig.get("/api/v1/audit", params={"username": "kings_admin", "action": "auth."}).json()
    assert mine["total"] == 1 and mine["items"][0]["action"] == "auth.login"
    other = bearer(hub, "barts_like").get("/api/v1/audit").json()
    assert "kings_admin" not in {e["username"] for e in other["items"]}  # another institution's trail

    exported = ig.get("/api/v1/audit/export", params={"format": "csv"})
    assert exported.headers["content-disposition"].startswith('attachment; filename="imex-audit-')
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["action"] for r in rows} >= {"auth.login", "worklist.add"}
    cell = next(r["object_id"] for r in rows if r["action"] == "worklist.add")
    assert cell.startswith("'=")  # a spreadsheet will not run it
    assert {r["institution"] for r in rows} == {"RJZ"}  # by ODS code, not a database id
    assert "patient_name" in rows[0]

    atna = ig.get("/api/v1/audit/export", params={"format": "atna"})
    root = ET.fromstring(atna.text)
    messages = root.findall("AuditMessage")
    assert len(messages) >= 3
    login = next(m for m in messages if m.find("EventIdentification/EventTypeCode").get("csd-code") == "auth.login")
    assert login.find("EventIdentification/EventID").get("csd-code") == "110114"
    assert login.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    assert login.find("ActiveParticipant").get("UserID") in ("kings_admin", "ig_lead")
    assert root.find("AuditMessage/AuditSourceIdentification").get("AuditSourceID") == hub.config["dicom.ae_title"]
    # reading the trail is itself in the trail
    assert ig.get("/api/v1/audit", params={"action": "audit."}).json()["total"] >= 3


def test_audit_trail_cannot_be_altered(hub):
    add_user(hub, "someone", "RJZ", ["viewer"])
    browser(hub, "someone")
    assert_audit_is_append_only(hub)


def test_users_choose_the_worklists_they_hear_about(hub, tmp_path):
    add_user(hub, "ct_rad", "RYJ", ["viewer"])
    add_user(hub, "mr_rad", "RYJ", ["viewer"])
    add_user(hub, "ryj_admin", "RYJ", ["institution_admin"])
    admin = browser(hub, "ryj_admin")
    ct = admin.post("/api/v1/worklists", json={"name": "CT", "modalities": "CT"}).json()["id"]
    mr = admin.post("/api/v1/worklists", json={"name": "MR", "modalities": "MR"}).json()["id"]
    ct_rad, mr_rad = browser(hub, "ct_rad"), browser(hub, "mr_rad")
    assert ct_rad.put("/api/v1/me/preferences", json={"email_events": [], "worklists": [ct]}).json() == {
        "email_events": [],
        "notify_worklists": [ct],
    }
    mr_rad.put("/api/v1/me/preferences", json={"email_events": [], "worklists": [mr]})
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    other = browser(hub, "kings_admin").post("/api/v1/worklists", json={"name": "K", "modalities": "CT"}).json()["id"]
    stolen = ct_rad.put("/api/v1/me/preferences", json={"email_events": [], "worklists": [other]})
    assert stolen.status_code == 404  # another institution's worklist
    files = make_study(tmp_path / "ct", instances_per_series=1, modality="CT")
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0]
    wait_until(lambda: transfer_states(hub) == [("delivered", 1, 1)], message="delivery")
    assert ct_rad.get("/api/v1/notifications").json()["unread"] == 1
    assert mr_rad.get("/api/v1/notifications").json()["unread"] == 0
    assert admin.get("/api/v1/notifications").json()["unread"] == 1  # chose none: hears of all
    assert "CT" in ct_rad.get("/account").text
    # "arrived for me" on the dashboard follows the same choice
    assert len(ct_rad.get("/api/v1/dashboard").json()["arrived"]) == 1
    assert mr_rad.get("/api/v1/dashboard").json()["arrived"] == []


def test_failed_transfers_are_retried_in_bulk_and_the_worklist_exported(make_config, start_hub, tmp_path):
    down = peers.StoreSCP(tmp_path / "pacs", aet="RYJPACS")  # not listening yet
    hub = start_hub(make_config(delivery__max_attempts=1))
    register_hospitals(hub, dest_port=down.port)
    for n in range(2):
        files = make_study(
            tmp_path / f"s{n}", instances_per_series=1, patient_name=f"BULK^N{n}", patient_id=f"B{n}", modality="CT"
        )
        assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0]
    wait_until(lambda: [s for s, _, _ in transfer_states(hub)] == ["failed", "failed"], message="both failed")
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    add_user(hub, "imperial_viewer", "RYJ", ["viewer"])
    admin = browser(hub, "kings_admin")
    page = admin.get("/worklist", params={"direction": "outgoing", "state": "failed"}).text
    assert "Retry all failed" in page
    assert browser(hub, "imperial_viewer").post("/api/v1/transfers/retry-failed", json={}).status_code == 403
    down.start()
    try:
        retried = admin.post("/api/v1/transfers/retry-failed", json={"direction": "outgoing"}).json()["retried"]
        assert len(retried) == 2
        wait_until(lambda: transfer_states(hub) == [("delivered", 1, 1)] * 2, message="delivered after retry")
    finally:
        down.stop()
    exported = admin.get("/api/v1/transfers/export", params={"direction": "outgoing"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(r["patient_name"] for r in rows) == ["BULK, N0", "BULK, N1"]
    assert {r["state"] for r in rows} == {"delivered"} and {r["destination"] for r in rows} == {"RYJ"}
    from imex.db.models import AuditEvent

    with hub.db.sessions() as s:
        actions = [e.action for e in s.scalars(select(AuditEvent).where(AuditEvent.username == "kings_admin"))]
    assert actions.count("transfer.retry") == 2 and "transfers.export" in actions
