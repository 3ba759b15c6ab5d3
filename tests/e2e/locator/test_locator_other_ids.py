"""The hub feed indexes a study whose NHS number is not its Patient ID but one of its Other Patient IDs
(Other Patient IDs Sequence with issuer NHS, or the retired Other Patient IDs), and search finds it; an
Other Patient ID from another issuer is not taken for an NHS number."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

import peers
from hubtools import wait_until
from imex.samples import make_study
from locatortools import OTHER_NHS, PATIENT_DOB, PATIENT_NHS, entries, register_pacs
from portaltools import add_user, bearer

pytestmark = pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk is not installed")


def _other(patient_id: str, issuer: str) -> Dataset:
    item = Dataset()
    item.PatientID = patient_id
    item.IssuerOfPatientID = issuer
    item.TypeOfPatientID = "TEXT"
    return item


def test_nhs_number_in_other_patient_ids_is_indexed_and_found(make_config, start_hub, tmp_path: Path) -> None:
    hub = start_hub(make_config(locator__index_interval=0.2, locator__sweep_scan_interval=3600.0))
    register_pacs(hub, "RJZ", "King's College Hospital", "RJZ_PACS", "STORESCU", peers.free_port())
    register_pacs(hub, "RYJ", "Imperial College Healthcare", "RYJ_PACS", "RYJPACS", peers.free_port(), destination=True)
    register_pacs(hub, "RGT", "Cambridge University Hospitals", "RGT_PACS", "RGTPACS", peers.free_port())
    add_user(hub, "gp.cambridge", "RGT", ["viewer"])
    add_user(hub, "admin.kings", "RJZ", ["institution_admin"])
    assert (
        bearer(hub, "admin.kings").put("/api/v1/locator/discoverability", json={"mode": "everyone"}).status_code == 200
    )
    local = {"IssuerOfPatientID": "RJZ"}
    studies = {
        # first, a local number of another issuer that happens to pass the NHS check: never indexed
        "decoy": make_study(
            tmp_path / "decoy",
            instances_per_series=1,
            patient_id="K1000001",
            accession="D1",
            extra={**local, "OtherPatientIDsSequence": [_other(OTHER_NHS, "RJZ-LAB")]},
        ),
        "sequence": make_study(
            tmp_path / "seq",
            instances_per_series=2,
            patient_id="K1000002",
            accession="S1",
            birth_date=PATIENT_DOB,
            description="CT HEAD",
            extra={**local, "OtherPatientIDsSequence": [_other("MRN77", "RJZ-MRN"), _other("943 476 5919", "NHS")]},
        ),
        "retired": make_study(
            tmp_path / "ret",
            instances_per_series=1,
            patient_id="K1000003",
            accession="R1",
            birth_date=PATIENT_DOB,
            description="MR KNEE",
            extra={**local, "OtherPatientIDs": ["X99", PATIENT_NHS]},
        ),
    }
    for files in studies.values():
        assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * len(files)

    wait_until(
        lambda: len([e for e in entries(hub) if e.source == "hub"]) >= 2,
        timeout=60,
        message="both studies indexed by the hub feed",
    )
    indexed = {e.accession: e for e in entries(hub) if e.source == "hub"}
    assert set(indexed) == {"S1", "R1"}  # the decoy, looked at first, was not indexed
    assert {e.nhs_number for e in indexed.values()} == {PATIENT_NHS}
    assert indexed["S1"].patient_id == "K1000002" and indexed["S1"].num_instances == 2

    gp = bearer(hub, "gp.cambridge")
    found = gp.post(
        "/api/v1/locator/search", json={"nhs_number": PATIENT_NHS, "birth_date": "1970-01-01", "reason": "MDT"}
    ).json()["items"]
    assert sorted((i["institution"]["ods_code"], i["source"], i["accession"]) for i in found) == [
        ("RJZ", "hub", "R1"),
        ("RJZ", "hub", "S1"),
    ]
    nothing = gp.post(
        "/api/v1/locator/search", json={"nhs_number": OTHER_NHS, "birth_date": "1970-01-01", "reason": "MDT"}
    )
    assert nothing.status_code == 200 and nothing.json()["items"] == []
