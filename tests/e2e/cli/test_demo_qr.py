"""The demo's PACS over the network, as the hub uses a real one: searched with the hub's own C-FIND
client (study, series and image level, by patient, dates and modality, as PACS search and the locator's
sweeps ask) and retrieved from with its C-MOVE client, to another AE title it knows."""

from __future__ import annotations

from imex.demo.pacs import DemoPacs
from imex.dicom.query import NodeAddress, StudyQuery, find_instances, find_series, find_studies
from imex.dicom.retrieve import move_study
from imex.samples import make_study


def test_search_and_retrieve(tmp_path):
    make_study(tmp_path / "kings" / "a", series=2, instances_per_series=2, patient_id="P1", accession="A1")
    make_study(tmp_path / "kings" / "b", modality="MR", instances_per_series=3, patient_id="P2", accession="A2")
    known: dict[str, tuple[str, int]] = {}
    source = DemoPacs("SOURCEPACS", tmp_path / "kings", 0, known.get).start()
    target = DemoPacs("TARGETPACS", tmp_path / "target", 0, known.get).start()
    known["TARGETPACS"] = ("127.0.0.1", target.port)
    try:
        node = NodeAddress("SOURCEPACS", "127.0.0.1", source.port)
        [study] = find_studies("IMEX", node, StudyQuery(patient_id="P1"), timeout=10)
        assert (study.accession, study.modalities, study.series_count, study.instance_count) == ("A1", ("CT",), 2, 4)
        today = study.study_date
        by_date = find_studies("IMEX", node, StudyQuery(date_from=today, date_to=today), timeout=10)
        assert {s.accession for s in by_date} == {"A1", "A2"}
        assert [s.accession for s in find_studies("IMEX", node, StudyQuery(modality="MR"), timeout=10)] == ["A2"]
        assert find_studies("IMEX", node, StudyQuery(date_to="19991231"), timeout=10) == []
        assert len(find_series("IMEX", node, study.study_uid, timeout=10)) == 2
        assert len(find_instances("IMEX", node, study.study_uid, timeout=10)) == 4

        outcome = move_study("IMEX", node, study.study_uid, destination_aet="TARGETPACS", timeout=30)
        assert outcome.ok and outcome.completed == 4
        assert len(list((tmp_path / "target").glob("*.dcm"))) == 4
        # and the target answers for what it stored
        moved = find_studies("IMEX", NodeAddress("TARGETPACS", "127.0.0.1", target.port), StudyQuery(patient_id="P1"))
        assert [s.study_uid for s in moved] == [study.study_uid]
    finally:
        source.stop()
        target.stop()
