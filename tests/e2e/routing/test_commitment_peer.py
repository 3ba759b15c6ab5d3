"""Storage Commitment against a pynetdicom destination: a report on a new association or the same one
confirms the transfer; instances reported failed are sent again; a destination that keeps refusing ends
`failed` with the instances named; forged and malformed reports are refused and change nothing."""

from __future__ import annotations

from pydicom.dataset import Dataset
from sqlalchemy import func, select

import peers
from commitpeer import send_report
from hubtools import register_hospitals, wait_until
from imex.db.models import AuditEvent, CommitmentRequest, Email, Transfer, TransferEvent, TransferItem
from imex.directory import add_node
from imex.samples import make_study


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


def _requests(hub) -> list[CommitmentRequest]:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        rows = list(s.scalars(select(CommitmentRequest).order_by(CommitmentRequest.id)))
        s.expunge_all()
        return rows


def _hub_with_peer(make_config, start_hub, commitment_peer, *, method: str = "commitment", **peer_kwargs):  # type: ignore[no-untyped-def]
    config = make_config(
        confirm__wait_seconds=peer_kwargs.pop("wait", 5.0),
        confirm__timeout_seconds=peer_kwargs.pop("timeout", 60.0),
        confirm__scan_interval=0.2,
        **peer_kwargs.pop("settings", {}),
    )
    peer = commitment_peer(hub=(config["dicom.ae_title"], "127.0.0.1", config["dicom.port"]), **peer_kwargs)
    hub = start_hub(config)
    register_hospitals(hub, dest_port=peer.port)
    add_node(hub.db, "IMPERIAL_PACS", "RYJPACS", "127.0.0.1", peer.port, "RYJ", update=True, confirm=method)
    hub.nodes.invalidate()
    return hub, peer


def test_report_on_a_new_association_confirms(make_config, start_hub, commitment_peer, tmp_path):
    hub, peer = _hub_with_peer(make_config, start_hub, commitment_peer, mode="new")
    files = make_study(tmp_path / "s", instances_per_series=4)
    assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 4
    wait_until(lambda: _state(hub) == "confirmed", message="transfer confirmed")
    t = _transfer(hub)
    assert t.confirmed_at is not None and t.delivered_at is not None
    assert len(peer.actions) == 1 and sorted(peer.actions[0][1]) == sorted(peer.stored)
    wait_until(lambda: peer.report_statuses, message="the peer's report answered")
    assert peer.report_statuses == [0x0000]
    req = _requests(hub)[0]
    assert (req.state, req.committed, req.failed, req.transaction_uid) == ("answered", 4, 0, peer.actions[0][0])
    events = [e for e, _ in _events(hub)]
    assert events.index("delivered") < events.index("confirm-queued") < events.index("confirmed")
    with hub.db.session() as s:
        assert s.scalar(select(AuditEvent).where(AuditEvent.action == "transfer.confirmed")) is not None


def test_report_on_the_same_association_confirms(make_config, start_hub, commitment_peer, tmp_path):
    hub, peer = _hub_with_peer(make_config, start_hub, commitment_peer, mode="same")
    files = make_study(tmp_path / "s", instances_per_series=3)
    assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 3
    wait_until(lambda: _state(hub) == "confirmed", message="transfer confirmed")
    wait_until(lambda: peer.report_statuses, message="the peer's report answered")
    assert peer.report_statuses == [0x0000]
    assert any("storage commitment:" in d and "3 of 3" in d for d in [r.detail for r in _requests(hub)])


def test_failed_instance_is_sent_again_then_confirmed(make_config, start_hub, commitment_peer, tmp_path):
    _resend_then_confirm(make_config, start_hub, commitment_peer, tmp_path, {})


def test_resend_and_confirm_on_postgres(postgres_url, make_config, start_hub, commitment_peer, tmp_path):
    _resend_then_confirm(make_config, start_hub, commitment_peer, tmp_path, {"database__url": postgres_url})


def _resend_then_confirm(make_config, start_hub, commitment_peer, tmp_path, settings) -> None:  # type: ignore[no-untyped-def]
    files = make_study(tmp_path / "s", instances_per_series=4)
    from pydicom import dcmread

    victim = str(dcmread(files[2], stop_before_pixels=True).SOPInstanceUID)
    hub, peer = _hub_with_peer(
        make_config, start_hub, commitment_peer, mode="new", refuse={victim: 1}, settings=settings
    )
    assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 4
    wait_until(lambda: _state(hub) == "confirmed", message="confirmed on the second round")
    assert peer.stored.count(victim) == 2 and len(peer.stored) == 5  # only the failed one went again
    assert len(peer.actions) == 2
    events = _events(hub)
    resend = [d for e, d in events if e == "confirm-resend"]
    assert len(resend) == 1 and victim in resend[0] and "0x0110" in resend[0]
    t = _transfer(hub)
    assert t.confirm_rounds == 1 and t.instances_sent == 4 and t.last_error is None
    with hub.db.session() as s:  # the destination was told of the arrival once, not once per round
        assert s.scalar(select(func.count()).select_from(Email)) == 1


def test_destination_that_keeps_refusing_ends_failed(make_config, start_hub, commitment_peer, tmp_path):
    files = make_study(tmp_path / "s", instances_per_series=2)
    from pydicom import dcmread

    victim = str(dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
    hub, peer = _hub_with_peer(make_config, start_hub, commitment_peer, mode="same", refuse={victim: 100})
    assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 2
    wait_until(lambda: _state(hub) == "failed", message="failed after the re-sends")
    t = _transfer(hub)
    assert victim in t.last_error and "did not confirm 1 of 2" in t.last_error
    assert "after 2 re-send(s)" in t.last_error
    assert len(peer.actions) == 3 and peer.stored.count(victim) == 3
    with hub.db.session() as s:
        item_states = sorted(s.scalars(select(TransferItem.state)))
    assert item_states == ["failed", "sent"]


def test_forged_and_malformed_reports_are_refused(make_config, start_hub, commitment_peer, tmp_path):
    # the destination accepts the request but stays silent: the transaction stays open for forgeries
    hub, peer = _hub_with_peer(make_config, start_hub, commitment_peer, mode="new", silent=1, wait=0.5)
    files = make_study(tmp_path / "s", instances_per_series=2)
    assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 2
    wait_until(lambda: _requests(hub) and _requests(hub)[0].state == "waiting", message="request waiting")
    transaction, uids = peer.actions[0]
    hub_address = (hub.config["dicom.ae_title"], "127.0.0.1", hub.listener.port)

    def report(transaction_uid: str) -> Dataset:
        ds = Dataset()
        ds.TransactionUID = transaction_uid
        ds.ReferencedSOPSequence = []
        for uid in uids:
            item = Dataset()
            item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", uid
            ds.ReferencedSOPSequence.append(item)
        return ds

    # an unknown Transaction UID, from the destination itself
    assert int(send_report("RYJPACS", hub_address, report("1.2.3.4.5"), 1).Status) == 0x0115
    # the right transaction, from another registered node (the source) that is not the destination
    assert int(send_report("STORESCU", hub_address, report(transaction), 1).Status) == 0x0124
    # an AE title the hub does not know cannot even associate
    assert send_report("NOBODY", hub_address, report(transaction), 1) is None
    # malformed: no Transaction UID, an unknown event type, a failure report without failures
    no_transaction = Dataset()
    no_transaction.PatientID = "X"
    assert int(send_report("RYJPACS", hub_address, no_transaction, 1).Status) == 0x0115
    assert int(send_report("RYJPACS", hub_address, report(transaction), 7).Status) == 0x0113
    assert int(send_report("RYJPACS", hub_address, report(transaction), 2).Status) == 0x0115
    assert int(send_report("RYJPACS", hub_address, report(transaction), 1, sop_instance="1.2.3").Status) == 0x0115
    assert _state(hub) == "delivered" and _requests(hub)[0].state == "waiting"
    assert any(e == "confirm-refused" and "STORESCU" in d for e, d in _events(hub))

    # the genuine report, late, on a new association: applied
    assert int(send_report("RYJPACS", hub_address, report(transaction), 1).Status) == 0x0000
    wait_until(lambda: _state(hub) == "confirmed", message="confirmed by the genuine report")
    # a replay of an answered transaction changes nothing
    assert int(send_report("RYJPACS", hub_address, report(transaction), 1).Status) == 0x0115
    assert _state(hub) == "confirmed"


def test_malformed_dataset_bytes_are_refused_without_a_crash():
    from imex.dicom.commitment import STATUS_INVALID_ARGUMENT, answer_event_report

    called = []
    for raw in (b"\x08\x00\x18\x00\xff\xff\xff\x7f", b"garbage", b"\x00" * 3):
        status, comment = answer_event_report(
            "RYJPACS",
            "1.2.840.10008.1.20.1",
            "1.2.840.10008.1.20.1.1",
            1,
            raw,
            "1.2.840.10008.1.2",
            lambda r, a: called.append(r) or (0, ""),
        )
        assert status == STATUS_INVALID_ARGUMENT and comment
    assert called == []


def test_new_uids_for_the_destination_are_what_is_asked_about(make_config, start_hub, commitment_peer, tmp_path):
    """With header harmonisation giving the destination new UIDs, the request names the UIDs it received."""
    config = make_config(confirm__wait_seconds=5.0, confirm__scan_interval=0.2)
    config.harmonise = [{"name": "new UIDs for Imperial", "destination": ["RYJ"], "uids": "new"}]
    peer = commitment_peer(mode="same")
    hub = start_hub(config)
    register_hospitals(hub, dest_port=peer.port)
    add_node(hub.db, "IMPERIAL_PACS", "RYJPACS", "127.0.0.1", peer.port, "RYJ", update=True, confirm="commitment")
    hub.nodes.invalidate()
    files = make_study(tmp_path / "s", instances_per_series=3)
    from pydicom import dcmread

    original = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 3
    wait_until(lambda: _state(hub) == "confirmed", message="confirmed under the new UIDs")
    assert len(peer.stored) == 3 and not set(peer.stored) & original  # the destination got other UIDs
    assert sorted(peer.actions[0][1]) == sorted(peer.stored) and len(peer.actions) == 1
