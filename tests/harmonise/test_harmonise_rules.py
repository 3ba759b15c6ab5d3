"""[[harmonise]] rules: what is accepted, what is refused (with file, line and rule), and each action
applied to a dataset with its old values recorded in Original Attributes Sequence."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imex.config import ConfigError, load
from imex.harmonise.coerce import Coercion, Context
from imex.harmonise.rules import HarmoniseRule, parse

KEY = b"k" * 32


def _rules(tmp_path: Path, toml: str) -> list[HarmoniseRule]:
    path = tmp_path / "imex.toml"
    path.write_text(toml)
    config = load(path, env={})
    return parse(config.harmonise, config.path)


def test_rules_parse_with_lines(tmp_path):
    rules = _rules(
        tmp_path,
        '[dicom]\nport = 104\n\n[[harmonise]]\nname = "a"\ndestination = "RYJ"\n'
        'nhs_number = "require"\nset = { StationName = "{source_ods}" }\n\n'
        '[[harmonise]]\nname = "b"\nblank = ["ReferringPhysicianName", "0008,1010"]\n',
    )
    assert [(r.name, r.line) for r in rules] == [("a", 4), ("b", 10)]
    assert rules[0].destination == frozenset({"RYJ"}) and rules[0].set == {"StationName": "{source_ods}"}
    assert rules[1].blank == ("ReferringPhysicianName", "StationName")


@pytest.mark.parametrize(
    "body, line, message",
    [
        ('nhs_number = "maybe"', 3, "nhs_number: must be one of off, use, require"),
        ('blank = ["PatientNmae"]', 3, "blank: unknown attribute 'PatientNmae'"),
        ('set = { Rows = "2" }', 3, "set: Rows has VR US: only text attributes can be changed"),
        ('set = { SOPInstanceUID = "1.2" }', 3, 'UIDs change only with `uids = "new"`'),
        (
            'accession_prefix = "A-VERY-LONG-PREFIX-"',
            3,
            "accession_prefix: 'A-VERY-LONG-PREFIX-' is not a valid AccessionNumber",
        ),
        ('institution_name = "{hospital}"', 3, "unknown placeholder {hospital}"),
        ('map = { Modality = "NM" }', 3, "map: Modality must map old values to new ones"),
        ('uids = "fresh"', 3, "uids: must be one of keep, new"),
        ('deidentify = "yes"', 3, "deidentify: must be true or false"),
        ('destinations = ["RYJ"]', 3, "destinations: unknown key"),
        ('set = { StudyDate = "yesterday" }', 3, "'yesterday' is not a valid StudyDate"),
    ],
)
def test_bad_rules_are_refused_with_file_line_and_name(tmp_path, body, line, message):
    with pytest.raises(ConfigError) as err:
        _rules(tmp_path, f'[[harmonise]]\nname = "bad one"\n{body}\n')
    assert f"imex.toml:{line}: harmonise rule 1 ('bad one'): " in str(err.value)
    assert message in str(err.value)


def test_selectors():
    rule = HarmoniseRule(
        "r", destination=frozenset({"RYJ"}), source=frozenset({"KINGS_PACS"}), institution=frozenset({"RJZ"})
    )
    assert rule.applies(frozenset({"RYJ", "IMPERIAL_PACS"}), frozenset({"KINGS_PACS"}), "RJZ")
    assert not rule.applies(frozenset({"RRV"}), frozenset({"KINGS_PACS"}), "RJZ")
    assert not rule.applies(frozenset({"RYJ"}), frozenset({"CT1"}), "RJZ")
    assert not rule.applies(frozenset({"RYJ"}), frozenset({"KINGS_PACS"}), "RRV")
    assert HarmoniseRule("any").applies(frozenset(), frozenset(), "")


def _dataset() -> Dataset:
    ds = Dataset()
    ds.PatientID = "K123"
    ds.IssuerOfPatientID = "RJZ"
    ds.PatientName = "DOE^JANE"
    ds.PatientBirthDate = "19700101"
    ds.AccessionNumber = "A77"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.1"
    ds.SOPInstanceUID = "1.2.3.4.1.1"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.Modality = "PT"
    ds.ReferringPhysicianName = "WHO^DR"
    ds.StationName = "CT1"
    ds.StudyDescription = "CT HEAD"
    ds.InstitutionName = "Kings"
    ds.add_new(0x00091001, "LO", "private")
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = "1.2.3.9"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.PixelData = b"\x01\x02" * 8
    return ds


def _context(**kw) -> Context:  # type: ignore[no-untyped-def]
    return Context(source_ods="RJZ", source_name="King's College Hospital", destination_ods="RYJ", key=KEY, **kw)


def _originals(ds: Dataset) -> Dataset:
    [item] = ds.OriginalAttributesSequence
    assert item.ReasonForTheAttributeModification == "COERCE" and item.ModifyingSystem == "IMEX"
    assert item.SourceOfPreviousValues == "RJZ"
    return item.ModifiedAttributesSequence[0]


def test_nhs_number_replaces_patient_id_and_keeps_local_id():
    ds = _dataset()
    changes = Coercion([HarmoniseRule("nhs", nhs_number="use")], _context(nhs_number="9434765919")).apply(ds)
    assert (ds.PatientID, ds.IssuerOfPatientID) == ("9434765919", "NHS")
    assert [(i.PatientID, i.IssuerOfPatientID) for i in ds.OtherPatientIDsSequence] == [("K123", "RJZ")]
    old = _originals(ds)
    assert (old.PatientID, old.IssuerOfPatientID) == ("K123", "RJZ")
    assert old["OtherPatientIDsSequence"].value in (None, []) or len(old.OtherPatientIDsSequence) == 0  # was absent
    assert {c.keyword for c in changes} == {"PatientID", "IssuerOfPatientID", "OtherPatientIDsSequence"}
    assert ds.PixelData == b"\x01\x02" * 8


def test_nhs_number_mode_off_changes_nothing_and_records_nothing():
    ds = _dataset()
    assert Coercion([HarmoniseRule("off")], _context(nhs_number="9434765919")).apply(ds) == []
    assert ds.PatientID == "K123" and "OriginalAttributesSequence" not in ds


def test_accession_prefix_map_institution_set_map_blank():
    rule = HarmoniseRule(
        "all",
        accession_prefix="{source_ods}-",
        institution_name="{source_name}",
        set={"StationName": "HUB-{destination_ods}"},
        map={"Modality": {"PT": "NM"}},
        blank=("ReferringPhysicianName",),
    )
    ds = _dataset()
    Coercion([rule], _context()).apply(ds)
    assert ds.AccessionNumber == "RJZ-A77"
    assert ds.InstitutionName == "King's College Hospital"
    assert ds.StationName == "HUB-RYJ" and ds.Modality == "NM" and not ds.ReferringPhysicianName
    old = _originals(ds)
    assert (old.AccessionNumber, old.InstitutionName, old.StationName, old.Modality, old.ReferringPhysicianName) == (
        "A77",
        "Kings",
        "CT1",
        "PT",
        "WHO^DR",
    )
    mapped = _dataset()
    Coercion([HarmoniseRule("m", accession_map={"A77": "B1"}, accession_prefix="X")], _context()).apply(mapped)
    assert mapped.AccessionNumber == "B1"  # a mapped value is not prefixed as well


def test_new_uids_are_consistent_and_recorded():
    rule = HarmoniseRule("uids", uids="new")
    first, second = _dataset(), _dataset()
    Coercion([rule], _context()).apply(first)
    Coercion([rule], _context()).apply(second)
    assert first.StudyInstanceUID == second.StudyInstanceUID != "1.2.3.4"
    assert first.StudyInstanceUID.startswith("2.25.")
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # standard UIDs stay
    assert first.ReferencedImageSequence[0].ReferencedSOPInstanceUID not in ("1.2.3.9", "")
    assert _originals(first).StudyInstanceUID == "1.2.3.4"
    other = _dataset()
    Coercion([rule], Context(destination_ods="RRV", key=KEY)).apply(other)
    assert other.StudyInstanceUID != first.StudyInstanceUID  # another destination, other UIDs


def test_reconciled_values_win():
    ds = _dataset()
    Coercion(
        [HarmoniseRule("nhs", nhs_number="require", accession_prefix="P")],
        _context(patient_id="RYJ555", issuer="RYJ", accession="R1"),
    ).apply(ds)
    assert (ds.PatientID, ds.IssuerOfPatientID, ds.AccessionNumber) == ("RYJ555", "RYJ", "R1")


def test_earlier_original_attributes_are_kept():
    ds = _dataset()
    Coercion([HarmoniseRule("a", set={"StationName": "ONE"})], _context()).apply(ds)
    Coercion([HarmoniseRule("b", set={"StationName": "TWO"})], _context()).apply(ds)
    assert [i.ModifiedAttributesSequence[0].StationName for i in ds.OriginalAttributesSequence] == ["CT1", "ONE"]


def test_deidentify_basic_profile_with_stable_pseudonym():
    rule = HarmoniseRule("teaching", deidentify=True)
    one, two, other = _dataset(), _dataset(), _dataset()
    two.StudyInstanceUID = "1.2.3.5"  # another study of the same patient
    other.PatientID = "K999"
    for ds in (one, two, other):
        Coercion([rule], _context()).apply(ds)
    assert one.PatientID == two.PatientID == one.PatientName != other.PatientID
    assert one.PatientID.startswith("IMEX") and "K123" not in one.PatientID
    for gone in (
        "IssuerOfPatientID",
        "InstitutionName",
        "StationName",
        "StudyDescription",
        "OriginalAttributesSequence",
    ):
        assert gone not in one
    assert not one.AccessionNumber and not one.PatientBirthDate and not one.ReferringPhysicianName
    assert not any(e.tag.is_private for e in one)
    assert one.StudyInstanceUID not in ("1.2.3.4", two.StudyInstanceUID)
    assert one.PatientIdentityRemoved == "YES"
    assert one.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert one.PixelData == b"\x01\x02" * 8
    with_nhs = _dataset()
    Coercion([rule], _context(nhs_number="9434765919")).apply(with_nhs)
    elsewhere = _dataset()
    elsewhere.PatientID = "OTHER-LOCAL"
    Coercion([rule], Context(source_ods="RRV", destination_ods="RYJ", key=KEY, nhs_number="9434765919")).apply(
        elsewhere
    )
    assert with_nhs.PatientID == elsewhere.PatientID  # one pseudonym per patient across hospitals
