"""End to end: a study routed from King's (RJZ) to Imperial (RYJ) carries its report. The report arrives
before the study and waits; after delivery Imperial's RIS (a recording MLLP listener) gets the ORU and
Imperial's PACS (dcmtk storescp) gets the SR in the same study. A final after the preliminary reaches
both and is marked as superseding."""

from __future__ import annotations

import pytest
from pydicom import dcmread
from sqlalchemy import select

import peers
from hl7tools import RecordingRis, register_ris, variant
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import report_deliveries, studies
from imex.hl7 import client
from imex.hl7.parse import parse_oru
from imex.reports.history import reports_for_study
from imex.samples import make_study

SR = "1.2.840.10008.5.1.4.1.1.88.22"


def _srs(dest) -> list:
    out = []
    for path in dest.files():
        if peers.file_is_complete(path):
            ds = dcmread(path, stop_before_pixels=True)
            if ds.SOPClassUID == SR:
                out.append(ds)
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request) -> str:
    """Empty (SQLite in the data folder) or a new PostgreSQL database; set up before the hub, so it is
    dropped only after the hub stopped."""
    return request.getfixturevalue("postgres_url") if request.param == "postgres" else ""


def test_report_follows_study_and_final_supersedes(database_url, make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    ris = RecordingRis().start()
    try:
        hub = start_hub(make_config(database__url=database_url))
        register_hospitals(hub, dest_port=dest.port)
        register_ris(hub, dest_ris_port=ris.port)
        port = hub.reports.port

        # the preliminary report arrives before its study: accepted, waiting
        assert client.send("127.0.0.1", port, variant("oru_v23_final.hl7", "P1", status="P")).code == "AA"
        files = make_study(
            tmp_path / "study",
            instances_per_series=3,
            patient_id="K1234567",
            patient_name="KNIGHT^ANNA",
            accession="RJZACC1001",
        )
        study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        result = peers.storescu(files, hub.listener.port, "RYJ", "STORESCU")
        assert result.statuses == [0] * 3, result.output[-2000:]
        wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="images delivered")

        wait_until(lambda: len(ris.messages) == 1, message="ORU at Imperial's RIS")
        first = parse_oru(ris.messages[0])
        assert (first.status, first.accession_number, first.patient_id) == ("preliminary", "RJZACC1001", "K1234567")
        assert first.study_uid == study_uid and "ZIX" not in first.z_segments
        assert first.header.sending_facility == "RJZ" and first.header.receiving_facility == "RYJ"
        srs = wait_until(lambda: _srs(dest), message="report SR at Imperial's PACS")
        assert len(srs) == 1
        sr = srs[0]
        assert (sr.StudyInstanceUID, sr.PatientID, sr.AccessionNumber) == (study_uid, "K1234567", "RJZACC1001")
        assert sr.CompletionFlag == "PARTIAL" and sr.PreliminaryFlag == "PRELIMINARY"
        assert "No pulmonary embolus" in str(sr.ContentSequence[-1].TextValue)
        assert len(dest.wait_for(4)) == 4  # 3 images and the SR

        # the final version: forwarded again to both, marked as superseding the preliminary
        assert client.send("127.0.0.1", port, variant("oru_v23_final.hl7", "F1", status="F")).code == "AA"
        wait_until(lambda: len(ris.messages) == 2, message="final ORU at Imperial's RIS")
        second = parse_oru(ris.messages[1])
        assert second.status == "final"
        assert second.z_segments["ZIX"] == f"ZIX|SUPERSEDES|{first.header.control_id}"
        assert b"NTE|1||This report supersedes" in ris.messages[1]
        srs = wait_until(lambda: [s for s in _srs(dest) if s.CompletionFlag == "COMPLETE"], message="final SR")
        final = srs[0]
        assert final.VerificationFlag == "VERIFIED" and final.StudyInstanceUID == study_uid
        assert (
            final.PredecessorDocumentsSequence[0]
            .ReferencedSeriesSequence[0]
            .ReferencedSOPSequence[0]
            .ReferencedSOPInstanceUID
            == sr.SOPInstanceUID
        )

        with hub.db.engine.connect() as conn:
            study_id = conn.execute(select(studies.c.id).where(studies.c.study_uid == study_uid)).scalar_one()
            shown = reports_for_study(conn, study_id)
            states = conn.execute(
                select(report_deliveries.c.kind, report_deliveries.c.state).order_by(report_deliveries.c.id)
            ).all()
        assert [(r["status"], r["superseded"]) for r in shown] == [("final", False), ("preliminary", True)]
        assert set(shown[0]) == {
            "id",
            "status",
            "accession_number",
            "observed_at",
            "clinician",
            "text",
            "superseded",
            "received_at",
        }
        assert sorted(states) == [("dicom", "sent"), ("dicom", "sent"), ("hl7", "sent"), ("hl7", "sent")]
    finally:
        ris.stop()


def test_report_carries_the_harmonised_identity(make_config, start_hub, storescp, tmp_path):
    """With a harmonisation rule for Imperial (Patient ID becomes the NHS number, accession prefixed), the
    ORU and the SR name the patient and accession exactly as the images that Imperial received."""
    dest = storescp("RYJPACS")
    ris = RecordingRis().start()
    try:
        config = make_config()
        config.harmonise = [
            {
                "name": "Imperial by NHS number",
                "destination": ["RYJ"],
                "nhs_number": "use",
                "nhs_attribute": "OtherPatientIDs",
                "accession_prefix": "{source_ods}-",
            }
        ]
        hub = start_hub(config)
        register_hospitals(hub, dest_port=dest.port)
        register_ris(hub, dest_ris_port=ris.port)
        files = make_study(
            tmp_path / "study",
            instances_per_series=2,
            patient_id="K1234567",
            accession="RJZACC1001",
            extra={"OtherPatientIDs": "9434765919"},
        )
        assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 2
        assert client.send("127.0.0.1", hub.reports.port, variant("oru_v23_final.hl7", "H1")).code == "AA"
        wait_until(lambda: len(ris.messages) == 1, message="ORU at Imperial's RIS")
        images = [dcmread(p) for p in dest.wait_for(3) if dcmread(p, stop_before_pixels=True).SOPClassUID != SR]
        assert {(d.PatientID, d.AccessionNumber) for d in images} == {("9434765919", "RJZ-RJZACC1001")}
        oru = parse_oru(ris.messages[0])
        assert (oru.patient_id, oru.accession_number) == ("9434765919", "RJZ-RJZACC1001")
        sr = wait_until(lambda: _srs(dest), message="SR")[0]
        assert (sr.PatientID, sr.AccessionNumber, sr.IssuerOfPatientID) == ("9434765919", "RJZ-RJZACC1001", "NHS")
        assert sr.StudyInstanceUID == images[0].StudyInstanceUID
    finally:
        ris.stop()


def test_report_sr_joins_the_study_in_orthanc(make_config, start_hub, tmp_path):
    """Orthanc as the destination PACS files the report SR under the same patient and study as the images."""
    if not (peers.have_orthanc() and peers.have_dcmtk()):
        pytest.skip("Orthanc or dcmtk is not installed")
    orthanc = peers.Orthanc(tmp_path / "orthanc", aet="RYJORTHANC")
    orthanc.start()
    try:
        hub = start_hub(make_config())
        register_hospitals(hub, dest_port=orthanc.dicom_port, dest_aet="RYJORTHANC")
        register_ris(hub)
        assert client.send("127.0.0.1", hub.reports.port, variant("oru_v23_final.hl7", "O1")).code == "AA"
        files = make_study(tmp_path / "study", instances_per_series=2, patient_id="K1234567", accession="RJZACC1001")
        assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 2
        wait_until(lambda: orthanc.statistics()["CountInstances"] == 3, message="images and SR in Orthanc")
        stats = orthanc.statistics()
        assert (stats["CountPatients"], stats["CountStudies"], stats["CountSeries"]) == (1, 1, 2)
        modalities = {orthanc.get(f"/series/{s}")["MainDicomTags"].get("Modality") for s in orthanc.get("/series")}
        assert modalities == {"CT", "SR"}
    finally:
        orthanc.stop()
