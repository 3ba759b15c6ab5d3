"""How the router picks destinations (alias, header code, rules), quarantine, and follow-up instances,
with dcmtk storescu as the sending PACS and storescp as the receiving one."""

from __future__ import annotations

from sqlalchemy import select

import peers
from hubtools import register_hospitals, sop_uids, transfer_states, wait_until
from imex.db.models import Study, Transfer
from imex.directory import add_institution, add_node
from imex.routing.router import route_manually
from imex.samples import make_study


def _study_row(hub, study_uid: str) -> Study:
    with hub.db.session() as s:
        return s.scalar(select(Study).where(Study.study_uid == study_uid))


def _uid(paths) -> str:
    from pydicom import dcmread

    return dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID


def test_routing_code_in_header_picks_destination(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config(routing__code_attribute="RequestingService"))
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(tmp_path / "s", instances_per_series=4, extra={"RequestingService": "RYJ"})

    assert peers.storescu(files, hub.listener.port, "IMEX", "STORESCU").statuses == [0] * 4

    assert len(dest.wait_for(4)) == 4
    wait_until(lambda: transfer_states(hub) == [("delivered", 4, 4)], message="delivery")
    with hub.db.session() as s:
        assert "code RYJ in RequestingService" in s.scalar(select(Transfer.reason))


def test_code_attribute_given_as_tag_and_several_codes(make_config, start_hub, storescp, tmp_path):
    ryj = storescp("RYJPACS")
    rrv = storescp("UCLHPACS")
    hub = start_hub(make_config(routing__code_attribute="0040,1001"))  # Requested Procedure ID
    register_hospitals(hub, dest_port=ryj.port)
    add_institution(hub.db, "RRV", "University College London Hospitals")
    add_node(hub.db, "UCLH_PACS", "UCLHPACS", "127.0.0.1", rrv.port, "RRV")
    hub.nodes.invalidate()
    files = make_study(tmp_path / "s", instances_per_series=3, extra={"RequestedProcedureID": "RYJ\\RRV"})

    assert peers.storescu(files, hub.listener.port, "IMEX", "STORESCU").statuses == [0] * 3

    assert len(ryj.wait_for(3)) == 3 and len(rrv.wait_for(3)) == 3
    wait_until(lambda: sorted(transfer_states(hub)) == [("delivered", 3, 3)] * 2, message="two deliveries")


def test_static_rule_by_source_and_modality(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    rules = [
        {"name": "MR to nowhere", "modality": ["MR"], "to": ["NOPE"]},
        {
            "name": "King's CT to Imperial",
            "source": ["KINGS_PACS"],
            "modality": ["CT"],
            "match": {"StudyDescription": "*HEAD*"},
            "to": ["RYJ"],
        },
    ]
    hub = start_hub(make_config(rules=rules))
    register_hospitals(hub, dest_port=dest.port)
    head = make_study(tmp_path / "head", instances_per_series=3, description="CT HEAD")
    chest = make_study(tmp_path / "chest", instances_per_series=2, description="CT CHEST", patient_id="OTHER1")

    assert peers.storescu(head, hub.listener.port, "IMEX", "STORESCU").statuses == [0] * 3
    assert peers.storescu(chest, hub.listener.port, "IMEX", "STORESCU").statuses == [0] * 2

    assert len(dest.wait_for(3)) == 3
    wait_until(lambda: _study_row(hub, _uid(chest)).route_state == "quarantined", message="chest quarantined")
    quarantined = _study_row(hub, _uid(chest))
    assert "no rule matches" in quarantined.quarantine_reason
    assert "IMEX, which is no destination alias" in quarantined.quarantine_reason
    assert transfer_states(hub) == [("delivered", 3, 3)]
    assert sorted(dest.sop_uids()) == sop_uids(head)


def test_unroutable_study_waits_in_quarantine_until_routed_by_hand(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(tmp_path / "s", instances_per_series=3)

    assert peers.storescu(files, hub.listener.port, "IMEX", "STORESCU").statuses == [0] * 3

    study_uid = _uid(files)
    wait_until(lambda: _study_row(hub, study_uid).route_state == "quarantined", message="quarantine")
    assert transfer_states(hub) == []
    assert dest.files() == []
    assert _study_row(hub, study_uid).num_instances == 3  # kept, not dropped

    route_manually(hub.db, study_uid, ["RYJ"])

    assert len(dest.wait_for(3)) == 3
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="delivery after manual route")
    assert _study_row(hub, study_uid).route_state == "routed"


def test_follow_up_instances_go_to_the_same_destination(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(tmp_path / "s", series=2, instances_per_series=3)
    first, late = files[:4], files[4:]

    assert peers.storescu(first, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 4
    wait_until(lambda: transfer_states(hub) == [("delivered", 4, 4)], message="first delivery")

    # the late instances are sent to the hub's own AE title: the study's destination still applies
    assert peers.storescu(late, hub.listener.port, "IMEX", "STORESCU").statuses == [0] * 2

    wait_until(lambda: transfer_states(hub) == [("delivered", 6, 6)], message="follow-up delivery")
    assert len(dest.wait_for(6)) == 6
    assert sorted(dest.sop_uids()) == sop_uids(files)


def test_duplicate_instance_is_not_sent_again(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS", unique_filenames=True)
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(tmp_path / "s", instances_per_series=3)

    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 3
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="delivery")
    assert peers.storescu(files[:1], hub.listener.port, "RYJ", "STORESCU").statuses == [0]

    # give the router time to (wrongly) act on it, then check nothing moved
    import time

    time.sleep(1.5)
    assert transfer_states(hub) == [("delivered", 3, 3)]
    assert len(dest.files()) == 3
