"""Named recipients (set by the sender in the portal, required by some institutions, told directly, first
on their dashboard) and escalation of emergency transfers that are not delivered in time."""

from __future__ import annotations

from sqlalchemy import select

import peers
from hubtools import register_hospitals, wait_until
from imex.db.models import AuditEvent, Email, Institution, Notification, Transfer, TransferEvent
from imex.directory import add_institution
from imex.samples import make_study
from portaltools import add_user, browser


def _transfer(hub) -> Transfer:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        t = s.scalar(select(Transfer))
        s.expunge_all()
        return t


def _events(hub, transfer_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return list(
            s.scalars(
                select(TransferEvent.event).where(TransferEvent.transfer_id == transfer_id).order_by(TransferEvent.id)
            )
        )


def test_required_recipient_named_by_the_sender_releases_and_notifies(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    add_institution(hub.db, "RRV", "University College London Hospitals")
    add_user(hub, "imperialadmin", "RYJ", ["institution_admin"])
    with hub.db.session() as s:
        ryj = s.scalar(select(Institution.id).where(Institution.ods_code == "RYJ"))
    policy = browser(hub, "imperialadmin").patch(f"/api/v1/institutions/{ryj}", json={"require_recipient": True})
    assert policy.status_code == 200 and policy.json()["require_recipient"] is True, policy.text
    add_user(hub, "kingsender", "RJZ", ["sender"])
    rad_id = add_user(hub, "neurorad", "RYJ", ["viewer"], email="neurorad@imperial.test")
    add_user(hub, "imperialsender", "RYJ", ["sender"])
    add_user(hub, "uclh", "RRV", ["institution_admin"])
    colleague_id = add_user(hub, "kingsviewer", "RJZ", ["viewer"])
    files = make_study(tmp_path / "s", instances_per_series=3, patient_name="NAMED^NORA")

    assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 3
    wait_until(lambda: _transfer(hub) and _transfer(hub).state == "held", message="held for a recipient")
    t = _transfer(hub)
    assert "requires a named recipient" in t.last_error and dest.files() == []

    sender = browser(hub, "kingsender")
    choices = sender.get(f"/api/v1/transfers/{t.id}/recipients").json()
    assert {c["username"] for c in choices} == {"neurorad", "imperialsender", "imperialadmin"}
    url = f"/api/v1/transfers/{t.id}/priority"
    assert browser(hub, "imperialsender").post(url, json={"recipient": "me"}).status_code == 403  # not the sender
    assert browser(hub, "uclh").post(url, json={"recipient": "x"}).status_code == 404  # not visible at all
    assert sender.post(url, json={"recipient_user_id": colleague_id}).status_code == 422  # not at the destination
    assert sender.post(url, json={"priority": "whenever"}).status_code == 422

    done = sender.post(
        url, json={"priority": "urgent", "recipient": "Neuroradiology on call", "recipient_user_id": rad_id}
    )
    assert done.status_code == 200, done.text
    assert done.json()["priority_name"] == "urgent" and done.json()["recipient"] == "Neuroradiology on call"
    assert len(dest.wait_for(3)) == 3
    wait_until(lambda: _transfer(hub).state == "delivered", message="delivered once a recipient is named")
    assert {"held", "changed", "released", "delivered"} <= set(_events(hub, t.id))

    with hub.db.session() as s:
        notes = s.scalars(select(Notification).where(Notification.user_id == rad_id)).all()
        mails = s.scalars(select(Email).where(Email.recipient == "neurorad@imperial.test")).all()
        audits = s.scalars(select(AuditEvent).where(AuditEvent.action == "transfer.priority")).all()
    assert any(n.kind == "transfer.for_you" and "Urgent" in n.title for n in notes)
    assert mails and "NAMED" not in mails[0].body  # no patient identifiers in e-mail
    assert len(audits) == 1 and "recipient user" in audits[0].detail

    radiologist = browser(hub, "neurorad")
    board = radiologist.get("/api/v1/dashboard").json()
    assert [r["id"] for r in board["for_you"]] == [t.id]
    page = radiologist.get("/").text
    assert page.index("For you") < page.index("Arrived for") and "urgent" in page
    final = sender.post(url, json={"priority": "emergency"})
    assert final.status_code == 409  # delivered: final


def test_overdue_emergency_escalates_once_and_shows_red(make_config, start_hub, storescp, tmp_path):
    port = peers.free_port()  # the destination is down
    rules = [{"name": "trauma", "match": {"StudyDescription": "*TRAUMA*"}, "to": ["RYJ"], "priority": "emergency"}]
    hub = start_hub(make_config(rules=rules, priority__escalate_after_seconds=1.0, delivery__max_attempts=100))
    register_hospitals(hub, dest_port=port)
    source_viewer = add_user(hub, "kingsviewer", "RJZ", ["viewer"])
    dest_viewer = add_user(hub, "imperialviewer", "RYJ", ["viewer"])
    admin = add_user(hub, "hubadmin", "RJZ", ["system_admin"], email="ops@hub.test")
    files = make_study(tmp_path / "t", instances_per_series=2, description="TRAUMA CT")

    assert peers.storescu(files, hub.listener.port, "IMEX").statuses == [0, 0]
    wait_until(
        lambda: _transfer(hub) and "escalated" in _events(hub, _transfer(hub).id), timeout=30, message="escalation"
    )
    t = _transfer(hub)
    wait_until(lambda: _events(hub, t.id).count("retry-scheduled") >= 3, message="more failed attempts")
    assert _events(hub, t.id).count("escalated") == 1  # once only
    with hub.db.session() as s:
        told = {n.user_id for n in s.scalars(select(Notification).where(Notification.kind == "transfer.escalated"))}
        mailed = {m.recipient for m in s.scalars(select(Email).where(Email.subject.like("%EMERGENCY%")))}
    assert {source_viewer, dest_viewer, admin} <= told
    assert {"pacs@kings.test", "pacs@imperial.test", "ops@hub.test"} <= mailed

    worklist = browser(hub, "imperialviewer").get("/worklist").text
    assert 'class="state-row-' in worklist and " escalated" in worklist and "emergency" in worklist

    dest = storescp("RYJPACS", port=port)
    assert len(dest.wait_for(2, timeout=60)) == 2
    wait_until(lambda: _transfer(hub).state == "delivered", message="delivered once the destination is up")
    row = browser(hub, "imperialviewer").get(f"/api/v1/transfers/{t.id}").json()
    assert row["escalated"] is False and row["priority_name"] == "emergency"
