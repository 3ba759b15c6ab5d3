"""Preparing a transfer for its destination: which harmonisation rules apply, the study's NHS number,
what a user entered when reconciling, and whether the transfer must be held instead of sent.

Called by the delivery worker when it claims a transfer (so a rule changed in imex.toml applies to
what is sent next) and by `imex harmonise preview`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

from pydicom import dcmread
from sqlalchemy import Connection, select

from imex.config import Config
from imex.db import Database
from imex.db.models import instances, institutions, nodes, reconciliations, studies, transfers
from imex.harmonise import nhs
from imex.harmonise.coerce import Coercion, Context
from imex.harmonise.keys import load_key
from imex.harmonise.rules import HarmoniseRule, from_config
from imex.store import BlobStore

_IDENTITY_TAGS = ["PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "OtherPatientIDsSequence"]


@dataclass(frozen=True)
class Prepared:
    """`coercion` None: no rule applies, the stored bytes go as they are. `hold`: why the transfer must
    wait for reconciliation instead of being sent."""

    coercion: Coercion | None
    hold: str | None = None
    destination: str = ""


NOTHING = Prepared(None)
# the rule behind a reconciled identity when no configured rule applies: no actions of its own
RECONCILED = HarmoniseRule(name="identity entered by a user")


@dataclass(frozen=True)
class Resolved:
    patient_id: str
    issuer: str | None
    accession: str | None


class Harmoniser:
    def __init__(self, rules: list[HarmoniseRule], key: Callable[[], bytes], hub_aet: str = "IMEX") -> None:
        self.rules = rules
        self._key_source = key
        self._key: bytes | None = None
        self.hub_aet = hub_aet

    @classmethod
    def from_config(cls, config: Config) -> Harmoniser:
        return cls(from_config(config), lambda: load_key(config), config["dicom.ae_title"])

    def key(self) -> bytes:
        if self._key is None:
            self._key = self._key_source()
        return self._key

    def for_transfer(self, db: Database, store: BlobStore, transfer_id: int) -> Prepared:
        with db.reader() as conn:
            rec = conn.execute(
                select(reconciliations).where(
                    reconciliations.c.transfer_id == transfer_id, reconciliations.c.state == "resolved"
                )
            ).first()
            if not self.rules and rec is None:
                conn.rollback()
                return NOTHING
            row = conn.execute(
                select(transfers.c.study_id, transfers.c.destination_node_id).where(transfers.c.id == transfer_id)
            ).one()
            resolved = Resolved(rec.patient_id, rec.issuer, rec.accession_number) if rec is not None else None
            prepared = self.for_study(conn, store, row.study_id, row.destination_node_id, resolved)
            conn.rollback()
        return prepared

    def for_study(
        self, conn: Connection, store: BlobStore, study_id: int, node_id: int, resolved: Resolved | None = None
    ) -> Prepared:
        """The rules for sending a study to a node, with their context, or why it must be held."""
        dest = conn.execute(
            select(nodes.c.name, nodes.c.ae_title, institutions.c.ods_code, institutions.c.name.label("inst_name"))
            .join(institutions, institutions.c.id == nodes.c.institution_id)
            .where(nodes.c.id == node_id)
        ).one()
        src = conn.execute(
            select(institutions.c.ods_code, institutions.c.name)
            .join(studies, studies.c.institution_id == institutions.c.id)
            .where(studies.c.id == study_id)
        ).one()
        arrivals = conn.execute(
            select(nodes.c.name, nodes.c.ae_title, instances.c.calling_aet)
            .distinct()
            .select_from(instances)
            .outerjoin(nodes, nodes.c.id == instances.c.source_node_id)
            .where(instances.c.study_id == study_id)
        ).all()
        source = frozenset(v.strip().upper() for r in arrivals for v in r if v)
        destination = frozenset(v.upper() for v in (dest.name, dest.ae_title, dest.ods_code))
        rules = [r for r in self.rules if r.applies(destination, source, src.ods_code)]
        where = f"{dest.name} ({dest.ods_code})"
        if not rules:
            if resolved is None:
                return Prepared(None, destination=where)
            # an identity someone entered (reconciliation, import into a local PACS) applies on its own
            rules = [RECONCILED]
        context = dict(
            source_ods=src.ods_code,
            source_name=src.name,
            source_aet=next((r.ae_title or r.calling_aet for r in arrivals), ""),
            destination_ods=dest.ods_code,
            destination_name=dest.inst_name,
            modifying_system=self.hub_aet,
        )
        coercion = Coercion(rules)
        hold = None
        if resolved is not None:
            context.update(patient_id=resolved.patient_id, issuer=resolved.issuer, accession=resolved.accession)
        elif coercion.uses_nhs_number or coercion.deidentifies:
            attribute = next((r.nhs_attribute for r in rules if r.nhs_attribute), None)
            found, conflict = self._discover(conn, store, study_id, attribute)
            if found is not None and found.problem is None and conflict is None:
                context["nhs_number"] = found.number
            required = [r.name for r in rules if r.nhs_number == "require"]
            if required:
                if conflict:
                    hold = conflict
                elif found is None:
                    hold = "no NHS number in the study (Patient ID, Other Patient IDs Sequence)"
                elif found.problem:
                    hold = f"the NHS number in {found.where} is invalid: {found.problem}"
                if hold:
                    hold = f"{where} requires an NHS number (rule {required[0]!r}): {hold}"
        if coercion.uses_nhs_number or coercion.deidentifies or any(r.uids == "new" for r in rules):
            context["key"] = self.key()
        coercion.context = Context(**context)
        return Prepared(coercion, hold, where)

    @staticmethod
    def _discover(
        conn: Connection, store: BlobStore, study_id: int, attribute: str | None
    ) -> tuple[nhs.Found | None, str | None]:
        """The study's NHS number from its instances' headers, and a problem when they disagree."""
        keys = (
            conn.execute(select(instances.c.blob_key).where(instances.c.study_id == study_id).order_by(instances.c.id))
            .scalars()
            .all()
        )
        tags = _IDENTITY_TAGS + ([attribute] if attribute else [])
        best: nhs.Found | None = None
        numbers: set[str] = set()
        seen_patients: set[tuple[str, str, str]] = set()
        for key in keys:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(store.path(key), stop_before_pixels=True, specific_tags=tags)
            patient = (
                str(ds.get("PatientID", "")),
                str(ds.get("OtherPatientIDsSequence", "")),
                str(ds.get(attribute, "")) if attribute else "",
            )
            if patient in seen_patients:
                continue  # same identity as an instance already read
            seen_patients.add(patient)
            found = nhs.discover(ds, attribute)
            if found is None:
                continue
            if found.problem is None:
                numbers.add(found.number)
                best = best if best is not None and best.problem is None else found
            elif best is None:
                best = found
        if len(numbers) > 1:
            return best, f"the instances carry different NHS numbers ({len(numbers)})"
        return best, None
