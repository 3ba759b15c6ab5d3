"""The hub's MLLP listener over real TCP: the sample messages from our client and from python-hl7's
mllp_send (a client that is not ours), and bad input that must not stop the listener or corrupt rows."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from hl7tools import register_ris, sample, variant
from hubtools import register_hospitals
from imex.db.models import reports
from imex.hl7 import client
from imex.hl7.mllp import frame


@pytest.fixture
def hub(make_config, start_hub):
    hub = start_hub(make_config(hl7__max_message_bytes=1_000_000))
    register_hospitals(hub, dest_port=11112)
    register_ris(hub)
    return hub


def _count(hub) -> int:
    with hub.db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(reports)).scalar_one()


def _rows(hub):
    with hub.db.engine.connect() as conn:
        return conn.execute(select(reports).order_by(reports.c.id)).all()


def _raw(port: int, data: bytes, *, shutdown: bool = False) -> bytes:
    """Send raw bytes and read until the peer closes or answers one frame."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        out = b""
        while b"\x1c\r" not in out:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return out


def test_samples_over_our_client(hub):
    port = hub.reports.port
    expected = {
        "oru_v23_final.hl7": "AA",
        "oru_v24_multi_obx.hl7": "AE",  # RYJ is no sender here
        "oru_v251_escaped.hl7": "AA",
        "oru_v251_corrected.hl7": "AA",
        "oru_v23_addendum.hl7": "AA",
        "adt_a01.hl7": "AR",
        "oru_v22.hl7": "AR",
        "oru_no_accession.hl7": "AE",
        "oru_bad_status.hl7": "AE",
    }
    for name, code in expected.items():
        answer = client.send("127.0.0.1", port, sample(name))
        assert answer.code == code, (name, answer.text)
    rows = _rows(hub)
    assert [r.control_id for r in rows] == ["RJZ0001", "RJZ0002", "RJZ0003", "RJZ0004"]
    escaped = rows[1]
    assert escaped.text.startswith("Effusion & soft tissue swelling; joint space 3|4 mm ^ see prior \\ compare.")
    assert escaped.nhs_number == "9434765919" and escaped.study_uid.endswith(".2002")
    # versions of RJZACC1001: final, corrected, addendum; only the addendum is current
    versions = [(r.status, r.superseded_by is not None) for r in rows if r.accession_number == "RJZACC1001"]
    assert versions == [("final", True), ("corrected", True), ("addendum", False)]
    # the same message again (a lost ACK): AA, stored once
    assert client.send("127.0.0.1", port, sample("oru_v23_final.hl7")).code == "AA"
    assert _count(hub) == 4


def test_mllp_send_from_python_hl7(hub, tmp_path):
    mllp_send = shutil.which("mllp_send") or str(Path(sys.executable).with_name("mllp_send"))
    batch = tmp_path / "batch.hl7"  # two messages in one file, newline-separated as a person would write them
    batch.write_bytes(
        b"\n".join(
            [
                sample("oru_v23_final.hl7").replace(b"\r", b"\n"),
                variant("oru_v251_escaped.hl7", "RJZ0099").replace(b"\r", b"\n"),
            ]
        )
    )
    out = subprocess.run(
        [mllp_send, "--loose", "--file", str(batch), "--port", str(hub.reports.port), "127.0.0.1"],
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(b"MSA|AA|") == 2, out.stdout
    assert {r.control_id for r in _rows(hub)} == {"RJZ0001", "RJZ0099"}
    # framed input without --loose, as the tool expects by default
    framed = tmp_path / "framed.hl7"
    framed.write_bytes(frame(sample("oru_v251_corrected.hl7")))
    out = subprocess.run(
        [mllp_send, "--file", str(framed), "--port", str(hub.reports.port), "127.0.0.1"],
        capture_output=True,
        timeout=60,
    )
    assert b"MSA|AA|RJZ0003" in out.stdout, out.stdout + out.stderr


def test_bad_input_keeps_the_listener_serving(hub):
    port = hub.reports.port
    client.send("127.0.0.1", port, sample("oru_v23_final.hl7"))
    before = [tuple(r) for r in _rows(hub)]
    # garbage outside a frame: the connection is closed without an answer
    assert _raw(port, b"\x00\xffGARBAGE\r\n" * 10, shutdown=True) == b""
    # garbage inside a frame, and a frame with no MSH: AR
    assert b"MSA|AR|" in _raw(port, frame(b"\x00\x01\x02 not hl7 at all"))
    assert b"MSA|AR|" in _raw(port, frame(b"PID|1||K1234567^^^RJZ^MR\rOBR|1||X\r"))
    # wrong framing: a message without the start block, or ended without FS CR, then EOF
    assert _raw(port, sample("oru_v23_final.hl7") + b"\x1c\r", shutdown=True) == b""
    assert _raw(port, b"\x0b" + sample("oru_v23_final.hl7"), shutdown=True) == b""
    # a 50 MB message: AR naming the limit, and the connection closed
    big = variant("oru_v23_final.hl7", "RJZBIG", text="A" * (50 * 1024 * 1024))
    answer = _raw(port, frame(big))
    assert b"MSA|AR|RJZBIG|" in answer and b"exceeds the limit" in answer
    # an unknown sender (facility nobody registered): AE
    unknown = sample("oru_v23_final.hl7").replace(b"|CRIS|RJZ|", b"|CRIS|XYZ|").replace(b"RJZ0001", b"XYZ1")
    answer = client.send("127.0.0.1", port, unknown)
    assert answer.code == "AE" and "not a registered RIS" in answer.text
    # a registered facility connecting from an address other than its RIS's: AE
    from imex.reports.endpoints import add_ris

    add_ris(hub.db, "FAR_RIS", "RJZ", facilities=["FAR"], peer_host="10.255.255.1")
    far = sample("oru_v23_final.hl7").replace(b"|CRIS|RJZ|", b"|CRIS|FAR|").replace(b"RJZ0001", b"FAR1")
    answer = client.send("127.0.0.1", port, far)
    assert answer.code == "AE" and "FAR at 127.0.0.1 is not a registered RIS" in answer.text
    # an unknown accession: accepted, waiting for its study
    answer = client.send("127.0.0.1", port, variant("oru_v23_final.hl7", "RJZ0100").replace(b"RJZACC1001", b"NOSUCH9"))
    assert answer.code == "AA"
    rows = _rows(hub)
    assert [tuple(r) for r in rows[:1]] == before  # nothing stored earlier changed
    assert [(r.control_id, r.accession_number, r.study_id) for r in rows[1:]] == [("RJZ0100", "NOSUCH9", None)]
    # and the listener still serves, several messages on one connection
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(frame(variant("oru_v23_final.hl7", "RJZ0200")) + frame(variant("oru_v23_final.hl7", "RJZ0201")))
        data = b""
        while data.count(b"\x1c\r") < 2:
            data += sock.recv(65536)
    assert data.count(b"MSA|AA|") == 2


def test_report_waits_for_its_study_and_not_for_another_patients(hub, tmp_path):
    """Matching by accession and patient: a study with the accession but another Patient ID gets no report;
    the right one does when it arrives."""
    import peers
    from hubtools import wait_until
    from imex.samples import make_study

    port = hub.reports.port
    assert client.send("127.0.0.1", port, sample("oru_v23_final.hl7")).code == "AA"
    other = make_study(tmp_path / "other", instances_per_series=1, patient_id="SOMEONE9", accession="RJZACC1001")
    assert peers.storescu(other, hub.listener.port, "RYJ", "STORESCU").statuses == [0]
    wait_until(lambda: hub.reports.housekeeping() is None and _study_count(hub) == 1, message="other study indexed")
    hub.reports.housekeeping()
    assert _rows(hub)[0].study_id is None
    right = make_study(tmp_path / "right", instances_per_series=1, patient_id="K1234567", accession="RJZACC1001")
    assert peers.storescu(right, hub.listener.port, "RYJ", "STORESCU").statuses == [0]
    wait_until(lambda: _rows(hub)[0].study_id is not None, message="report attached")
    with hub.db.engine.connect() as conn:
        from imex.db.models import patients, studies

        pid = conn.execute(
            select(patients.c.patient_id)
            .join(studies, studies.c.patient_pk == patients.c.id)
            .where(studies.c.id == _rows(hub)[0].study_id)
        ).scalar_one()
    assert pid == "K1234567"


def _study_count(hub) -> int:
    from imex.db.models import studies

    with hub.db.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(studies)).scalar_one()
