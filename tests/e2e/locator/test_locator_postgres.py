"""The locator on PostgreSQL: the upserts of the sweep and hub feeds, the sweep claim, the hub watermark and
the discoverability clause, with a real Orthanc swept and a study pushed through the hub."""

from __future__ import annotations

from pathlib import Path

import pytest

import peers
from hubtools import wait_until
from imex.locator import policy
from imex.locator.sweep import configure
from imex.samples import make_study
from locatortools import PATIENT_DOB, PATIENT_NHS, entries, register_pacs
from portaltools import add_user, bearer

pytestmark = pytest.mark.skipif(not (peers.have_orthanc() and peers.have_dcmtk()), reason="Orthanc or dcmtk missing")


def test_locator_on_postgres(make_config, start_hub, postgres_url, tmp_path: Path) -> None:
    hub = start_hub(
        make_config(database__url=postgres_url, locator__index_interval=0.2, locator__sweep_scan_interval=0.2)
    )
    hub_aet, hub_port = hub.config["dicom.ae_title"], hub.config["dicom.port"]
    swept = make_study(
        tmp_path / "swept",
        series=1,
        instances_per_series=2,
        patient_id=PATIENT_NHS,
        birth_date=PATIENT_DOB,
        accession="S1",
        modality="MR",
        description="MR BRAIN",
    )
    pushed = make_study(
        tmp_path / "pushed",
        series=1,
        instances_per_series=3,
        patient_id=PATIENT_NHS,
        birth_date=PATIENT_DOB,
        accession="P1",
        modality="CT",
        description="CT CHEST",
    )
    with peers.Orthanc(tmp_path / "ryj", aet="RYJPACS", modalities={"HUB": (hub_aet, "127.0.0.1", hub_port)}) as pacs:
        for path in swept:
            pacs.upload(path)
        # not a destination: the pushed study must not reach (and be swept from) this PACS
        register_pacs(hub, "RYJ", "Imperial College Healthcare", "RYJ_PACS", "RYJPACS", pacs.dicom_port)
        register_pacs(hub, "RJZ", "King's College Hospital", "RJZ_PACS", "STORESCU", peers.free_port())
        register_pacs(hub, "RGT", "Cambridge University Hospitals", "RGT_PACS", "RGTPACS", peers.free_port())
        with hub.db.session() as s:
            policy.set_network(s, "Stroke", ["RGT", "RYJ"])
            for ods, mode, networks in (("RYJ", "restricted", ["Stroke"]), ("RJZ", "everyone", [])):
                inst = s.scalar(policy.select(policy.Institution).where(policy.Institution.ods_code == ods))
                policy.set_policy(s, inst.id, mode, networks=networks)
        configure(hub.db, "RYJ_PACS", lookback_days=30, queries_per_minute=600)
        assert peers.storescu(pushed, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 3
        wait_until(
            lambda: {(e.source, e.num_instances) for e in entries(hub)} >= {("sweep", 2), ("hub", 3)}, timeout=60
        )
        add_user(hub, "gp.cambridge", "RGT", ["viewer"])
        found = (
            bearer(hub, "gp.cambridge")
            .post(
                "/api/v1/locator/search", json={"nhs_number": PATIENT_NHS, "birth_date": "1970-01-01", "reason": "MDT"}
            )
            .json()["items"]
        )
        assert sorted((i["institution"]["ods_code"], i["description"]) for i in found) == [
            ("RJZ", "CT CHEST"),
            ("RYJ", "MR BRAIN"),
        ]
