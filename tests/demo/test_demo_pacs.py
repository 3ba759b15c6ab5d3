"""The demo PACS's Query/Retrieve matching (imex.demo.pacs): what a C-FIND at each level answers from its
folder, and which instances a C-MOVE sends."""

from __future__ import annotations

from pydicom.dataset import Dataset

from imex.demo.pacs import Folder, matches
from imex.samples import make_study


def test_matching_rules():
    assert matches("PatientName", "", ["ANY"])  # universal
    assert matches("PatientName", "doe*", ["DOE^JANE"]) and not matches("PatientName", "SMITH*", ["DOE^JANE"])
    assert matches("StudyDate", "20240101-20240131", ["20240115"])
    assert not matches("StudyDate", "20240201-", ["20240115"]) and matches("StudyDate", "-20240115", ["20240115"])
    assert matches("StudyInstanceUID", "1.2\\1.3", ["1.3"]) and not matches("StudyInstanceUID", "1.2", ["1.20"])
    assert matches("ModalitiesInStudy", "MR", ["CT", "MR"]) and not matches("ModalitiesInStudy", "US", ["CT"])
    assert matches("PatientID", "P1", ["P1"]) and not matches("PatientID", "P1", ["P10"])
    assert not matches("AccessionNumber", "A1", [])  # a value asked for that the entity lacks


def _query(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_find_and_select_at_each_level(tmp_path):
    ct = make_study(tmp_path / "ct", series=2, instances_per_series=3, patient_id="P1", accession="A1")
    make_study(tmp_path / "mr", modality="MR", instances_per_series=2, patient_id="P1", accession="A2")
    make_study(tmp_path / "other", instances_per_series=1, patient_id="P2", accession="A3")
    folder = Folder(tmp_path)

    studies = folder.find(
        _query(
            "STUDY",
            PatientID="P1",
            StudyInstanceUID="",
            AccessionNumber="",
            ModalitiesInStudy="",
            NumberOfStudyRelatedSeries="",
            NumberOfStudyRelatedInstances="",
        ),
        "STUDY",
    )
    by_accession = {s.AccessionNumber: s for s in studies}
    assert set(by_accession) == {"A1", "A2"}
    assert by_accession["A1"].ModalitiesInStudy == "CT" and int(by_accession["A1"].NumberOfStudyRelatedSeries) == 2
    assert int(by_accession["A1"].NumberOfStudyRelatedInstances) == 6
    assert "SeriesInstanceUID" not in by_accession["A1"]  # only the keys asked for come back

    mr_only = folder.find(_query("STUDY", PatientID="P1", ModalitiesInStudy="MR", AccessionNumber=""), "STUDY")
    assert [s.AccessionNumber for s in mr_only] == ["A2"]

    study_uid = by_accession["A1"].StudyInstanceUID
    series = folder.find(_query("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID="", Modality=""), "SERIES")
    assert len(series) == 2 and {s.Modality for s in series} == {"CT"}
    images = folder.find(_query("IMAGE", StudyInstanceUID=study_uid, SOPInstanceUID=""), "IMAGE")
    assert len(images) == 6

    assert {str(h.path) for h in folder.select(_query("STUDY", StudyInstanceUID=study_uid))} == {str(p) for p in ct}
    one_series = series[0].SeriesInstanceUID
    assert len(folder.select(_query("SERIES", StudyInstanceUID=study_uid, SeriesInstanceUID=one_series))) == 3
    assert folder.select(_query("STUDY", StudyInstanceUID="9.9.9")) == []
