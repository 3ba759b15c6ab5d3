"""A hub killed with SIGKILL while a Storage Commitment request is outstanding asks again after restart,
and the transfer still reaches `confirmed`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import peers
from hubtools import fast_config, wait_until, write_toml
from imex.samples import make_study

INSTITUTIONS = [{"ods": "RJZ", "name": "King's College Hospital"}, {"ods": "RYJ", "name": "Imperial"}]


def _query(db_path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_kill_9_while_waiting_for_the_report_asks_again(commitment_peer, hub_process, tmp_path):
    # the hub waits long on the same association; the destination stays silent on the first request
    config = fast_config(tmp_path / "data", **{"confirm.wait_seconds": 120.0, "confirm.scan_interval": 0.2})
    peer = commitment_peer(mode="new", silent=1, hub=(config["dicom.ae_title"], "127.0.0.1", config["dicom.port"]))
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
            "port": peer.port,
            "institution": "RYJ",
            "confirm": "commitment",
        },
    ]
    path = write_toml(tmp_path / "imex.toml", config, institutions=INSTITUTIONS, nodes=nodes)
    db_path = config.data_dir / "imex.db"
    files = make_study(tmp_path / "s", instances_per_series=3)

    hub = hub_process(path)
    assert peers.storescu(files, config["dicom.port"], "RYJ", "STORESCU").statuses == [0] * 3
    wait_until(lambda: peer.actions, timeout=60, message="the first commitment request")
    assert _query(db_path, "SELECT state, asks FROM commitment_requests") == [("asking", 1)]
    hub.kill()
    assert _query(db_path, "SELECT state FROM transfers") == [("delivered",)]

    hub_process(path, name="hub-restarted")
    wait_until(
        lambda: _query(db_path, "SELECT state FROM transfers") == [("confirmed",)],
        timeout=60,
        message="confirmed after restart",
    )
    assert len(peer.actions) == 2 and peer.actions[0][0] != peer.actions[1][0]  # a new Transaction UID
    events = [e for (e,) in _query(db_path, "SELECT event FROM transfer_events ORDER BY id")]
    assert "confirm-resumed" in events and events[-1] == "confirmed"
    assert sorted(peer.stored) == sorted(peer.actions[1][1])  # nothing was sent twice
    # the first, abandoned transaction is unknown now: a late answer to it changes nothing
    from commitpeer import send_report

    _, ds = peer.report_dataset(peer.actions[0][0], [("1.2.840.10008.5.1.4.1.1.2", u) for u in peer.stored])
    status = send_report("RYJPACS", (config["dicom.ae_title"], "127.0.0.1", config["dicom.port"]), ds, 1)
    assert int(status.Status) == 0x0115
