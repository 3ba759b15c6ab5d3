"""Cut-through: an emergency study is forwarded while it is still arriving, with no stability wait."""

from __future__ import annotations

from sqlalchemy import select

import peers
from hubtools import register_hospitals, sop_uids, wait_until
from imex.db.models import Study, Transfer, TransferEvent
from imex.samples import make_study

EMERGENCY = [{"name": "stroke", "match": {"StudyDescription": "*STROKE*"}, "to": ["RYJ"], "priority": "emergency"}]


def test_emergency_delivery_starts_before_the_push_ends(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    # a stability wait far longer than the test: only cut-through can deliver in time
    hub = start_hub(make_config(rules=EMERGENCY, routing__stable_seconds=600))
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(
        tmp_path / "ct", series=3, instances_per_series=100, rows=256, columns=256, description="STROKE CT HEAD"
    )

    assert peers.storescu(files, hub.listener.port, "IMEX").statuses == [0] * 300

    received = dest.wait_for(300, timeout=120)
    assert sop_uids(received) == sop_uids(files)
    for path in received[:5]:  # byte for byte as stored (storescp +B)
        original = next(f for f in files if sop_uids([f]) == sop_uids([path]))
        assert path.read_bytes().endswith(original.read_bytes()[-4096:])
    with hub.db.session() as s:
        study = s.scalar(select(Study))
        transfer = s.scalar(select(Transfer))
        events = list(s.scalars(select(TransferEvent.event).where(TransferEvent.transfer_id == transfer.id)))
    wait_until(lambda: _state(hub) == "delivered", message="transfer delivered")
    # delivery began while the study was still arriving at the hub
    assert transfer.started_at is not None and transfer.started_at < study.last_received_at
    assert events[0] == "queued"


def _state(hub) -> str:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return s.scalar(select(Transfer.state))


def test_routine_study_still_waits_to_be_stable(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    rules = [*EMERGENCY, {"name": "rest", "source_institution": ["RJZ"], "to": ["RYJ"]}]
    hub = start_hub(make_config(rules=rules, routing__stable_seconds=2.0))
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(tmp_path / "mr", instances_per_series=5, description="KNEE MR")

    assert peers.storescu(files, hub.listener.port, "IMEX").statuses == [0] * 5
    dest.wait_for(5)
    with hub.db.session() as s:
        study = s.scalar(select(Study))
        transfer = s.scalar(select(Transfer))
    assert transfer.priority == 0
    assert transfer.started_at >= study.last_received_at  # routed only once stable
