"""PostgreSQL: the hub on a real server, and two `imex serve` processes sharing one database and one
blob store, each transfer delivered exactly once (runs when IMEX_TEST_POSTGRES is set)."""

from __future__ import annotations

from collections import Counter

import pytest
from pydicom import dcmread
from sqlalchemy import create_engine, text

import peers
from hubtools import (
    fast_config,
    register_hospitals,
    sop_uids,
    transfer_states,
    wait_until,
    write_toml,
)
from imex.samples import make_study

pytestmark = pytest.mark.postgres


def test_route_and_deliver_on_postgres(make_config, start_hub, storescp, postgres_url, tmp_path):
    dest = storescp("RYJPACS")
    hub = start_hub(make_config(database__url=postgres_url))
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(tmp_path / "s", series=2, instances_per_series=4)

    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0] * 8

    assert sorted(dest.wait_for(8) and dest.sop_uids()) == sop_uids(files)
    wait_until(lambda: transfer_states(hub) == [("delivered", 8, 8)], message="delivery")


def test_two_processes_share_the_queue_and_deliver_each_transfer_once(storescp, hub_process, postgres_url, tmp_path):
    dest = storescp("RYJPACS", unique_filenames=True)  # a duplicate delivery would be a second file
    institutions = [{"ods": "RJZ", "name": "King's"}, {"ods": "RYJ", "name": "Imperial"}]
    nodes = [
        {
            "name": "KINGS_PACS",
            "ae_title": "STORESCU",
            "host": "127.0.0.1",
            "port": 11112,
            "institution": "RJZ",
            "destination": False,
        },
        {
            "name": "IMPERIAL_PACS",
            "ae_title": "RYJPACS",
            "host": "127.0.0.1",
            "port": dest.port,
            "institution": "RYJ",
            "max_associations": 4,
        },
    ]
    shared = {"database.url": postgres_url, "store.path": str(tmp_path / "blobs"), "delivery.workers": 3}
    hubs = []
    for name in ("a", "b"):
        config = fast_config(tmp_path / name, **shared)
        hubs.append(
            (
                config,
                hub_process(
                    write_toml(tmp_path / f"{name}.toml", config, institutions=institutions, nodes=nodes), name=name
                ),
            )
        )

    studies = [
        make_study(tmp_path / f"study{i}", instances_per_series=5, rows=64, columns=64, patient_id=f"P{i:03d}")
        for i in range(12)
    ]
    for i, files in enumerate(studies):
        config = hubs[i % 2][0]  # alternate the receiving process
        assert peers.storescu(files, config["dicom.port"], "RYJ", "STORESCU").statuses == [0] * 5

    engine = create_engine(postgres_url)

    def states() -> list[str]:
        with engine.connect() as conn:
            return [s for (s,) in conn.execute(text("SELECT state FROM transfers"))]

    wait_until(lambda: states() == ["delivered"] * 12, timeout=90, message="12 deliveries")
    received = dest.wait_for(60)
    uids = Counter(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in received)
    assert len(received) == 60 and set(uids.values()) == {1}, "an instance was delivered twice"
    assert sorted(uids) == sorted(u for files in studies for u in sop_uids(files))
    with engine.connect() as conn:
        claims = conn.execute(
            text("SELECT transfer_id, count(*) FROM transfer_events WHERE event = 'sending' GROUP BY transfer_id")
        ).all()
        workers = {
            d.split(" by ")[1].rsplit("/", 1)[0]
            for (d,) in conn.execute(text("SELECT detail FROM transfer_events WHERE event = 'sending'"))
        }
    assert all(n == 1 for _, n in claims) and len(claims) == 12  # each claimed once
    assert len(workers) == 2, f"both processes should have delivered some transfers, saw {workers}"
    engine.dispose()
