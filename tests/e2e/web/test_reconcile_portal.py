"""A transfer held for reconciliation (no valid NHS number, destination requires one) shows on the
receiving PACS guardian's dashboard and is released from the portal with the identity to send."""

from __future__ import annotations

from pydicom import dcmread

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.samples import make_study
from portaltools import add_user, browser

RULE = {"name": "Imperial files by NHS number", "destination": ["RYJ"], "nhs_number": "require"}


def test_guardian_releases_a_held_transfer_from_the_portal(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    config = make_config()
    config.harmonise = [RULE]
    hub = start_hub(config)
    register_hospitals(hub, dest_port=dest.port)
    add_user(hub, "guardian", "RYJ", ["pacs_guardian"])
    add_user(hub, "viewer", "RYJ", ["viewer"])
    files = make_study(
        tmp_path / "s", instances_per_series=2, patient_id="LOCAL77", accession="A1", patient_name="HELD^HARRY"
    )
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0, 0]
    wait_until(lambda: [s for s, _, _ in transfer_states(hub)] == ["held"], message="held")

    guardian = browser(hub, "guardian")
    board = guardian.get("/api/v1/dashboard").json()
    [held] = board["needs_action"]
    assert held["state"] == "held" and held["patient_name"] == "HELD, Harry"
    page = guardian.get(f"/transfers/{held['id']}").text
    assert "Release with these" in page and "no valid NHS number" in page

    viewer = browser(hub, "viewer")
    refused = viewer.post(f"/api/v1/transfers/{held['id']}/reconcile", json={"patient_id": "9434765919"})
    assert refused.status_code == 403
    bad = guardian.post(f"/api/v1/transfers/{held['id']}/reconcile", json={"patient_id": ""})
    assert bad.status_code == 422
    released = guardian.post(
        f"/api/v1/transfers/{held['id']}/reconcile", json={"patient_id": "943 476 5919", "accession_number": "RYJ55"}
    )
    assert released.status_code == 200, released.text
    received = dest.wait_for(2)
    wait_until(lambda: transfer_states(hub) == [("delivered", 2, 2)], message="delivery")
    assert {(dcmread(p).PatientID, dcmread(p).AccessionNumber) for p in received} == {("9434765919", "RYJ55")}
    again = guardian.post(f"/api/v1/transfers/{held['id']}/reconcile", json={"patient_id": "9434765919"})
    assert again.status_code == 409
    trail = [
        e for e in guardian.get("/api/v1/dashboard").json()["recent_activity"] if e["action"] == "transfer.reconcile"
    ]
    assert len(trail) == 1 and "943 476 5919" in trail[0]["detail"] and "RYJ55" in trail[0]["detail"]
