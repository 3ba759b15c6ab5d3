"""Sharing folders with time travel (the retention pass takes `now`): an emergency folder every
participating institution sees, gone after 18 hours; an elective folder only its members see, gone after
8 days; and a PACS guardian importing a shared study into their Orthanc under the local patient ID."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom import dcmread
from sqlalchemy import select

import peers
from hubtools import register_hospitals, wait_until
from imex.db.models import AuditEvent, FolderStudy, Study, Tombstone, Transfer
from imex.directory import add_institution
from imex.folders.manage import add_folder
from imex.retention.job import run_once
from imex.samples import make_study
from portaltools import add_user, bearer, browser

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def hub(make_config, start_hub):
    hub = start_hub(make_config(retention__scan_interval=3600.0))
    register_hospitals(hub, dest_port=peers.free_port())
    add_institution(hub.db, "RRV", "Barts Health")
    add_institution(hub.db, "RAL", "Royal Free London")
    return hub


def push(hub, tmp_path, name: str, called: str, **kw) -> str:  # type: ignore[no-untyped-def]
    files = make_study(tmp_path / name, instances_per_series=2, modality="CT", **kw)
    assert peers.storescu(files, hub.listener.port, called, "STORESCU").statuses == [0, 0]
    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def study(hub, uid: str) -> Study | None:  # type: ignore[no-untyped-def]
    with hub.db.sessions() as s:
        return s.scalar(select(Study).where(Study.study_uid == uid))


def test_emergency_folder_is_shared_then_gone_after_18_hours(hub, tmp_path):
    add_folder(hub.db, "Emergency", "emergency", alias="EMERGENCY", institutions_ods=["RJZ", "RYJ", "RRV"])
    hub.nodes.invalidate()
    uid = push(hub, tmp_path, "trauma", "EMERGENCY", patient_name="TRAUMA^TOM", patient_id="T1")
    wait_until(lambda: study(hub, uid) is not None and study(hub, uid).route_state == "routed", message="filed")
    with hub.db.sessions() as s:
        assert s.scalar(select(Transfer.id)) is None  # shared, not sent anywhere
        entry = s.scalar(select(FolderStudy))
    assert study(hub, uid).expires_at == entry.expires_at == entry.added_at + 18 * HOUR

    for name, ods in (("imperial", "RYJ"), ("barts", "RRV"), ("royalfree", "RAL")):
        add_user(hub, name, ods, ["viewer"])
    study_id = study(hub, uid).id
    for name in ("imperial", "barts"):
        api = bearer(hub, name)
        [folder] = api.get("/api/v1/folders").json()
        assert (folder["name"], folder["kind"], folder["studies"]) == ("Emergency", "emergency", 1)
        listed = api.get(f"/api/v1/folders/{folder['id']}/studies").json()["items"]
        assert [x["patient_name"] for x in listed] == ["TRAUMA, Tom"]
        assert api.get(f"/api/v1/studies/{study_id}").status_code == 200
    outsider = bearer(hub, "royalfree")
    assert outsider.get("/api/v1/folders").json() == []
    assert outsider.get(f"/api/v1/studies/{study_id}").status_code == 404
    assert "TRAUMA" not in browser(hub, "royalfree").get("/worklist?direction=all").text

    assert run_once(hub.db, hub.store, now=entry.added_at + 17 * HOUR).deleted == []
    assert bearer(hub, "barts").get(f"/api/v1/studies/{study_id}").status_code == 200
    gone = run_once(hub.db, hub.store, now=entry.added_at + 18 * HOUR + dt.timedelta(seconds=1))
    assert gone.left_folders == 1 and [d.study_uid for d in gone.deleted] == [uid]
    assert study(hub, uid) is None and not [p for p in hub.store.root.glob("???/*") if p.is_file()]
    with hub.db.sessions() as s:
        assert s.scalar(select(Tombstone.instances).where(Tombstone.study_uid == uid)) == 2
        actions = set(s.scalars(select(AuditEvent.action).where(AuditEvent.study_uid == uid)))
        openers = set(
            s.scalars(
                select(AuditEvent.username).where(
                    AuditEvent.action == "folder.open", AuditEvent.object_id == "Emergency"
                )
            )
        )
    assert {"folder.add", "study.view", "folder.expire", "study.delete"} <= actions
    assert openers == {"imperial", "barts"}  # the folder's own trail: who opened it


def test_elective_folder_is_for_members_only_and_lasts_8_days(hub, tmp_path):
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    add_user(hub, "kings_rad", "RJZ", ["sender"])
    add_user(hub, "imperial_admin", "RYJ", ["institution_admin"])
    add_user(hub, "imperial_rad", "RYJ", ["viewer"])
    add_user(hub, "imperial_other", "RYJ", ["viewer"])
    kings = browser(hub, "kings_admin")
    made = kings.post("/api/v1/folders", json={"name": "Neuro MDT", "kind": "elective", "institutions": ["RYJ"]})
    assert made.status_code == 201, made.text
    folder = made.json()
    assert folder["retention_hours"] == 192 and folder["institutions"] == ["RJZ", "RYJ"]
    assert kings.post("/api/v1/folders", json={"name": "E2", "kind": "emergency"}).status_code == 403

    from portaltools import user_row

    assert (
        kings.post(
            f"/api/v1/folders/{folder['id']}/members", json={"user_id": user_row(hub, "kings_rad").id}
        ).status_code
        == 200
    )
    imperial = browser(hub, "imperial_admin")
    joined = imperial.post(
        f"/api/v1/folders/{folder['id']}/members", json={"user_id": user_row(hub, "imperial_rad").id}
    )
    assert joined.json()["members"] == ["imperial_rad"]
    # an admin cannot add another institution's user
    assert (
        imperial.post(
            f"/api/v1/folders/{folder['id']}/members", json={"user_id": user_row(hub, "kings_rad").id}
        ).status_code
        == 404
    )

    uid = push(hub, tmp_path, "mdt", "IMEX", patient_name="MDT^MARY", patient_id="M1")  # quarantined at King's
    wait_until(lambda: study(hub, uid) is not None and study(hub, uid).route_state == "quarantined", message="q")
    sender = bearer(hub, "kings_rad")
    filed = sender.post(f"/api/v1/folders/{folder['id']}/studies", json={"study_id": study(hub, uid).id})
    assert filed.status_code == 200, filed.text
    added = dt.datetime.fromisoformat(filed.json()["leaves_folder_at"].rstrip("Z")) - 192 * HOUR

    member, other = bearer(hub, "imperial_rad"), bearer(hub, "imperial_other")
    assert [x["patient_id"] for x in member.get(f"/api/v1/folders/{folder['id']}/studies").json()["items"]] == ["M1"]
    assert other.get(f"/api/v1/folders/{folder['id']}/studies").status_code == 404
    assert other.get(f"/api/v1/studies/{study(hub, uid).id}").status_code == 404
    assert run_once(hub.db, hub.store, now=added + 7 * 24 * HOUR).deleted == []
    assert member.get(f"/api/v1/studies/{study(hub, uid).id}").status_code == 200
    run_once(hub.db, hub.store, now=added + 8 * 24 * HOUR + HOUR)
    assert member.get(f"/api/v1/folders/{folder['id']}/studies").json()["items"] == []
    # the study itself stays for its quarantine time at King's; only the sharing ended
    assert study(hub, uid) is not None
    assert member.get(f"/api/v1/studies/{study(hub, uid).id}").status_code == 404


def test_guardian_imports_a_shared_study_into_the_local_pacs(make_config, start_hub, tmp_path):
    hub = start_hub(make_config())
    with peers.Orthanc(
        tmp_path / "orthanc", aet="RYJPACS", modalities={"imex": ("IMEX", "127.0.0.1", hub.listener.port)}
    ) as orthanc:
        register_hospitals(hub, dest_port=orthanc.dicom_port)
        add_folder(hub.db, "Emergency", "emergency", alias="EMERGENCY", institutions_ods=["RJZ", "RYJ"])
        hub.nodes.invalidate()
        # Imperial's PACS already knows the patient under its own ID
        local = make_study(
            tmp_path / "local",
            instances_per_series=1,
            patient_name="SHARED^SAM",
            patient_id="RYJ777",
            birth_date="19700101",
        )
        assert peers.storescu(local, orthanc.dicom_port, "RYJPACS", "LOCAL").statuses == [0]
        uid = push(hub, tmp_path, "shared", "EMERGENCY", patient_name="SHARED^SAM", patient_id="K555", accession="KCH1")
        wait_until(lambda: study(hub, uid) is not None and study(hub, uid).route_state == "routed", message="filed")
        add_user(hub, "guardian", "RYJ", ["pacs_guardian"])
        add_user(hub, "viewer", "RYJ", ["viewer"])
        guardian = browser(hub, "guardian")
        study_id = study(hub, uid).id
        assert browser(hub, "viewer").get(f"/api/v1/studies/{study_id}/import").status_code == 403

        before = guardian.get(f"/api/v1/studies/{study_id}/import", params={"search": "RYJ777"}).json()
        assert before["problem"] == "" and before["study"]["patient_id"] == "K555"
        assert [(lp["patient_id"], lp["name"]) for lp in before["local_patients"]] == [("RYJ777", "SHARED^SAM")]
        done = guardian.post(
            f"/api/v1/studies/{study_id}/import", json={"patient_id": "RYJ777", "accession_number": "RYJACC9"}
        )
        assert done.status_code == 202, done.text
        wait_until(lambda: len(orthanc.instances()) == 3, message="import reached Orthanc")
        patients = {p["MainDicomTags"]["PatientID"] for p in orthanc.get("/patients?expand")}
        assert patients == {"RYJ777"}  # filed under the local patient, not K555
        imported = [orthanc.get_file(i) for i in orthanc.instances()]
        from io import BytesIO

        datasets = [dcmread(BytesIO(b)) for b in imported]
        shared = [ds for ds in datasets if ds.StudyInstanceUID == uid]
        assert len(shared) == 2 and {ds.AccessionNumber for ds in shared} == {"RYJACC9"}
        original = shared[0].OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
        assert original.PatientID == "K555" and original.AccessionNumber == "KCH1"
        again = guardian.post(f"/api/v1/studies/{study_id}/import", json={"patient_id": "RYJ777"})
        assert again.status_code == 409
    with hub.db.sessions() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "study.import"))
    assert event.username == "guardian" and "RYJ777" in event.detail and event.patient_id == "K555"


def test_folder_commands(hub, tmp_path):
    from click.testing import CliRunner

    from hubtools import write_toml
    from imex.cli import main

    toml = write_toml(tmp_path / "imex.toml", hub.config)

    def imex(*args: str, ok: bool = True) -> str:
        result = CliRunner().invoke(main, ["--config", str(toml), *args], env={"IMEX_CONFIG": None})
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    assert "added emergency folder Trauma; PACS send to AE title TRAUMA" in imex(
        "folder",
        "add",
        "Trauma",
        "--kind",
        "emergency",
        "--alias",
        "trauma",
        "--institution",
        "RJZ",
        "--institution",
        "RYJ",
    )
    assert "already used" in imex("folder", "add", "Other", "--kind", "elective", "--alias", "RJZ", ok=False)
    assert "ZZZ" in imex("folder", "add", "X", "--kind", "elective", "--institution", "ZZZ", ok=False)
    hub.nodes.invalidate()
    uid = push(hub, tmp_path, "cli", "TRAUMA", patient_id="C1")
    wait_until(lambda: study(hub, uid) is not None and study(hub, uid).route_state == "routed", message="filed")
    listing = imex("folder", "list")
    assert "Trauma" in listing and "emergency" in listing and "18 h" in listing and "1 studies" in listing
    assert "RJZ, RYJ" in listing


def test_a_routing_rule_can_name_a_folder(make_config, start_hub, tmp_path):
    rules = [{"name": "CT heads to the stroke folder", "modality": ["CT"], "to": ["Stroke network"]}]
    hub = start_hub(make_config(rules=rules))
    register_hospitals(hub, dest_port=peers.free_port())
    add_folder(hub.db, "Stroke network", "elective", institutions_ods=["RJZ", "RYJ"], owner_ods="RJZ")
    uid = push(hub, tmp_path, "rule", "IMEX", patient_id="R1")
    wait_until(lambda: study(hub, uid) is not None and study(hub, uid).route_state == "routed", message="filed")
    with hub.db.sessions() as s:
        entry = s.scalar(select(FolderStudy))
        assert entry.added_by == "routing" and s.scalar(select(Transfer.id)) is None
    assert entry.expires_at == entry.added_at + 192 * HOUR
