"""`imex hl7 send` and `imex hl7 reports` against a running hub, and retrieval of a missing report from
a RIS that answers queries (a listener of the test's own that answers QRY^R02 with ORF^R04)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

import peers
from hl7tools import DATA, register_ris, sample
from hubtools import register_hospitals, wait_until, write_toml
from imex.db.models import report_queries, reports
from imex.hl7.build import DEFAULT_QUERY, ack
from imex.hl7.mllp import MllpListener
from imex.hl7.parse import read_header
from imex.samples import make_study


def _imex(*args: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imex.cli", "--config", str(config), *args], capture_output=True, text=True, timeout=120
    )


def test_send_and_reports_commands(make_config, start_hub, storescp, tmp_path):
    dest = storescp("RYJPACS")
    config = make_config()
    hub = start_hub(config)
    register_hospitals(hub, dest_port=dest.port)
    register_ris(hub)
    toml = write_toml(tmp_path / "imex.toml", config)
    out = _imex("hl7", "send", str(DATA / "oru_v23_final.hl7"), "--to", f"127.0.0.1:{hub.reports.port}", config=toml)
    assert out.returncode == 0, out.stderr
    assert "MSA|AA|RJZ0001" in out.stdout
    out = _imex("hl7", "send", str(DATA / "adt_a01.hl7"), "--to", f"127.0.0.1:{hub.reports.port}", config=toml)
    assert out.returncode == 1 and "MSA|AR|RJZ0005" in out.stdout

    files = make_study(tmp_path / "s", instances_per_series=1, patient_id="K1234567", accession="RJZACC1001")
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0]
    wait_until(lambda: "final" in _imex("hl7", "reports", uid, config=toml).stdout, message="report attached")
    shown = _imex("hl7", "reports", uid, config=toml).stdout
    assert "accession RJZACC1001" in shown and "No pulmonary embolus" in shown and "HALL, ROBERT (4567)" in shown


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request) -> str:
    return request.getfixturevalue("postgres_url") if request.param == "postgres" else ""


def test_missing_report_is_retrieved_from_the_source_ris(database_url, make_config, start_hub, storescp, tmp_path):
    queries: list[bytes] = []
    answer_with_report = {"on": False}

    def ris(data: bytes, peer: str) -> bytes:
        queries.append(data)
        if not answer_with_report["on"]:  # first: nothing yet (no report for the accession)
            return ack(read_header(data), "AA", "no report yet")
        orf = sample("oru_v23_final.hl7").replace(b"ORU^R01", b"ORF^R04").replace(b"RJZ0001", b"Q-ANSWER")
        return orf

    listener = MllpListener(ris, "127.0.0.1", 0)
    listener.start()
    try:
        dest = storescp("RYJPACS")
        hub = start_hub(
            make_config(database__url=database_url, hl7__retrieve_after_seconds=0.0, hl7__retrieve_interval_seconds=0.5)
        )
        register_hospitals(hub, dest_port=dest.port)
        register_ris(hub, dest_ris_port=listener.port, query_template=DEFAULT_QUERY)
        files = make_study(tmp_path / "s", instances_per_series=1, patient_id="K1234567", accession="RJZACC1001")
        assert peers.storescu(files, hub.listener.port, "RYJ", "STORESCU").statuses == [0]
        wait_until(lambda: len(queries) >= 1, message="a query to the source RIS")
        assert b"QRY^R02" in queries[0] and b"RJZACC1001" in queries[0]
        answer_with_report["on"] = True

        def stored():
            with hub.db.engine.connect() as conn:
                return conn.execute(select(reports.c.id)).all()

        wait_until(stored, message="the report from the query's answer stored")
        with hub.db.engine.connect() as conn:
            row = conn.execute(select(reports.c.source, reports.c.study_id, reports.c.control_id)).one()
            query = conn.execute(select(report_queries.c.state, report_queries.c.attempts)).one()
        assert row.source == "query" and row.study_id is not None and row.control_id == "Q-ANSWER"
        assert query.state == "found" and query.attempts >= 2
    finally:
        listener.stop()


def test_ris_endpoints_from_imex_toml(make_config, tmp_path):
    from imex.config import load
    from imex.db.models import ris_endpoints
    from imex.hub import Hub

    config = make_config()
    toml = write_toml(tmp_path / "imex.toml", config, institutions=[{"ods": "RJZ", "name": "King's"}])
    toml.write_text(
        toml.read_text() + '\n[[ris]]\nname = "KINGS_RIS"\ninstitution = "RJZ"\n'
        'facilities = ["RJZ", "KCH"]\nhost = "127.0.0.1"\nport = 2575\nreceiving_application = "CRIS"\n'
    )
    hub = Hub(load(toml, env={}))
    try:
        with hub.db.engine.connect() as conn:
            row = conn.execute(select(ris_endpoints)).one()
        assert (row.name, row.facilities, row.peer_host, row.port, row.receiving_application) == (
            "KINGS_RIS",
            "RJZ KCH",
            "127.0.0.1",
            2575,
            "CRIS",
        )
    finally:
        hub.db.dispose()
