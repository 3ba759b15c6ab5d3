"""Nothing lost: `imex serve` killed with SIGKILL mid-transfer and mid-receive, then restarted."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import peers
from hubtools import fast_config, sop_uids, wait_until, write_toml
from imex.samples import make_study
from imex.store import BlobStore

INSTITUTIONS = [{"ods": "RJZ", "name": "King's College Hospital"}, {"ods": "RYJ", "name": "Imperial"}]


def _nodes(dest_port: int) -> list[dict]:
    return [
        {
            "name": "KINGS_PACS",
            "ae_title": "STORESCU",
            "host": "127.0.0.1",
            "port": 11112,
            "institution": "RJZ",
            "destination": False,
        },
        {"name": "IMPERIAL_PACS", "ae_title": "RYJPACS", "host": "127.0.0.1", "port": dest_port, "institution": "RYJ"},
    ]


def _query(db_path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_kill_9_mid_transfer_resumes_and_sends_nothing_twice(storescp, hub_process, tmp_path):
    dest = storescp("RYJPACS", unique_filenames=True)  # a re-sent instance shows as a second file
    config = fast_config(tmp_path / "data", **{"delivery.workers": 1})
    path = write_toml(tmp_path / "imex.toml", config, institutions=INSTITUTIONS, nodes=_nodes(dest.port))
    db_path = config.data_dir / "imex.db"
    files = make_study(tmp_path / "study", series=2, instances_per_series=200, rows=256, columns=256)

    hub = hub_process(path)
    assert peers.storescu(files, config["dicom.port"], "RYJ", "STORESCU").statuses == [0] * 400

    # kill as soon as delivery is under way, well before it ends
    wait_until(
        lambda: _query(db_path, "SELECT 1 FROM transfers WHERE state='sending' AND instances_sent >= 20"),
        timeout=60,
        interval=0.01,
        message="delivery in progress",
    )
    hub.kill()
    sent_before = _query(db_path, "SELECT instances_sent FROM transfers")[0][0]
    assert 20 <= sent_before < 400, "the kill must land mid-transfer"

    hub_process(path, name="hub-restarted")

    wait_until(
        lambda: _query(db_path, "SELECT state FROM transfers") == [("delivered",)],
        timeout=90,
        message="delivery resumed after restart",
    )
    received = dest.wait_for(400)
    uids = [u for u in (peers_uid(p) for p in received)]
    assert sorted(set(uids)) == sop_uids(files)  # every instance arrived
    assert len(uids) - len(set(uids)) <= 1  # at most the one in flight was sent twice
    events = [e for (e,) in _query(db_path, "SELECT event FROM transfer_events ORDER BY id")]
    assert "resumed" in events and events[-1] == "delivered"


def peers_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_kill_9_mid_receive_loses_no_acknowledged_instance(storescp, hub_process, tmp_path):
    dest = storescp("RYJPACS")
    config = fast_config(tmp_path / "data")
    path = write_toml(tmp_path / "imex.toml", config, institutions=INSTITUTIONS, nodes=_nodes(dest.port))
    db_path = config.data_dir / "imex.db"
    files = make_study(tmp_path / "study", instances_per_series=300, rows=256, columns=256)

    hub = hub_process(path)
    import subprocess

    push_log = open(tmp_path / "storescu.log", "wb")  # a file, not a pipe: -d output would fill a pipe
    push = subprocess.Popen(
        [
            "storescu",
            "-d",
            "-nh",
            "-aet",
            "STORESCU",
            "-aec",
            "RYJ",
            "127.0.0.1",
            str(config["dicom.port"]),
            *map(str, files),
        ],
        env=peers.peer_env(),
        stdout=push_log,
        stderr=subprocess.STDOUT,
    )
    wait_until(
        lambda: db_path.exists() and _query(db_path, "SELECT count(*) FROM instances")[0][0] >= 30,
        interval=0.01,
        message="receiving under way",
    )
    hub.kill()
    push.wait(timeout=60)
    push_log.close()
    output = (tmp_path / "storescu.log").read_text(errors="replace")
    acknowledged = {uid for uid, status in peers.parse_store_responses(output) if status == 0 and uid}
    indexed = {uid for (uid,) in _query(db_path, "SELECT sop_uid FROM instances")}
    assert acknowledged <= indexed, "an instance the hub acknowledged is missing from its index"
    assert 30 <= len(indexed) < 300
    # every indexed instance has its whole file in the blob store
    for key, size in _query(db_path, "SELECT blob_key, size FROM instances"):
        assert BlobStore(config.store_path).path(key).stat().st_size == size

    hub_process(path, name="hub-restarted")
    # the sending PACS retries the whole study, as PACS do after a failed association
    assert peers.storescu(files, config["dicom.port"], "RYJ", "STORESCU").statuses == [0] * 300

    wait_until(
        lambda: _query(db_path, "SELECT state, instances_sent FROM transfers") == [("delivered", 300)],
        timeout=90,
        message="delivery after restart",
    )
    assert sorted(dest.sop_uids()) == sop_uids(files)
    time.sleep(0.1)
