"""Delivery under trouble: a destination that is down, one that refuses compressed transfer syntaxes,
retries with backoff, giving up, operator retry and cancel."""

from __future__ import annotations

import numpy as np
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    RLELossless,
)
from sqlalchemy import select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import Transfer, TransferEvent
from imex.routing import queue
from imex.samples import compress_jpeg_lossless, compress_rle, make_study


def _events(hub) -> list[str]:
    with hub.db.session() as s:
        return list(s.scalars(select(TransferEvent.event).order_by(TransferEvent.id)))


def test_destination_down_then_up_is_delivered_after_retries(make_config, start_hub, storescp, tmp_path):
    port = peers.free_port()
    hub = start_hub(make_config(delivery__max_attempts=50))
    register_hospitals(hub, dest_port=port)
    files = make_study(tmp_path / "s", instances_per_series=4)

    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 4
    wait_until(lambda: _events(hub).count("retry-scheduled") >= 2, message="two failed attempts")
    with hub.db.session() as s:
        t = s.scalar(select(Transfer))
        assert t.state in ("pending", "sending") and t.attempts >= 2
        assert "cannot connect" in (t.last_error or "") or "refused" in (t.last_error or "")

    dest = storescp("RYJPACS", port=port)

    assert len(dest.wait_for(4)) == 4
    wait_until(lambda: transfer_states(hub) == [("delivered", 4, 4)], message="delivery once up")


def _decoded_pixels(path) -> np.ndarray:
    return dcmread(path).pixel_array


def test_refused_compressed_syntax_is_delivered_decompressed(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS", accept_all=False)  # uncompressed transfer syntaxes only
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    originals = make_study(tmp_path / "s", instances_per_series=2, rows=64, columns=64)
    rle = compress_rle(originals[:1], tmp_path / "rle")
    jpeg = compress_jpeg_lossless(originals[1:], tmp_path / "jpeg")
    assert dcmread(rle[0]).file_meta.TransferSyntaxUID == RLELossless
    assert dcmread(jpeg[0]).file_meta.TransferSyntaxUID == JPEGLosslessSV1

    assert peers.storescu(rle, hub.listener.port, "RYJ", "STORESCU", extra_args=["-xr"]).statuses == [0]
    assert peers.storescu(jpeg, hub.listener.port, "RYJ", "STORESCU", extra_args=["-xs"]).statuses == [0]

    received = dest.wait_for(2)
    wait_until(lambda: [s for s, *_ in transfer_states(hub)] == ["delivered"], message="delivery")
    by_uid = {dcmread(p).SOPInstanceUID: p for p in received}
    for original in originals:
        ds = dcmread(original)
        arrived = dcmread(by_uid[ds.SOPInstanceUID])
        assert arrived.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        assert np.array_equal(arrived.pixel_array, ds.pixel_array)  # lossless all the way


def test_compressed_instance_is_forwarded_as_stored_when_accepted(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS", accept_all=True)
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    rle = compress_rle(make_study(tmp_path / "s", instances_per_series=2), tmp_path / "rle")

    assert peers.storescu(rle, hub.listener.port, "RYJ", "STORESCU", extra_args=["-xr"]).statuses == [0, 0]

    received = dest.wait_for(2)
    sent = {dcmread(p).SOPInstanceUID: dcmread(p).PixelData for p in rle}
    for path in received:
        ds = dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == RLELossless
        assert ds.PixelData == sent[ds.SOPInstanceUID]  # the same compressed bytes, not re-encoded


def test_gives_up_after_max_attempts_then_operator_retry_delivers(make_config, start_hub, storescp, tmp_path):
    port = peers.free_port()
    hub = start_hub(make_config(delivery__max_attempts=2))
    register_hospitals(hub, dest_port=port)
    files = make_study(tmp_path / "s", instances_per_series=3)

    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 3
    wait_until(lambda: [s for s, *_ in transfer_states(hub)] == ["failed"], message="failure")
    with hub.db.session() as s:
        t = s.scalar(select(Transfer))
        assert t.attempts == 2 and t.last_error
    assert _events(hub)[-1] == "failed"

    dest = storescp("RYJPACS", port=port)
    queue.retry(hub.db, t.id)

    assert len(dest.wait_for(3)) == 3
    wait_until(lambda: transfer_states(hub) == [("delivered", 3, 3)], message="delivery after retry")


def test_cancelled_transfer_is_not_sent(make_config, start_hub, storescp, tmp_path):
    port = peers.free_port()
    hub = start_hub(make_config(delivery__max_attempts=50))
    register_hospitals(hub, dest_port=port)
    files = make_study(tmp_path / "s", instances_per_series=2)
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 2
    wait_until(lambda: transfer_states(hub), message="a transfer")
    with hub.db.session() as s:
        tid = s.scalar(select(Transfer.id))

    queue.cancel(hub.db, tid)
    dest = storescp("RYJPACS", port=port)

    import time

    time.sleep(2.0)
    assert dest.files() == []
    assert [s for s, *_ in transfer_states(hub)] == ["cancelled"]


def test_destination_concurrency_limit_is_respected(make_config, start_hub, storescp, tmp_path):
    from imex.directory import add_node

    dest = storescp("RYJPACS")
    hub = start_hub(make_config(delivery__workers=4, routing__stable_seconds=1.0))
    register_hospitals(hub, dest_port=dest.port)
    add_node(hub.db, "IMPERIAL_PACS", "RYJPACS", "127.0.0.1", dest.port, "RYJ", max_associations=1, update=True)
    studies = [
        make_study(tmp_path / f"s{i}", instances_per_series=40, rows=256, columns=256, patient_id=f"P{i}")
        for i in range(4)
    ]
    for files in studies:
        assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 40

    wait_until(lambda: transfer_states(hub) == [("delivered", 40, 40)] * 4, timeout=60, message="4 deliveries")
    with hub.db.session() as s:
        rows = s.execute(
            select(TransferEvent.transfer_id, TransferEvent.event, TransferEvent.at)
            .where(TransferEvent.event.in_(["sending", "delivered"]))
            .order_by(TransferEvent.id)
        ).all()
    running = 0
    for _, event, _ in rows:  # events in commit order: a second 'sending' before a 'delivered' is overlap
        running += 1 if event == "sending" else -1
        assert running <= 1, "two transfers were sent to the same destination at once"
    assert len(dest.wait_for(160)) == 160
