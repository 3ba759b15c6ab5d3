"""Applying harmonisation rules to one dataset, on the copy that goes to a destination (never the stored
file), and recording every replaced value in Original Attributes Sequence (PS3.3 C.12.1.1.9) so the
change can be seen and undone.

The record is made by comparing the dataset's top-level attributes before and after the rules ran, so
whatever a rule changes is recorded, including UIDs inside sequences (the whole sequence's old value).
Attributes a rule added are recorded with an empty value: they were absent before.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from imex.db import utcnow
from imex.harmonise import deidentify
from imex.harmonise.rules import HarmoniseRule
from imex.harmonise.uids import new_uid, walk_uids

NHS_ISSUER = "NHS"
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_ORIGINAL = 0x04000561  # Original Attributes Sequence


@dataclass(frozen=True)
class Context:
    """What rules fill in for one transfer: names of both ends, the study's NHS number, what a user
    entered when reconciling, and the key for consistent new UIDs and pseudonyms."""

    source_ods: str = ""
    source_name: str = ""
    source_aet: str = ""
    destination_ods: str = ""
    destination_name: str = ""
    nhs_number: str | None = None
    patient_id: str | None = None  # reconciled values win over every rule
    issuer: str | None = None
    accession: str | None = None
    key: bytes = b""
    modifying_system: str = "IMEX"

    def fill(self, template: str) -> str:
        return template.format(
            source_ods=self.source_ods,
            source_name=self.source_name,
            source_aet=self.source_aet,
            destination_ods=self.destination_ods,
            destination_name=self.destination_name,
        )


@dataclass(frozen=True)
class Change:
    """One attribute as it was and as it goes out (None: absent)."""

    keyword: str
    old: str | None
    new: str | None


def _render(elem: DataElement | None) -> str | None:
    if elem is None:
        return None
    if elem.VR == "SQ":
        return f"<{len(elem.value or [])} item sequence>"
    return str(elem.value) if elem.value is not None else ""


@dataclass
class Coercion:
    """The rules that apply to one transfer and the context they run in; `apply` changes a dataset."""

    rules: list[HarmoniseRule]
    context: Context = field(default_factory=Context)

    @property
    def deidentifies(self) -> bool:
        return any(r.deidentify for r in self.rules)

    @property
    def uses_nhs_number(self) -> bool:
        return any(r.nhs_number != "off" for r in self.rules)

    def apply(self, ds: Dataset) -> list[Change]:
        """Change `ds` in place; returns what changed, with the old values also recorded in the dataset
        (unless it was de-identified, where keeping them would undo the de-identification)."""
        before = {e.tag: copy.deepcopy(e) for e in ds if e.VR not in _BINARY_VRS and e.tag != _ORIGINAL}
        self._identity(ds)
        for rule in self.rules:
            self._rule(ds, rule)
        if any(r.uids == "new" for r in self.rules) and not self.deidentifies:
            scope = f"destination:{self.context.destination_ods}"
            walk_uids(ds, lambda uid: new_uid(self.context.key, scope, uid))
        if self.deidentifies:
            deidentify.basic_profile(
                ds,
                self._pseudonym(before),
                lambda uid: new_uid(self.context.key, f"deidentify:{self.context.destination_ods}", uid),
            )
        after = {e.tag: e for e in ds if e.VR not in _BINARY_VRS and e.tag != _ORIGINAL}
        changed = sorted(
            t
            for t in set(before) | set(after)
            if t not in after or t not in before or before[t].value != after[t].value
        )
        changes = [
            Change((before.get(t) or after[t]).keyword or str(t), _render(before.get(t)), _render(after.get(t)))
            for t in changed
        ]
        if "SOPInstanceUID" in ds and getattr(ds, "file_meta", None) is not None:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if changes and not self.deidentifies:
            self._record(ds, [before.get(t) or DataElement(t, after[t].VR, None) for t in changed])
        return changes

    # -- the operations ----------------------------------------------------------------------------

    def _identity(self, ds: Dataset) -> None:
        """Patient ID becomes the reconciled ID, else the NHS number; the local ID is kept in Other
        Patient IDs Sequence so the destination can still find the sender's records."""
        ctx = self.context
        if ctx.patient_id:
            new_id, issuer = ctx.patient_id, ctx.issuer or NHS_ISSUER
        elif ctx.nhs_number and self.uses_nhs_number:
            new_id, issuer = ctx.nhs_number, NHS_ISSUER
        else:
            return
        old_id = str(ds.get("PatientID", "") or "")
        old_issuer = str(ds.get("IssuerOfPatientID", "") or "")
        if old_id == new_id and old_issuer == issuer:
            return
        if old_id and old_id != new_id:
            kept = Dataset()
            kept.PatientID = old_id
            kept.IssuerOfPatientID = old_issuer or ctx.source_ods
            if "IssuerOfPatientIDQualifiersSequence" in ds:
                kept.IssuerOfPatientIDQualifiersSequence = copy.deepcopy(ds.IssuerOfPatientIDQualifiersSequence)
            kept.TypeOfPatientID = "TEXT"
            others = ds.get("OtherPatientIDsSequence") or Sequence()
            if not any(str(i.get("PatientID", "")) == old_id for i in others):
                ds.OtherPatientIDsSequence = Sequence([*others, kept])
        ds.PatientID = new_id
        ds.IssuerOfPatientID = issuer
        if "IssuerOfPatientIDQualifiersSequence" in ds:
            del ds.IssuerOfPatientIDQualifiersSequence  # it qualified the old issuer

    def _rule(self, ds: Dataset, rule: HarmoniseRule) -> None:
        ctx = self.context
        if ctx.accession is not None:
            ds.AccessionNumber = ctx.accession
        else:
            accession = str(ds.get("AccessionNumber", "") or "")
            if accession in rule.accession_map:
                ds.AccessionNumber = ctx.fill(rule.accession_map[accession])
            elif rule.accession_prefix and accession:
                prefix = ctx.fill(rule.accession_prefix)
                if not accession.startswith(prefix):
                    ds.AccessionNumber = (prefix + accession)[:16]
        if rule.institution_name is not None:
            ds.InstitutionName = ctx.fill(rule.institution_name)
        for keyword, value in rule.set.items():
            setattr(ds, keyword, ctx.fill(value))
        for keyword, pairs in rule.map.items():
            current = str(ds.get(keyword, "") or "")
            if current in pairs:
                setattr(ds, keyword, ctx.fill(pairs[current]))
        for keyword in rule.blank:
            if keyword in ds:
                ds[keyword].value = None

    def _pseudonym(self, before: dict) -> str:
        """The patient's identity for a stable pseudonym: the NHS number when known, else the sending
        institution with the local ID."""
        if self.context.patient_id:
            identity = f"id:{self.context.patient_id}"
        elif self.context.nhs_number:
            identity = f"nhs:{self.context.nhs_number}"
        else:
            local = next((e.value for e in before.values() if e.keyword == "PatientID"), "")
            identity = f"local:{self.context.source_ods}:{local}"
        return deidentify.pseudonym(self.context.key, identity)

    def _record(self, ds: Dataset, originals: Iterable[DataElement]) -> None:
        modified = Dataset()
        for elem in originals:
            modified.add(copy.deepcopy(elem))
        item = Dataset()
        item.AttributeModificationDateTime = utcnow().strftime("%Y%m%d%H%M%S")
        item.ModifiedAttributesSequence = Sequence([modified])
        item.ModifyingSystem = self.context.modifying_system
        item.ReasonForTheAttributeModification = "COERCE"
        item.SourceOfPreviousValues = (self.context.source_ods or self.context.source_aet)[:64]
        existing = ds.get("OriginalAttributesSequence") or Sequence()
        ds.OriginalAttributesSequence = Sequence([*existing, item])
