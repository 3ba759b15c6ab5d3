"""DICOMweb conformance with a client that is not ours (dicomweb-client): QIDO-RS searches with the
standard's matching, WADO-RS instances (byte for byte), metadata, frames, rendered and thumbnails, and
STOW-RS storing a new study that is then routed to another hospital like a DICOM arrival."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from requests import HTTPError
from sqlalchemy import select, update

from dwtools import BIG_BODY, base_url, client, dataset_bytes, exchange, token
from hubtools import wait_until
from imex.db.models import AuditEvent, Instance, Institution, Study
from imex.samples import make_study

ROUTE_MR = [
    {
        "name": "MR from King's by DICOMweb go to Imperial",
        "source_institution": ["RJZ"],
        "modality": ["MR"],
        "to": ["RYJ"],
    }
]


@pytest.fixture
def sent(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config(rules=ROUTE_MR, http__max_body_bytes=BIG_BODY))
    files = make_study(
        tmp_path / "ct",
        series=2,
        instances_per_series=3,
        patient_name="EXCHANGE^ALICE",
        patient_id="K123",
        accession="ACC1",
        modality="CT",
        description="CT CHEST",
    )
    exchange(hub, dest.port, files)
    hub.test_files = files  # type: ignore[attr-defined]
    hub.test_dest = dest  # type: ignore[attr-defined]
    return hub


def _value(item: dict, tag: str):  # type: ignore[no-untyped-def]
    return item[tag]["Value"][0] if "Value" in item.get(tag, {}) else None


def test_qido_matching(sent):
    web = client(sent, "imperial_viewer")
    study_uid = pydicom.dcmread(sent.test_files[0]).StudyInstanceUID
    studies = web.search_for_studies()
    assert [_value(s, "0020000D") for s in studies] == [study_uid]
    study = studies[0]
    assert _value(study, "00100010") == {"Alphabetic": "EXCHANGE^ALICE"}
    assert _value(study, "00100020") == "K123" and _value(study, "00080050") == "ACC1"
    assert _value(study, "00201208") == 6 and _value(study, "00201206") == 2
    assert study["00080061"]["Value"] == ["CT"]
    assert _value(study, "00081190").endswith(f"/dicomweb/studies/{study_uid}")
    date = _value(study, "00080020")

    def count(**filters) -> int:  # type: ignore[no-untyped-def]
        return len(web.search_for_studies(search_filters=filters, fuzzymatching=filters.pop("_fuzzy", None)))

    assert count(PatientID="K123") == 1 and count(PatientID="K12") == 0  # exact
    assert count(PatientID="K1*") == 1 and count(PatientID="K?23") == 1  # wildcards
    assert count(PatientName="EXCHANGE^ALICE") == 1 and count(PatientName="exchange*") == 1
    assert count(PatientName="ALICE") == 0 and count(PatientName="ALICE", _fuzzy=True) == 1
    assert count(PatientName="ali", _fuzzy=True) == 1 and count(PatientName="bob", _fuzzy=True) == 0
    assert count(StudyDate=f"{date}-") == 1 and count(StudyDate=f"-{date}") == 1
    assert count(StudyDate=f"{date}-{date}") == 1 and count(StudyDate="19000101-19001231") == 0
    assert count(ModalitiesInStudy="CT") == 1 and count(ModalitiesInStudy="MR") == 0
    assert count(StudyInstanceUID=study_uid) == 1 and count(AccessionNumber="") == 1  # universal
    assert count(StudyDescription="CT*") == 1

    series = web.search_for_series(study_uid)
    assert [_value(s, "00200011") for s in series] == [1, 2]
    assert _value(series[0], "00201209") == 3 and _value(series[0], "00080060") == "CT"
    assert "00100010" not in series[0]  # study attributes only when asked for
    asked = web.search_for_series(study_uid, fields=["PatientName"])
    assert _value(asked[0], "00100010") == {"Alphabetic": "EXCHANGE^ALICE"}
    assert len(web.search_for_series(search_filters={"Modality": "CT"})) == 2
    assert len(web.search_for_series(study_uid, search_filters={"SeriesNumber": "2"})) == 1

    instances = web.search_for_instances(study_uid)
    assert len(instances) == 6
    assert [_value(i, "00200013") for i in instances] == [1, 2, 3, 1, 2, 3]
    page = web.search_for_instances(study_uid, limit=2, offset=3)
    assert [_value(i, "00080018") for i in page] == [_value(i, "00080018") for i in instances[3:5]]
    first = instances[0]
    with_rows = web.search_for_instances(
        study_uid, _value(first, "0020000E"), fields=["Rows", "PixelSpacing"], search_filters={"InstanceNumber": "1"}
    )
    assert len(with_rows) == 1 and _value(with_rows[0], "00280010") == 64
    assert "00280030" in with_rows[0]

    bad = httpx.get(
        f"{base_url(sent)}/dicomweb/studies",
        params={"NoSuchKey": "1"},
        headers={"Authorization": f"Bearer {token(sent, 'imperial_viewer')}"},
    )
    assert bad.status_code == 400


def test_wado_instances_metadata_frames_rendered(sent):
    web = client(sent, "imperial_viewer")
    original = pydicom.dcmread(sent.test_files[0])
    study_uid, series_uid, sop_uid = original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID

    got = web.retrieve_instance(study_uid, series_uid, sop_uid)
    assert got.SOPInstanceUID == sop_uid
    out = io.BytesIO()
    got.save_as(out, enforce_file_format=True)
    assert dataset_bytes(out.getvalue()) == dataset_bytes(sent.test_files[0].read_bytes())

    series = web.retrieve_series(study_uid, series_uid)
    assert sorted(d.SOPInstanceUID for d in series) == sorted(
        pydicom.dcmread(f).SOPInstanceUID for f in sent.test_files[:3]
    )
    assert len(web.retrieve_study(study_uid)) == 6

    meta = web.retrieve_instance_metadata(study_uid, series_uid, sop_uid)
    assert meta["00080018"]["Value"] == [sop_uid] and "7FE00010" not in meta
    assert meta["00280010"]["Value"] == [64]
    assert len(web.retrieve_series_metadata(study_uid, series_uid)) == 3
    assert len(web.retrieve_study_metadata(study_uid)) == 6

    frames = web.retrieve_instance_frames(study_uid, series_uid, sop_uid, frame_numbers=[1])
    assert frames[0] == original.PixelData

    png = web.retrieve_instance_rendered(
        study_uid, series_uid, sop_uid, media_types=("image/png",), params={"window": "1000,2000", "viewport": "32,32"}
    )
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.size == (32, 32)
    jpeg = web.retrieve_instance_rendered(study_uid, series_uid, sop_uid)
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    thumb = (
        web.retrieve_series_thumbnail(study_uid, series_uid, media_types=("image/png",))
        if hasattr(web, "retrieve_series_thumbnail")
        else None
    )
    with httpx.Client(
        base_url=f"{base_url(sent)}/dicomweb", headers={"Authorization": f"Bearer {token(sent, 'imperial_viewer')}"}
    ) as raw:
        for path in (
            f"/studies/{study_uid}/thumbnail",
            f"/studies/{study_uid}/series/{series_uid}/thumbnail",
            f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/thumbnail",
        ):
            answer = raw.get(path, headers={"Accept": "image/png"})
            assert answer.status_code == 200 and Image.open(io.BytesIO(answer.content)).size == (128, 128)
        assert raw.get(f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/frames/2").status_code == 404
        assert (
            raw.get(
                f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/rendered", params={"window": "1,0"}
            ).status_code
            == 400
        )
        assert (
            raw.get(
                f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}",
                headers={
                    "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
                },
            ).status_code
            == 406
        )
    if thumb is not None:
        assert Image.open(io.BytesIO(thumb)).format == "PNG"


def test_stow_stores_byte_for_byte_and_routes(sent, tmp_path):
    files = make_study(
        tmp_path / "mr",
        series=1,
        instances_per_series=4,
        patient_name="STOWED^CAROL",
        patient_id="K777",
        accession="ACC7",
        modality="MR",
    )
    datasets = [pydicom.dcmread(f) for f in files]
    web = client(sent, "kings_sender")
    answer = web.store_instances(datasets)
    assert len(answer.ReferencedSOPSequence) == 4 and "FailedSOPSequence" not in answer
    study_uid = datasets[0].StudyInstanceUID
    with sent.db.sessions() as s:
        study = s.scalar(select(Study).where(Study.study_uid == study_uid))
        assert study.num_instances == 4
        assert s.scalar(select(Institution.ods_code).where(Institution.id == study.institution_id)) == "RJZ"
        assert s.scalar(select(AuditEvent.detail).where(AuditEvent.action == "study.store")) == "STOW-RS: 4 instance(s)"
        keys = s.scalars(select(Instance.blob_key).where(Instance.study_id == study.id)).all()
    # what dicomweb-client posted (pydicom's encoding) is what the store holds and what WADO-RS returns
    posted = {}
    for ds in datasets:
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        posted[ds.SOPInstanceUID] = buf.getvalue()
    assert sorted(sent.store.read(k) for k in keys) == sorted(posted.values())
    bearer_token = token(sent, "kings_sender")
    for ds in datasets:
        raw = httpx.get(
            f"{base_url(sent)}/dicomweb/studies/{study_uid}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}",
            headers={
                "Authorization": f"Bearer {bearer_token}",
                "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
            },
        )
        assert raw.status_code == 200
        assert posted[ds.SOPInstanceUID] in raw.content
        again = web.retrieve_instance(study_uid, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, again, enforce_file_format=True)
        assert buf.getvalue() == posted[ds.SOPInstanceUID]
        assert np.array_equal(again.pixel_array, ds.pixel_array)

    # routed like any arrival: the rule sends King's MR to Imperial, whose PACS gets the same dataset bytes
    wait_until(lambda: len(list(sent.test_dest.out_dir.glob("*"))) >= 6 + 4, timeout=30, message="MR delivered")
    arrived = {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes() for p in sent.test_dest.out_dir.glob("*")}
    for uid, data in posted.items():
        assert dataset_bytes(arrived[uid]) == dataset_bytes(data)
    assert len(client(sent, "imperial_viewer").search_for_studies(search_filters={"PatientID": "K777"})) == 1


def test_stow_refusals(sent, tmp_path):
    files = make_study(tmp_path / "x", series=1, instances_per_series=1, modality="MR")
    ds = pydicom.dcmread(files[0])
    with pytest.raises(HTTPError) as denied:  # a viewer may not store
        client(sent, "imperial_viewer").store_instances([ds])
    assert denied.value.response.status_code == 403
    # another institution's study cannot be added to, nor its instances replaced
    theirs = pydicom.dcmread(sent.test_files[0])
    with pytest.raises(HTTPError) as foreign:
        client(sent, "barts_sender").store_instances([theirs])
    assert foreign.value.response.status_code == 409
    assert foreign.value.response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC122]
    with pytest.raises(HTTPError) as mismatch:  # posted to one study, belongs to another
        client(sent, "kings_sender").store_instances([ds], study_instance_uid=theirs.StudyInstanceUID)
    assert mismatch.value.response.status_code == 409
    bad = httpx.post(
        f"{base_url(sent)}/dicomweb/studies",
        content=b"--b\r\n\r\nnot dicom\r\n--b--\r\n",
        headers={
            "Authorization": f"Bearer {token(sent, 'kings_sender')}",
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
        },
    )
    assert bad.status_code == 409 and bad.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]
    with sent.db.sessions() as s:
        assert s.scalar(select(Study).where(Study.study_uid == ds.StudyInstanceUID)) is None
        # the institution's storage quota applies to STOW-RS as to DICOM arrivals
        s.execute(update(Institution).where(Institution.ods_code == "RJZ").values(quota_bytes=1))
        s.commit()
    sent.quota.invalidate()
    with pytest.raises(HTTPError) as full:
        client(sent, "kings_sender").store_instances([ds])
    assert full.value.response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xA700]
    with sent.db.sessions() as s:
        assert s.scalar(select(Study).where(Study.study_uid == ds.StudyInstanceUID)) is None
