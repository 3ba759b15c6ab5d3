"""Download a study as a zip with a DICOMDIR: the zip's DICOMDIR reads with pydicom and lists every
instance, whose bytes equal the stored ones; scoped (another institution's study is 404, audited), needs
studies.download (403, audited), audited when it works; and `imex export` writes the same file-set."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom.fileset import FileSet
from sqlalchemy import select

import peers
from hubtools import register_hospitals, transfer_states, wait_until, write_toml
from imex.db.models import AuditEvent, Instance, Study
from imex.directory import add_institution
from imex.samples import make_study
from portaltools import add_user, bearer, browser


@pytest.fixture
def hub(make_config, start_hub, storescp, tmp_path):  # type: ignore[no-untyped-def]
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    add_institution(hub.db, "RRK", "Birmingham")
    files = make_study(
        tmp_path / "ct",
        series=2,
        instances_per_series=4,
        rows=64,
        columns=64,
        patient_name="ZIP^ZOE",
        patient_id="Z1",
        accession="ACCZIP",
    )
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * len(files)
    wait_until(lambda: transfer_states(hub) == [("delivered", 8, 8)], timeout=60, message="delivery")
    add_user(hub, "kings_admin", "RJZ", ["institution_admin"])
    add_user(hub, "kings_viewer", "RJZ", ["viewer"])
    add_user(hub, "imperial_guard", "RYJ", ["pacs_guardian"])
    add_user(hub, "brum_admin", "RRK", ["institution_admin"])
    return hub


def _study(hub) -> Study:  # type: ignore[no-untyped-def]
    with hub.db.sessions() as s:
        return s.scalar(select(Study))


def stored(hub) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    """SOP Instance UID -> the bytes the hub stored."""
    with hub.db.sessions() as s:
        return {i.sop_uid: hub.store.read(i.blob_key) for i in s.scalars(select(Instance))}


def check_fileset(root: Path, sent: dict[str, bytes]) -> None:
    """The DICOMDIR at `root` lists every instance, and each file's bytes are exactly the stored ones."""
    fs = FileSet(root / "DICOMDIR")
    assert len(fs) == len(sent)
    kinds = {node.record_type for node in fs._tree}  # noqa: SLF001 (the records of the file-set)
    assert {"PATIENT", "STUDY", "SERIES", "IMAGE"} <= kinds
    for inst in fs:
        assert all(len(part) <= 8 and part == part.upper() for part in Path(inst.FileID).parts)
        assert (root / inst.FileID).read_bytes() == sent[inst.SOPInstanceUID]
    assert {i.SOPInstanceUID for i in fs} == set(sent)


def test_download_zip_holds_dicomdir_and_stored_bytes(hub, tmp_path):  # type: ignore[no-untyped-def]
    study = _study(hub)
    client = bearer(hub, "kings_admin")
    answer = client.get(f"/api/v1/studies/{study.id}/download")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    names = archive.namelist()
    assert names[0] == "DICOMDIR" and len(names) == 9
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    archive.extractall(tmp_path / "unzipped")
    check_fileset(tmp_path / "unzipped", stored(hub))
    with hub.db.sessions() as s:
        event = s.scalar(select(AuditEvent).where(AuditEvent.action == "study.download"))
        assert event.username == "kings_admin" and event.study_uid == study.study_uid and event.patient_id == "Z1"
    # the receiving institution's PACS guardian may download it too
    assert bearer(hub, "imperial_guard").get(f"/api/v1/studies/{study.id}/download").status_code == 200


def test_download_is_scoped_and_needs_the_permission(hub):  # type: ignore[no-untyped-def]
    study = _study(hub)
    other = bearer(hub, "brum_admin").get(f"/api/v1/studies/{study.id}/download")
    assert other.status_code == 404 and b"DICM" not in other.content
    for bad in ("0", "-1", "99999999999999", "abc", f"{study.id + 1000}"):
        assert bearer(hub, "kings_admin").get(f"/api/v1/studies/{bad}/download").status_code in (404, 422)
    no_permission = bearer(hub, "kings_viewer").get(f"/api/v1/studies/{study.id}/download")
    assert no_permission.status_code == 403
    with hub.db.sessions() as s:
        denied = s.scalars(select(AuditEvent).where(AuditEvent.outcome == "denied")).all()
        assert any(e.username == "brum_admin" and e.object_id == str(study.id) for e in denied)
        assert any(e.username == "kings_viewer" and e.object_id == "studies.download" for e in denied)
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "study.download")) is None


def test_study_page_has_the_download_button(hub):  # type: ignore[no-untyped-def]
    study = _study(hub)
    page = browser(hub, "kings_admin").get(f"/studies/{study.id}")
    assert f'href="/api/v1/studies/{study.id}/download"' in page.text
    assert "/download" not in browser(hub, "kings_viewer").get(f"/studies/{study.id}").text


def test_cli_export_to_folder_and_zip(hub, tmp_path):  # type: ignore[no-untyped-def]
    from imex.cli import main

    study = _study(hub)
    config_path = tmp_path / "imex.toml"
    write_toml(config_path, hub.config)
    runner = CliRunner()
    done = runner.invoke(main, ["--config", str(config_path), "export", study.study_uid, str(tmp_path / "cd")])
    assert done.exit_code == 0, done.output
    check_fileset(tmp_path / "cd", stored(hub))
    done = runner.invoke(main, ["--config", str(config_path), "export", study.study_uid, str(tmp_path / "cd.zip")])
    assert done.exit_code == 0, done.output
    zipfile.ZipFile(tmp_path / "cd.zip").extractall(tmp_path / "fromzip")
    check_fileset(tmp_path / "fromzip", stored(hub))
    missing = runner.invoke(main, ["--config", str(config_path), "export", "1.2.3.4", str(tmp_path / "x.zip")])
    assert missing.exit_code != 0 and "no study" in missing.output
    with hub.db.sessions() as s:
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "study.export")) is not None


def test_dicomdir_of_instances_lacking_record_attributes(tmp_path):  # type: ignore[no-untyped-def]
    """Real studies often lack Study ID, Study Time, Series or Instance Number: the DICOMDIR is still made,
    and the instances keep their bytes."""
    from pydicom import dcmread

    from imex.export import Member, write_folder

    files = make_study(tmp_path / "s", series=1, instances_per_series=3, rows=8, columns=8)
    for f in files:
        ds = dcmread(f)
        for keyword in ("StudyID", "StudyTime", "SeriesNumber", "InstanceNumber", "PatientID"):
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(f)
    sent = {dcmread(f).SOPInstanceUID: f.read_bytes() for f in files}
    write_folder([Member(uid, f) for f, uid in zip(files, sent, strict=False)], tmp_path / "out")
    check_fileset(tmp_path / "out", sent)


def test_zip_is_streamed_in_bounded_pieces(tmp_path):  # type: ignore[no-untyped-def]
    """Large instances leave in pieces of at most about 1 MiB: the zip is never built whole in memory."""
    from pydicom import dcmread

    from imex.export import Member, stream_zip
    from imex.export.zipstream import CHUNK

    files = make_study(tmp_path / "big", series=1, instances_per_series=3, rows=1024, columns=1024)
    members = [Member(dcmread(f, stop_before_pixels=True).SOPInstanceUID, f) for f in files]
    pieces = list(stream_zip(members))
    assert max(len(p) for p in pieces) <= CHUNK + 4096
    assert sum(len(p) for p in pieces) > 3 * 2 * 1024 * 1024
    archive = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    assert archive.testzip() is None and len(archive.namelist()) == 4
