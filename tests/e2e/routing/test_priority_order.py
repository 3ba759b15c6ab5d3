"""Priority: an emergency study pushed last, behind a backlog of routine studies to one slow destination
that takes one association at a time, is delivered before every routine study that had not started."""

from __future__ import annotations

from sqlalchemy import select, update

import peers
from hubtools import register_hospitals, wait_until
from imex.db.models import Node, Study, Transfer
from imex.routing.priority import EMERGENCY, ROUTINE
from imex.samples import make_study

RULES = [
    {
        "name": "stroke",
        "match": {"StudyDescription": "*STROKE*"},
        "to": ["RYJ"],
        "priority": "emergency",
        "recipient": "Stroke team",
    },
    {"name": "everything from King's", "source_institution": ["RJZ"], "to": ["RYJ"]},
]


def _one_at_a_time(hub) -> None:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        s.execute(update(Node).where(Node.name == "IMPERIAL_PACS").values(max_associations=1))
        s.commit()


def _transfers(hub) -> dict[str, Transfer]:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        rows = s.execute(select(Study.study_uid, Transfer).join(Transfer, Transfer.study_id == Study.id)).all()
        s.expunge_all()
        return {uid: t for uid, t in rows}


def test_emergency_overtakes_routine_backlog(make_config, start_hub, recording_scp, tmp_path):
    if not peers.have_dcmtk():
        import pytest

        pytest.skip("dcmtk is not installed")
    dest = recording_scp(delay=0.1)
    hub = start_hub(make_config(rules=RULES))
    register_hospitals(hub, dest_port=dest.port)
    _one_at_a_time(hub)

    routine = [
        make_study(
            tmp_path / f"r{i}", instances_per_series=3, accession=f"R{i}", modality="MR", description="ROUTINE MR"
        )
        for i in range(20)
    ]
    assert peers.storescu([p for files in routine for p in files], hub.listener.port, "IMEX").statuses == [0] * 60
    routine_uids = wait_until(
        lambda: (lambda t: set(t) if len(t) == 20 else None)(_transfers(hub)), message="20 routine transfers queued"
    )

    emergency = make_study(tmp_path / "e", instances_per_series=5, accession="E1", description="STROKE CT")
    assert peers.storescu(emergency, hub.listener.port, "IMEX").statuses == [0] * 5
    found = wait_until(lambda: [uid for uid in _transfers(hub) if uid not in routine_uids], message="emergency")
    emergency_uid = found[0]
    # routine transfers not yet started now that the emergency is queued: all must come after it
    waiting = {uid for uid, t in _transfers(hub).items() if uid in routine_uids and t.started_at is None}

    wait_until(
        lambda: all(t.state == "delivered" for t in _transfers(hub).values()) and len(_transfers(hub)) == 21,
        timeout=120,
        message="every transfer delivered",
    )
    order = dest.studies_in_order()
    assert len(order) == 21 and set(order) == routine_uids | {emergency_uid}
    position = order.index(emergency_uid)
    assert all(order.index(uid) > position for uid in waiting), (position, len(waiting))
    assert waiting, "the routine backlog was delivered before the emergency was queued; nothing was proven"
    # the destination got every emergency instance before the first instance of any waiting study
    arrivals = [study for study, _, _ in dest.received]
    last_emergency = max(i for i, study in enumerate(arrivals) if study == emergency_uid)
    assert all(arrivals.index(uid) > last_emergency for uid in waiting)

    rows = _transfers(hub)
    assert rows[emergency_uid].priority == EMERGENCY and rows[emergency_uid].recipient == "Stroke team"
    assert {rows[uid].priority for uid in routine_uids} == {ROUTINE}
