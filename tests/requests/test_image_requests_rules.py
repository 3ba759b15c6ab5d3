"""Match rules for arriving studies and the request form's checks, as pure functions."""

from __future__ import annotations

import pytest

from imex.requests.lifecycle import RequestForm
from imex.requests.matching import Arrival, Wanted, match_reason, normalise_name

NHS = "9434765919"


def arrival(**kw: object) -> Arrival:
    base = dict(
        study_uid="1.2.3",
        patient_id=NHS,
        issuer="",
        patient_name="DOE^JANE",
        birth_date="19700101",
        accession="ACC1",
        modalities=("CT",),
        study_date="20240110",
    )
    base.update(kw)
    return Arrival(**base)  # type: ignore[arg-type]


def test_nhs_number_matches_as_patient_id_or_other_id_whatever_its_spacing():
    assert match_reason(Wanted(nhs_number="943 476 5919"), arrival()) == "NHS number"
    assert match_reason(Wanted(nhs_number=NHS), arrival(patient_id="K123", other_patient_ids=(NHS,))) == "NHS number"
    # a local ID issued by someone else is not an NHS number even when the digits agree
    assert match_reason(Wanted(nhs_number=NHS), arrival(issuer="RJZ-PAS")) is None
    assert match_reason(Wanted(nhs_number="9434765870"), arrival()) is None


def test_name_and_birth_date_must_both_agree_exactly_after_normalising():
    assert normalise_name("doe ^ jane^^") == "DOE^JANE"
    wanted = Wanted(patient_name="Doe^Jane", birth_date="19700101")
    assert match_reason(wanted, arrival(patient_id="K1")) == "name and date of birth"
    assert match_reason(wanted, arrival(patient_id="K1", birth_date="19700102")) is None
    assert match_reason(wanted, arrival(patient_id="K1", patient_name="DOE^JANET")) is None
    assert match_reason(Wanted(patient_name="Doe^Jane"), arrival(patient_id="K1")) is None  # name alone: never


def test_accession_and_study_uid_match_the_study_asked_for():
    assert match_reason(Wanted(accession="ACC1"), arrival(patient_id="K1")) == "accession number"
    assert match_reason(Wanted(study_uid="1.2.3"), arrival(patient_id="K1")) == "study UID"


@pytest.mark.parametrize(
    "wanted",
    [
        Wanted(nhs_number=NHS, modality="MR"),
        Wanted(nhs_number=NHS, date_from="20240111"),
        Wanted(nhs_number=NHS, date_to="20240109"),
    ],
)
def test_outside_the_modality_or_dates_asked_for_is_no_match(wanted: Wanted):
    assert match_reason(wanted, arrival()) is None


def test_inside_the_modality_and_dates_matches():
    assert (
        match_reason(Wanted(nhs_number=NHS, modality="ct", date_from="20240101", date_to="20240131"), arrival())
        == "NHS number"
    )
    assert match_reason(Wanted(nhs_number=NHS, date_from="20240101"), arrival(study_date="")) is None


def test_the_form_says_what_is_wrong():
    ok = RequestForm(source_ods="RJZ", nhs_number=NHS, reason="follow-up")
    assert ok.problems() == []
    assert any("modulus 11" in p for p in RequestForm(source_ods="RJZ", nhs_number="9434765918", reason="x").problems())
    assert any(
        "NHS number, or their name" in p
        for p in RequestForm(source_ods="RJZ", patient_name="DOE^JANE", reason="x").problems()
    )
    assert RequestForm(source_ods="RJZ", patient_name="DOE^JANE", birth_date="19700101", reason="x").problems() == []
    assert any(
        "YYYYMMDD" in p
        for p in RequestForm(source_ods="RJZ", nhs_number=NHS, birth_date="19701301", reason="x").problems()
    )
    assert any(
        "ends before" in p
        for p in RequestForm(
            source_ods="RJZ", nhs_number=NHS, date_from="20240201", date_to="20240101", reason="x"
        ).problems()
    )
    assert any("reason" in p for p in RequestForm(source_ods="RJZ", nhs_number=NHS).problems())
    assert any(
        "priority" in p for p in RequestForm(source_ods="RJZ", nhs_number=NHS, reason="x", urgency="asap").problems()
    )
