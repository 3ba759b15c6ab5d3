"""NHS numbers: normalising, validating (modulus 11) and finding one in a DICOM dataset.

A destination that files studies by NHS number must never get a wrong one, so a number counts only when
its check digit holds, and a Patient ID counts as an NHS number only when its issuer says NHS (or says
nothing); in Other Patient IDs the issuer must say NHS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# What senders write as the issuer of an NHS number: names, and the HL7 OID of the NHS number.
NHS_ISSUERS = frozenset(
    {"NHS", "NHSN", "NHS NUMBER", "NHSNUMBER", "NHS_NUMBER", "NHS-NUMBER", "2.16.840.1.113883.2.1.4.1"}
)
_SEPARATORS = re.compile(r"[\s\-]")


def normalise(value: str) -> str:
    """The number without spaces and dashes (`943 476 5919` -> `9434765919`)."""
    return _SEPARATORS.sub("", str(value or ""))


def check_digit(first_nine: str) -> int | None:
    """The modulus 11 check digit of nine digits; None when the remainder makes the number unusable."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=False))
    digit = 11 - total % 11
    if digit == 11:
        return 0
    return None if digit == 10 else digit


def problem(value: str) -> str | None:
    """Why `value` is not a valid NHS number, or None when it is one."""
    number = normalise(value)
    if not number:
        return "empty"
    if not number.isdigit() or not number.isascii():
        return f"{value!r} is not all digits"
    if len(number) != 10:
        return f"{value!r} has {len(number)} digits, not 10"
    if len(set(number)) == 1:
        return f"{value!r} repeats one digit (never issued)"
    expected = check_digit(number[:9])
    if expected is None or expected != int(number[9]):
        return f"{value!r} fails the modulus 11 check digit"
    return None


def is_valid(value: str) -> bool:
    return problem(value) is None


def is_nhs_issuer(issuer: object) -> bool:
    return str(issuer or "").strip().upper() in NHS_ISSUERS


def _issuer_of(item: Dataset) -> str:
    """Issuer of Patient ID, or the Universal Entity ID of its qualifiers (which may hold the OID)."""
    issuer = str(item.get("IssuerOfPatientID", "") or "").strip()
    if issuer:
        return issuer
    for qualifier in item.get("IssuerOfPatientIDQualifiersSequence", []) or []:
        uid = str(qualifier.get("UniversalEntityID", "") or "").strip()
        if uid:
            return uid
    return ""


@dataclass(frozen=True)
class Found:
    """An NHS number found in a dataset: `number` normalised when valid; `problem` when one is there but
    invalid (a destination that requires NHS numbers must not get it)."""

    number: str
    where: str
    problem: str | None = None


def discover(ds: Dataset, attribute: str | None = None) -> Found | None:
    """The NHS number of a dataset: a configured attribute first, then Patient ID (issuer NHS or none),
    then Other Patient IDs Sequence items whose issuer is NHS. A valid number wins over an invalid one;
    None when there is no candidate at all."""
    candidates: list[tuple[str, str]] = []
    if attribute:
        value = ds.get(attribute)  # a keyword: the value (several for a multi-valued attribute)
        values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
        candidates += [(str(v), attribute) for v in values if v not in (None, "")]
    patient_id = str(ds.get("PatientID", "") or "")
    issuer = _issuer_of(ds)
    if patient_id and (is_nhs_issuer(issuer) or (not issuer and is_valid(patient_id))):
        candidates.append((patient_id, "PatientID"))
    for index, item in enumerate(ds.get("OtherPatientIDsSequence", []) or []):
        other = str(item.get("PatientID", "") or "")
        if other and is_nhs_issuer(_issuer_of(item)):
            candidates.append((other, f"OtherPatientIDsSequence[{index}]"))
    invalid: Found | None = None
    for value, where in candidates:
        why = problem(value)
        if why is None:
            return Found(normalise(value), where)
        invalid = invalid or Found(normalise(value), where, why)
    return invalid
