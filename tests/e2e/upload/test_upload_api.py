"""Uploads through the API: a zip and a patient's CD (a folder with its DICOMDIR made by pydicom's
FileSet) are reviewed, sent to Imperial, and arrive at its PACS (dcmtk storescp) byte for byte; a staged
upload survives a restart and expires."""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet
from sqlalchemy import select

from hubtools import register_hospitals, wait_until
from imex.db.models import Upload
from imex.hub import Hub
from imex.samples import make_study
from imex.upload.staging import Staging
from portaltools import add_user, bearer, browser
from uploadtools import audit_actions, dataset_bytes, held, new_upload, put_file, upload_folder, zip_of


@pytest.fixture
def dest(storescp):
    return storescp("RYJPACS")


@pytest.fixture
def hub(make_config, start_hub, dest):
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    add_user(hub, "kings", "RJZ", ["sender"])
    return hub


def _sent(api, upload_id: int) -> dict:
    return wait_until(
        lambda: (r := api.get(f"/api/v1/uploads/{upload_id}").json())["state"] in ("sent", "failed") and r,
        message="upload stored",
    )


def test_zip_is_reviewed_sent_and_arrives_byte_identical(hub, dest, tmp_path):
    files = make_study(
        tmp_path / "study",
        series=2,
        instances_per_series=3,
        patient_name="ZIP^ZOE",
        patient_id="Z1",
        description="CT CHEST",
    )
    archive = zip_of(
        {f"export/{p.parent.name}/{p.name}": p.read_bytes() for p in files}
        | {"export/README.TXT": b"Burnt by the CD writer\n"}
    )
    api = bearer(hub, "kings")
    upload_id = new_upload(api)
    answer = put_file(api, upload_id, "cd-export.zip", archive, chunk=4096)  # many chunks
    assert answer.status_code == 200, answer.text
    assert answer.json()["kind"] == "zip" and answer.json()["complete"]

    review = api.get(f"/api/v1/uploads/{upload_id}").json()
    assert (review["instances"], review["studies"]) == (6, 1)
    [patient] = review["patients"]
    assert (patient["name"], patient["patient_id"]) == ("ZIP, Zoe", "Z1")
    [study] = patient["studies"]
    assert (study["description"], study["modalities"], study["series"], study["instances"]) == ("CT CHEST", "CT", 2, 6)
    assert review["skipped"] == [
        {"path": "cd-export.zip/export/README.TXT", "reason": "not a DICOM file (no DICM prefix at byte 128)"}
    ]

    sent = api.post(
        f"/api/v1/uploads/{upload_id}/send",
        json={"destination": "RYJ", "priority": "urgent", "recipient": "Dr Who", "message": "For the MDT"},
    )
    assert sent.status_code == 202, sent.text
    assert _sent(api, upload_id)["instances_stored"] == 6
    received = dest.wait_for(6)
    by_uid = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p) for p in received}
    assert by_uid == {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p) for p in files}
    assert not Staging(hub.db, hub.config).folder(upload_id).exists()  # staged files gone once stored
    actions = [a for a, _ in audit_actions(hub, object_type="upload", object_id=str(upload_id))]
    assert actions == ["upload.create", "upload.send"]
    with hub.db.sessions() as s:
        upload = s.get(Upload, upload_id)
        from imex.db.models import ExchangeTransaction, TransactionMessage

        tx = s.get(ExchangeTransaction, upload.transaction_id)
        assert (tx.kind, tx.recipient, tx.priority) == ("upload", "Dr Who", 50)
        assert (
            s.scalar(select(TransactionMessage.body).where(TransactionMessage.transaction_id == tx.id)) == "For the MDT"
        )
    assert api.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "RYJ"}).status_code == 409


def _cd(tmp_path, name: str) -> tuple:
    """A CD as hospitals burn them: DICOMDIR at the root, instances under DICOM/ with 8-character names."""
    files = make_study(
        tmp_path / f"{name}-src",
        instances_per_series=4,
        patient_name="CD^CARL",
        patient_id="C9",
        modality="MR",
        description="MR KNEE",
    )
    fs = FileSet()
    for f in files:
        fs.add(dcmread(f))
    cd = tmp_path / name
    fs.write(cd)
    return files, cd


def test_cd_with_dicomdir(hub, dest, tmp_path):
    files, cd = _cd(tmp_path, "cd")
    (cd / "AUTORUN.INF").write_text("[autorun]\nopen=viewer.exe\n")
    extra = make_study(
        tmp_path / "extra",
        instances_per_series=1,
        patient_name="CD^CARL",
        patient_id="C9",
        modality="MR",
        description="MR KNEE",
        study_uid=str(dcmread(files[0]).StudyInstanceUID),
    )
    shutil.copy(extra[0], cd / "EXTRA001")  # not in the DICOMDIR: accepted all the same
    api = bearer(hub, "kings")
    upload_id = upload_folder(api, cd, prefix="CD/")

    review = api.get(f"/api/v1/uploads/{upload_id}").json()
    assert review["instances"] == 5  # the DICOMDIR itself is no instance
    [dicomdir] = review["dicomdirs"]
    assert (dicomdir["path"], dicomdir["listed"], dicomdir["missing_count"]) == ("CD/DICOMDIR", 4, 0)
    assert [s["path"] for s in review["skipped"]] == ["CD/AUTORUN.INF"]
    [patient] = review["patients"]
    assert [(s["description"], s["instances"]) for s in patient["studies"]] == [("MR KNEE", 5)]

    assert api.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "RYJ"}).status_code == 202
    assert _sent(api, upload_id)["instances_stored"] == 5
    received = dest.wait_for(5)
    assert sorted(dataset_bytes(p) for p in received) == sorted(dataset_bytes(p) for p in [*files, extra[0]])


def test_dicomdir_names_files_that_did_not_arrive(hub, tmp_path):
    files, cd = _cd(tmp_path, "partial")
    listed = sorted(p for p in cd.rglob("*") if p.is_file() and p.name != "DICOMDIR")
    listed[0].unlink()
    api = bearer(hub, "kings")
    review = api.get(f"/api/v1/uploads/{upload_folder(api, cd)}").json()
    assert review["instances"] == 3
    [dicomdir] = review["dicomdirs"]
    assert dicomdir["missing_count"] == 1
    assert dicomdir["missing"][0].lower() == listed[0].relative_to(cd).as_posix().lower()


def test_staged_upload_survives_restart_then_expires(make_config, start_hub, tmp_path):
    config = make_config()
    first = Hub(config)
    first.start()
    register_hospitals(first, dest_port=1)
    add_user(first, "kings", "RJZ", ["sender"])
    files = make_study(tmp_path / "s", instances_per_series=2)
    api = bearer(first, "kings")
    upload_id = upload_folder(api, files[0].parent.parent)
    first.stop()

    again = start_hub(config)
    api = bearer(again, "kings")
    assert api.get(f"/api/v1/uploads/{upload_id}").json()["instances"] == 2
    staging = Staging(again.db, again.config)
    assert staging.expire(dt.datetime.now(dt.UTC).replace(tzinfo=None)) == []
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=config["upload.expiry_hours"], minutes=1)
    assert staging.expire(later) == [upload_id]
    assert not staging.folder(upload_id).exists()
    review = api.get(f"/api/v1/uploads/{upload_id}").json()
    assert (review["state"], review["staged_bytes"], review["patients"]) == ("expired", 0, [])
    assert staging.expire(later) == []  # done once
    assert api.post(f"/api/v1/uploads/{upload_id}/send", json={"destination": "RYJ"}).status_code == 409
    assert held(again) == (0, [])


def test_discard_and_listing(hub, tmp_path):
    files = make_study(tmp_path / "s", instances_per_series=1)
    api = browser(hub, "kings")
    upload_id = upload_folder(api, files[0].parent)
    assert [u["id"] for u in api.get("/api/v1/uploads").json()] == [upload_id]
    gone = api.delete(f"/api/v1/uploads/{upload_id}")
    assert gone.status_code == 200 and gone.json()["state"] == "discarded"
    assert not Staging(hub.db, hub.config).folder(upload_id).exists()
    assert api.delete(f"/api/v1/uploads/{upload_id}").status_code == 409
    assert ("upload.discard", "success") in audit_actions(hub, object_id=str(upload_id))
    assert held(hub) == (0, [])
