"""C-FIND at study, series and image level and C-MOVE to the hub, against Orthanc as an institution's
PACS: what requests, pre-authorised transfers and the locator stand on."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

import peers
from hubtools import wait_until
from imex.db.models import Instance, Study
from imex.dicom.query import FindFailed, NodeAddress, StudyQuery, find_instances, find_series, find_studies
from imex.dicom.retrieve import MoveFailed, move_study
from imex.directory import add_institution, add_node
from imex.samples import make_study

pytestmark = pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")


def test_find_and_move_a_study_from_orthanc_to_the_hub(make_config, start_hub, tmp_path: Path) -> None:
    hub = start_hub(make_config())
    hub_aet, hub_port = hub.config["dicom.ae_title"], hub.config["dicom.port"]
    with peers.Orthanc(
        tmp_path / "orthanc", aet="RJZPACS", modalities={"HUB": (hub_aet, "127.0.0.1", hub_port)}
    ) as pacs:
        wanted = make_study(
            tmp_path / "a",
            series=2,
            instances_per_series=3,
            patient_id="9434765919",
            patient_name="DOE^JANE",
            accession="ACC1",
            modality="CT",
        )
        other = make_study(
            tmp_path / "b",
            series=1,
            instances_per_series=2,
            patient_id="9434765870",
            patient_name="ROE^RICHARD",
            accession="ACC2",
            modality="MR",
        )
        for path in wanted + other:
            pacs.upload(path)
        add_institution(hub.db, "RJZ", "King's College Hospital")
        add_node(hub.db, "RJZ_PACS", "RJZPACS", "127.0.0.1", pacs.dicom_port, "RJZ", destination=False)
        hub.nodes.invalidate()
        node = NodeAddress("RJZPACS", "127.0.0.1", pacs.dicom_port)

        studies = find_studies(hub_aet, node, StudyQuery(patient_id="9434765919"))
        assert [s.accession for s in studies] == ["ACC1"]
        match = studies[0]
        assert match.patient_name == "DOE^JANE" and match.instance_count == 6 and match.series_count == 2
        assert find_studies(hub_aet, node, StudyQuery(modality="MR"))[0].accession == "ACC2"
        series = find_series(hub_aet, node, match.study_uid)
        assert sorted(s.instance_count for s in series) == [3, 3]
        assert len(find_instances(hub_aet, node, match.study_uid)) == 6
        with pytest.raises(ValueError):
            find_studies(hub_aet, node, StudyQuery())

        outcome = move_study(hub_aet, node, match.study_uid)
        assert outcome.ok and outcome.completed == 6

        def arrived() -> int:
            with hub.db.engine.connect() as conn:
                return conn.execute(
                    select(func.count())
                    .select_from(Instance)
                    .join(Study, Study.id == Instance.study_id)
                    .where(Study.study_uid == match.study_uid)
                ).scalar_one()

        wait_until(lambda: arrived() == 6, timeout=30)

        with pytest.raises(MoveFailed, match="refused to move study"):
            move_study(hub_aet, node, match.study_uid, destination_aet="NOBODY")
    with pytest.raises(FindFailed, match="cannot reach|did not accept"):
        find_studies(
            hub_aet, NodeAddress("RJZPACS", "127.0.0.1", peers.free_port()), StudyQuery(accession="X"), timeout=3
        )
