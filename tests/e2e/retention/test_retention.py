"""Retention with time travel (the pass takes `now`; nothing sleeps): delivered and quarantined studies
expire after their hours, nothing in use is deleted, a tombstone and an audit event stay, no blob is
left behind, and a permitted user can extend a study once."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import AuditEvent, Instance, Institution, Study, Tombstone, Transfer
from imex.index.remove import orphans
from imex.retention.job import run_once
from imex.samples import make_study

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def hub(make_config, start_hub, storescp):
    dest = storescp("RYJPACS")
    # the hub's own pass runs rarely here: the tests call run_once with their own clock
    hub = start_hub(make_config(retention__scan_interval=3600.0))
    register_hospitals(hub, dest_port=dest.port)
    hub.dest = dest
    return hub


def push(hub, tmp_path, name: str, called: str = "RYJ", n: int = 2) -> str:  # type: ignore[no-untyped-def]
    files = make_study(tmp_path / name, instances_per_series=n, patient_id=name.upper(), modality="CT")
    assert peers.storescu(files, hub.listener.port, called, "STORESCU").statuses == [0] * n
    from pydicom import dcmread

    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def study(hub, uid: str) -> Study | None:  # type: ignore[no-untyped-def]
    with hub.db.sessions() as s:
        return s.scalar(select(Study).where(Study.study_uid == uid))


def blob_files(hub) -> set[str]:  # type: ignore[no-untyped-def]
    return {p.name for p in hub.store.root.glob("???/*") if p.is_file()}


def test_delivered_study_expires_after_its_hours_and_leaves_a_tombstone(hub, tmp_path):
    uid = push(hub, tmp_path, "k1")
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    with hub.db.sessions() as s:
        delivered_at = s.scalar(select(Transfer.delivered_at))
    expires = study(hub, uid).expires_at
    assert delivered_at + 168 * HOUR <= expires <= delivered_at + 168 * HOUR + dt.timedelta(seconds=5)
    files_before = blob_files(hub)
    assert len(files_before) == 2

    assert run_once(hub.db, hub.store, now=expires - dt.timedelta(seconds=1)).deleted == []
    assert study(hub, uid) is not None
    done = run_once(hub.db, hub.store, now=expires + dt.timedelta(seconds=1))
    assert [d.study_uid for d in done.deleted] == [uid] and done.deleted[0].instances == 2
    assert study(hub, uid) is None and blob_files(hub) == set()
    with hub.db.sessions() as s:
        stone = s.scalar(select(Tombstone).where(Tombstone.study_uid == uid))
        assert (stone.instances, stone.patient_id, stone.expired_at) == (2, "K1", expires)
        assert stone.bytes > 0 and "retention: expired" in stone.reason
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "study.delete", AuditEvent.study_uid == uid))
        assert event.username == "retention" and event.patient_id == "K1"
        assert s.scalar(select(func.count()).select_from(Instance)) == 0
    assert list(orphans(hub.db, hub.store, older_than=dt.timedelta(0))) == []
    assert run_once(hub.db, hub.store, now=expires + 1000 * HOUR).deleted == []  # nothing twice


def test_quarantine_and_institution_hours(hub, tmp_path):
    with hub.db.sessions() as s:
        s.execute(update(Institution).where(Institution.ods_code == "RJZ").values(retention_hours=18))
        s.commit()
    lost = push(hub, tmp_path, "lost", called="IMEX")  # no route: quarantined, kept 720 h by default
    sent = push(hub, tmp_path, "sent")
    wait_until(
        lambda: study(hub, lost).route_state == "quarantined" and transfer_states(hub) == [("delivered", 2, 2)],
        message="routing",
    )
    quarantined = study(hub, lost)
    assert quarantined.expires_at == quarantined.last_received_at + 720 * HOUR
    with hub.db.sessions() as s:
        delivered_at = s.scalar(select(Transfer.delivered_at))
    assert delivered_at + 18 * HOUR <= study(hub, sent).expires_at <= delivered_at + 19 * HOUR  # King's: 18 h
    later = run_once(hub.db, hub.store, now=delivered_at + 20 * HOUR)
    assert [d.study_uid for d in later.deleted] == [sent] and study(hub, lost) is not None
    assert [d.study_uid for d in run_once(hub.db, hub.store, now=quarantined.expires_at + HOUR).deleted] == [lost]


def test_nothing_in_use_is_deleted(hub, tmp_path):
    hub.dest.stop()  # the destination is down: the transfer stays pending, retrying
    uid = push(hub, tmp_path, "busy")
    wait_until(
        lambda: transfer_states(hub) and transfer_states(hub)[0][0] in ("pending", "sending"), message="transfer queued"
    )
    far = dt.datetime(2100, 1, 1)
    with hub.db.sessions() as s:  # even with an expiry long past
        s.execute(update(Study).where(Study.study_uid == uid).values(expires_at=dt.datetime(2000, 1, 1)))
        s.commit()
    assert run_once(hub.db, hub.store, now=far).candidates == []
    with hub.db.sessions() as s:  # receiving again (a late instance): not deleted either
        s.execute(update(Transfer).values(state="cancelled"))
        s.execute(update(Study).where(Study.study_uid == uid).values(route_state="receiving"))
        s.commit()
    assert run_once(hub.db, hub.store, now=far).deleted == []
    with hub.db.sessions() as s:
        s.execute(update(Study).where(Study.study_uid == uid).values(route_state="routed"))
        s.commit()
    assert len(run_once(hub.db, hub.store, now=far, dry_run=True).candidates) == 1
    assert study(hub, uid) is not None  # a dry run deletes nothing
    assert len(run_once(hub.db, hub.store, now=far).deleted) == 1


def test_orphan_blobs_are_found(hub, tmp_path):
    push(hub, tmp_path, "o1", called="IMEX", n=1)
    wait_until(lambda: len(blob_files(hub)) == 1, message="stored")
    stray = hub.store.root / "abc" / ("abc" + "0" * 61)
    stray.write_bytes(b"left by a crash between commit and unlink")
    assert list(orphans(hub.db, hub.store, older_than=dt.timedelta(0))) == [stray.name]


def test_extend_once_from_the_portal_and_tombstones_for_auditors(hub, tmp_path):
    from portaltools import add_user, bearer, browser

    uid = push(hub, tmp_path, "ext")
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    add_user(hub, "guardian", "RYJ", ["pacs_guardian"])
    add_user(hub, "viewer", "RYJ", ["viewer"])
    add_user(hub, "ig", "RJZ", ["auditor"])
    add_user(hub, "other_ig", "RYJ", ["auditor"])
    study_id = study(hub, uid).id
    before = study(hub, uid).expires_at
    guardian = browser(hub, "guardian")
    shown = guardian.get(f"/api/v1/studies/{study_id}").json()
    assert shown["expires_at"] == before.isoformat(timespec="seconds") + "Z" and shown["extended_by"] is None
    assert "Kept until" in guardian.get(f"/studies/{study_id}").text
    assert browser(hub, "viewer").post(f"/api/v1/studies/{study_id}/extend", json={"reason": "x"}).status_code == 403
    extended = guardian.post(f"/api/v1/studies/{study_id}/extend", json={"reason": "MDT on Friday"})
    assert extended.status_code == 200 and extended.json()["extended_by"] == "guardian"
    after = study(hub, uid).expires_at
    assert after >= before + 72 * HOUR
    again = guardian.post(f"/api/v1/studies/{study_id}/extend", json={"reason": "and again"})
    assert again.status_code == 409 and "already extended" in again.json()["detail"]
    assert run_once(hub.db, hub.store, now=before + HOUR).deleted == []  # the old expiry no longer counts
    assert len(run_once(hub.db, hub.store, now=after + HOUR).deleted) == 1

    stones = bearer(hub, "ig").get("/api/v1/tombstones").json()
    assert stones["total"] == 1 and stones["items"][0]["study_uid"] == uid  # King's study
    assert bearer(hub, "other_ig").get("/api/v1/tombstones").json()["total"] == 0
    with hub.db.sessions() as s:
        ext = s.scalar(select(AuditEvent).where(AuditEvent.action == "study.extend"))
        assert ext.username == "guardian" and "MDT on Friday" in ext.detail


def test_retention_commands(hub, tmp_path):
    from click.testing import CliRunner

    from hubtools import write_toml
    from imex.cli import main

    uid = push(hub, tmp_path, "cli")
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    toml = write_toml(tmp_path / "imex.toml", hub.config)
    with hub.db.sessions() as s:
        s.execute(update(Study).values(expires_at=dt.datetime(2000, 1, 1)))
        s.commit()

    def imex(*args: str) -> str:
        result = CliRunner().invoke(main, ["--config", str(toml), *args], env={"IMEX_CONFIG": None})
        assert result.exit_code == 0, result.output
        return result.output

    assert imex("retention", "run", "--dry-run").strip() == uid
    assert study(hub, uid) is not None
    assert f"deleted {uid}: 2 instances" in imex("retention", "run")
    assert uid in imex("retention", "tombstones") and "retention: expired 2000-01-01" in imex("retention", "tombstones")
    assert "0 orphan blob(s)" in imex("retention", "orphans")


def test_studies_about_to_expire_are_flagged_on_the_worklist(hub, tmp_path):
    from portaltools import add_user, browser

    uid = push(hub, tmp_path, "soon")
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    add_user(hub, "rad", "RYJ", ["viewer"])
    rad = browser(hub, "rad")
    assert "expires soon" not in rad.get("/worklist").text  # 168 h away
    with hub.db.sessions() as s:
        s.execute(
            update(Study).where(Study.study_uid == uid).values(expires_at=dt.datetime.utcnow() + dt.timedelta(hours=3))
        )
        s.commit()
    assert "expires soon" in rad.get("/worklist").text
    row = rad.get("/api/v1/transfers").json()["items"][0]
    assert row["expires_at"] and row["expires_at"].endswith("Z")


def test_a_routing_rule_sets_its_own_retention(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    rules = [{"name": "teaching copies", "modality": ["CT"], "to": ["RYJ"], "retention_hours": 24}]
    hub = start_hub(make_config(rules=rules, retention__scan_interval=3600.0))
    register_hospitals(hub, dest_port=dest.port)
    uid = push(hub, tmp_path, "rule", called="IMEX")
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    with hub.db.sessions() as s:
        delivered_at = s.scalar(select(Transfer.delivered_at))
    expires = study(hub, uid).expires_at
    assert delivered_at + 24 * HOUR <= expires < delivered_at + 25 * HOUR  # the rule's 24 h, not 168 h
    from imex.config import ConfigError
    from imex.routing.rules import parse_rules

    with pytest.raises(ConfigError, match="retention_hours"):
        parse_rules([{"name": "bad", "to": ["RYJ"], "retention_hours": "a week"}])
