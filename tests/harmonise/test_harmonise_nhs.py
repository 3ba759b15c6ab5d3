"""NHS number check digit, normalisation and discovery in a dataset."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imex.harmonise import nhs


@pytest.mark.parametrize("value", ["9434765919", "4010232137", "943 476 5919", "943-476-5919", " 9434765919 "])
def test_valid_numbers(value):
    assert nhs.is_valid(value)
    assert nhs.normalise(value) in ("9434765919", "4010232137")


@pytest.mark.parametrize(
    "value, why",
    [
        ("9434765918", "check digit"),  # last digit wrong
        ("9434765910", "check digit"),
        ("1000000002", "check digit"),  # remainder 1: check digit would be 10, never valid
        ("943476591", "9 digits"),  # wrong length
        ("94347659190", "11 digits"),
        ("0000000000", "repeats one digit"),  # all the same digit (1111111111 even passes the check digit)
        ("1111111111", "repeats one digit"),
        ("9999999999", "repeats one digit"),
        ("94347A5919", "not all digits"),
        ("٩٤٣٤٧٦٥٩١٩", "not all digits"),  # Arabic-Indic digits are digits to Python, not to the NHS
        ("", "empty"),
    ],
)
def test_invalid_numbers(value, why):
    assert not nhs.is_valid(value)
    assert why in (nhs.problem(value) or "")


def test_check_digit_of_remainder_zero_is_zero():
    # 10*1 + 9*0 + ... : choose nine digits whose weighted sum is a multiple of 11
    first_nine = next(
        f"{n:09d}"
        for n in range(100000000, 100010000)
        if sum(int(d) * w for d, w in zip(f"{n:09d}", range(10, 1, -1), strict=False)) % 11 == 0
    )
    assert nhs.check_digit(first_nine) == 0
    assert nhs.is_valid(first_nine + "0")


def _ds(patient_id: str = "K1", issuer: str | None = None, others: list[tuple[str, str]] = ()) -> Dataset:
    ds = Dataset()
    ds.PatientID = patient_id
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    items = []
    for value, other_issuer in others:
        item = Dataset()
        item.PatientID = value
        item.IssuerOfPatientID = other_issuer
        items.append(item)
    if items:
        ds.OtherPatientIDsSequence = Sequence(items)
    return ds


def test_discovery_in_patient_id_with_nhs_or_no_issuer():
    assert nhs.discover(_ds("943 476 5919", "NHS")) == nhs.Found("9434765919", "PatientID")
    assert nhs.discover(_ds("9434765919")) == nhs.Found("9434765919", "PatientID")
    assert nhs.discover(_ds("9434765919", "RJZ")) is None  # a local ID that happens to look like one


def test_discovery_in_other_patient_ids_needs_nhs_issuer():
    found = nhs.discover(_ds("K1", "RJZ", [("X9", "RJZ"), ("9434765919", "NHS")]))
    assert found == nhs.Found("9434765919", "OtherPatientIDsSequence[1]")
    assert nhs.discover(_ds("K1", "RJZ", [("9434765919", "RJZ")])) is None
    item = Dataset()
    item.PatientID = "4010232137"
    qualifier = Dataset()
    qualifier.UniversalEntityID = "2.16.840.1.113883.2.1.4.1"
    item.IssuerOfPatientIDQualifiersSequence = Sequence([qualifier])
    ds = _ds("K1", "RJZ")
    ds.OtherPatientIDsSequence = Sequence([item])
    assert nhs.discover(ds).number == "4010232137"


def test_invalid_number_is_reported_and_a_valid_one_wins():
    bad = nhs.discover(_ds("9434765918", "NHS"))
    assert bad is not None and bad.number == "9434765918" and "check digit" in bad.problem
    both = nhs.discover(_ds("9434765918", "NHS", [("4010232137", "NHS")]))
    assert both == nhs.Found("4010232137", "OtherPatientIDsSequence[0]")


def test_discovery_in_a_configured_attribute():
    ds = _ds("K1", "RJZ")
    ds.OtherPatientIDs = "943-476-5919"
    assert nhs.discover(ds) is None
    assert nhs.discover(ds, "OtherPatientIDs") == nhs.Found("9434765919", "OtherPatientIDs")
