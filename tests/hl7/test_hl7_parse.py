"""Parsing the sample ORU messages and building ACKs and forwarded ORUs."""

from __future__ import annotations

import pytest

from hl7tools import sample
from imex.hl7 import build
from imex.hl7.client import read_answer
from imex.hl7.parse import HL7Error, HL7Reject, parse_oru, parse_time


def test_v23_final_with_ndl_interpreter():
    r = parse_oru(sample("oru_v23_final.hl7"))
    assert (r.header.version, r.status, r.accession_number, r.patient_id) == ("2.3", "final", "RJZACC1001", "K1234567")
    assert r.clinician == "HALL, ROBERT (4567)"
    assert r.text.splitlines() == [
        "CT chest with contrast.",
        "No pulmonary embolus. No consolidation.",
        "Conclusion: normal study.",
    ]
    assert r.observed_at.isoformat() == "2026-11-25T10:14:00"


def test_v24_multi_obx_preliminary_and_observer():
    r = parse_oru(sample("oru_v24_multi_obx.hl7"))
    assert r.status == "preliminary"
    assert len(r.text.splitlines()) == 3
    assert r.clinician == "OKAFOR, NGOZI (889)"
    assert r.observed_at.isoformat() == "2026-11-25T10:00:00"  # OBR-7 (no OBR-22); +0000 on MSH-7 only


def test_v251_escapes_repeats_and_z_segments():
    r = parse_oru(sample("oru_v251_escaped.hl7"))
    assert r.text.splitlines()[0] == "Effusion & soft tissue swelling; joint space 3|4 mm ^ see prior \\ compare."
    assert r.text.splitlines()[1:] == ["No fracture.", "Follow-up in 6 weeks."]  # repeated OBX-5
    assert r.nhs_number == "9434765919" and r.patient_id == "K7654321"  # repeated PID-3, NHS by NH type
    assert r.patient_name == "O'BRIEN^SEAN"  # first of the repeated names
    assert r.study_uid == "1.2.826.0.1.3680043.10.1234.2002"  # ZDS
    assert set(r.z_segments) == {"ZDS", "ZPI"}


@pytest.mark.parametrize("name,status", [("oru_v251_corrected.hl7", "corrected"), ("oru_v23_addendum.hl7", "addendum")])
def test_statuses(name, status):
    assert parse_oru(sample(name)).status == status


@pytest.mark.parametrize(
    "name,error",
    [
        ("adt_a01.hl7", HL7Reject),
        ("oru_v22.hl7", HL7Reject),
        ("oru_no_accession.hl7", HL7Error),
        ("oru_bad_status.hl7", HL7Error),
    ],
)
def test_refused(name, error):
    with pytest.raises(error):
        parse_oru(sample(name))


@pytest.mark.parametrize("data", [b"", b"garbage", b"PID|1||X", b"MSH|", b"\x00\xff" * 100])
def test_no_msh_is_rejected(data):
    with pytest.raises(HL7Reject):
        parse_oru(data)


def test_ack_echoes_control_id_and_error():
    header = parse_oru(sample("oru_v24_multi_obx.hl7")).header
    answer = read_answer(build.ack(header, "AE", "unknown sender", "204"))
    assert answer.code == "AE" and "unknown sender" in answer.text
    assert b"MSA|AE|RYJ-77|" in answer.raw and b"ACK^R01" in answer.raw


def test_built_oru_parses_back():
    identity = build.Identity(
        "943 476 5919".replace(" ", ""), "NHS", "9434765919", "RJZ-ACC|1", "KNIGHT^ANNA", "19650412", "F"
    )
    data = build.oru(
        identity=identity,
        sending_facility="RJZ",
        receiving_app="RADIS",
        receiving_facility="RYJ",
        status="corrected",
        text="Line & one\nLine ^ two",
        clinician="HALL, ROBERT (4567)",
        observed_at=parse_time("20261125101400"),
        study_uid="1.2.3",
        procedure="CT CHEST",
        control="C1",
        supersedes="C0",
    )
    r = parse_oru(data)
    assert (r.status, r.accession_number, r.nhs_number, r.study_uid) == (
        "corrected",
        "RJZ-ACC|1",
        "9434765919",
        "1.2.3",
    )
    assert r.text == "Line & one\nLine ^ two"
    assert r.clinician == "HALL, ROBERT (4567)"
    assert r.z_segments["ZIX"] == "ZIX|SUPERSEDES|C0"


@pytest.mark.parametrize("missing", ["PID", "OBR"])
def test_missing_segment_is_named(missing):
    data = b"\r".join(s for s in sample("oru_v23_final.hl7").split(b"\r") if not s.startswith(missing.encode()))
    with pytest.raises(HL7Error, match=f"no {missing} segment"):
        parse_oru(data)
