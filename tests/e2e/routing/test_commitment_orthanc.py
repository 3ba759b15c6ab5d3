"""Confirmed delivery against Orthanc as the destination PACS: Storage Commitment (Orthanc sends the
N-EVENT-REPORT on a new association to the hub, which it knows as a modality), and count verification by
C-FIND after an instance was deleted from Orthanc: the missing instance is sent again, then confirmed."""

from __future__ import annotations

import pytest
from pydicom import dcmread
from sqlalchemy import select

import peers
from hubtools import register_hospitals, wait_until
from imex.db.models import CommitmentRequest, Transfer, TransferEvent
from imex.directory import add_node
from imex.samples import make_study

pytestmark = pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")


def _transfer(hub) -> Transfer | None:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        t = s.scalar(select(Transfer))
        s.expunge_all()
        return t


def _state(hub) -> str | None:  # type: ignore[no-untyped-def]
    t = _transfer(hub)
    return t.state if t else None


def _events(hub) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return [(e.event, e.detail) for e in s.scalars(select(TransferEvent).order_by(TransferEvent.id))]


def _orthanc_for(config, tmp_path) -> peers.Orthanc:  # type: ignore[no-untyped-def]
    hub_entry = (config["dicom.ae_title"], "127.0.0.1", config["dicom.port"])
    return peers.Orthanc(tmp_path / "orthanc", aet="RYJPACS", modalities={"imex": hub_entry}).start()


def test_storage_commitment_with_orthanc_confirms(make_config, start_hub, tmp_path):
    config = make_config(confirm__wait_seconds=2.0, confirm__scan_interval=0.2)
    orthanc = _orthanc_for(config, tmp_path)
    try:
        hub = start_hub(config)
        register_hospitals(hub, dest_port=orthanc.dicom_port)
        add_node(
            hub.db,
            "IMPERIAL_PACS",
            "RYJPACS",
            "127.0.0.1",
            orthanc.dicom_port,
            "RYJ",
            update=True,
            confirm="commitment",
        )
        hub.nodes.invalidate()
        files = make_study(tmp_path / "s", instances_per_series=5)
        assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 5
        wait_until(lambda: _state(hub) == "confirmed", timeout=60, message="confirmed by Orthanc")
        assert sorted(orthanc.instance_sop_uids()) == sorted(
            str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files
        )
        with hub.db.session() as s:
            req = s.scalar(select(CommitmentRequest))
            assert (req.method, req.state, req.committed, req.failed) == ("commitment", "answered", 5, 0)
        assert any(e == "confirmed" and "storage commitment" in d for e, d in _events(hub))
    finally:
        orthanc.stop()


def test_count_verification_resends_what_orthanc_lost(make_config, start_hub, tmp_path):
    # the confirmation job runs only when the test says, so the deletion surely comes first
    config = make_config(confirm__scan_interval=3600.0)
    orthanc = _orthanc_for(config, tmp_path)
    try:
        hub = start_hub(config)
        register_hospitals(hub, dest_port=orthanc.dicom_port)
        add_node(
            hub.db, "IMPERIAL_PACS", "RYJPACS", "127.0.0.1", orthanc.dicom_port, "RYJ", update=True, confirm="count"
        )
        hub.nodes.invalidate()
        files = make_study(tmp_path / "s", series=2, instances_per_series=3)
        assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 6
        wait_until(lambda: _state(hub) == "delivered", timeout=60, message="delivered")
        assert len(orthanc.instances()) == 6
        lost = orthanc.get("/instances?expand")[4]
        orthanc.request("DELETE", f"/instances/{lost['ID']}")
        lost_uid = lost["MainDicomTags"]["SOPInstanceUID"]
        assert lost_uid not in orthanc.instance_sop_uids()

        def confirmed() -> bool:
            hub.confirmer.run_once()
            return _state(hub) == "confirmed"

        wait_until(confirmed, timeout=60, interval=0.3, message="re-sent and confirmed")
        assert lost_uid in orthanc.instance_sop_uids() and len(orthanc.instances()) == 6
        events = _events(hub)
        resend = [d for e, d in events if e == "confirm-resend"]
        assert len(resend) == 1 and lost_uid in resend[0] and "C-FIND at IMAGE level" in resend[0]
        assert any(e == "confirmed" and "all 6 instances" in d for e, d in events)
        t = _transfer(hub)
        assert t.confirm_rounds == 1 and t.instances_sent == 6
    finally:
        orthanc.stop()
