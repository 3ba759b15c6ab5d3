"""Coerced copies in other transfer syntaxes and to Orthanc: compressed pixel data go out with the same
bytes, a destination that refuses the compression gets them decompressed, and a de-identifying rule
reaches Orthanc with a stable pseudonym and new UIDs."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLosslessSV1

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.directory import add_institution, add_node
from imex.samples import compress_jpeg_lossless, make_study

RULE = {
    "name": "NHS number and prefix",
    "destination": ["RYJ"],
    "nhs_number": "use",
    "accession_prefix": "{source_ods}-",
}


def _sent(hub, tmp_path: Path, count: int = 3) -> dict:  # type: ignore[no-untyped-def]
    plain = make_study(
        tmp_path / "plain",
        instances_per_series=count,
        patient_id="9434765919",
        accession="A9",
        extra={"IssuerOfPatientID": "NHS", "OtherPatientIDs": "K55"},
    )
    jpeg = compress_jpeg_lossless(plain, tmp_path / "jpeg")
    result = peers.storescu(jpeg, hub.listener.port, "RYJ", "STORESCU", extra_args=["-xs"])
    assert result.statuses == [0] * count, result.output[-2000:]
    return {
        "plain": {str(d.SOPInstanceUID): d for d in map(dcmread, plain)},
        "jpeg": {str(d.SOPInstanceUID): d for d in map(dcmread, jpeg)},
    }


def test_compressed_instances_keep_their_pixel_bytes(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    config = make_config()
    config.harmonise = [RULE]
    hub = start_hub(config)
    register_hospitals(hub, dest_port=dest.port)
    sent = _sent(hub, tmp_path)

    received = [dcmread(p) for p in dest.wait_for(3)]
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="delivery")
    for ds in received:
        assert ds.file_meta.TransferSyntaxUID == JPEGLosslessSV1
        assert ds.PixelData == sent["jpeg"][str(ds.SOPInstanceUID)].PixelData  # encapsulated bytes as stored
        assert ds.AccessionNumber == "RJZ-A9" and ds.PatientID == "9434765919"
        assert ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].AccessionNumber == "A9"


def test_destination_refusing_compression_gets_a_decompressed_coerced_copy(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS", accept_all=False)  # storescp's default: uncompressed syntaxes only
    config = make_config()
    config.harmonise = [RULE]
    hub = start_hub(config)
    register_hospitals(hub, dest_port=dest.port)
    sent = _sent(hub, tmp_path)

    received = [dcmread(p) for p in dest.wait_for(3)]
    for ds in received:
        assert ds.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        assert ds.AccessionNumber == "RJZ-A9"
        assert (ds.pixel_array == sent["plain"][str(ds.SOPInstanceUID)].pixel_array).all()  # lossless


@pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")
def test_deidentified_study_reaches_orthanc_with_stable_pseudonym(make_config, start_hub, tmp_path):
    with peers.Orthanc(tmp_path / "orthanc", aet="TEACHING") as orthanc:
        config = make_config()
        config.harmonise = [{"name": "Teaching file", "destination": ["TEACHING_PACS"], "deidentify": True}]
        hub = start_hub(config)
        register_hospitals(hub, dest_port=9)  # Imperial is not used here
        add_institution(hub.db, "TCH", "Teaching collection")
        add_node(hub.db, "TEACHING_PACS", "TEACHING", "127.0.0.1", orthanc.dicom_port, "TCH")
        hub.nodes.invalidate()
        first = make_study(
            tmp_path / "one", instances_per_series=2, patient_id="9434765919", patient_name="DOE^JANE", accession="A1"
        )
        second = make_study(
            tmp_path / "two", instances_per_series=2, patient_id="9434765919", patient_name="DOE^JANE", accession="A2"
        )
        for files in (first, second):
            assert peers.storescu(files, hub.listener.port, "TCH", "STORESCU").statuses == [0, 0]

        wait_until(lambda: len(orthanc.instances()) == 4, message="4 instances in Orthanc")
        got = [dcmread(BytesIO(orthanc.get_file(i))) for i in orthanc.instances()]
        originals = {str(d.SOPInstanceUID): d for d in map(dcmread, first + second)}
        assert len({ds.PatientID for ds in got}) == 1  # one pseudonym for both studies
        assert len({ds.StudyInstanceUID for ds in got}) == 2
        for ds in got:
            assert ds.PatientID.startswith("IMEX") and str(ds.PatientName) == ds.PatientID
            assert ds.PatientIdentityRemoved == "YES" and "OriginalAttributesSequence" not in ds
            assert not ds.get("AccessionNumber") and not ds.get("PatientBirthDate")
            assert str(ds.SOPInstanceUID) not in originals
        assert sorted(bytes(ds.PixelData) for ds in got) == sorted(bytes(d.PixelData) for d in originals.values())
