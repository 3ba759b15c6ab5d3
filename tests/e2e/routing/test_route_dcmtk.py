"""Push with dcmtk storescu, deliver to dcmtk storescp: the router's main path with real peers."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.samples import make_study


def _pixels_by_uid(paths: list[Path]) -> dict[str, bytes]:
    out = {}
    for p in paths:
        ds = dcmread(p)
        out[ds.SOPInstanceUID] = ds.PixelData
    return out


def test_multi_series_study_reaches_destination_byte_identical(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config())
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(tmp_path / "study", series=3, instances_per_series=5, rows=128, columns=128)

    result = peers.storescu(files, hub.listener.port, "RYJ", "STORESCU")

    assert result.statuses == [0] * 15, result.output[-2000:]
    received = dest.wait_for(15)
    assert _pixels_by_uid(received) == _pixels_by_uid(files)
    wait_until(lambda: transfer_states(hub) == [("delivered", 15, 15)], message="transfer delivered")
