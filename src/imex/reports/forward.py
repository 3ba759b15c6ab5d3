"""Sending reports on: the outbox (report_deliveries) is filled when a study is delivered or a new report
version arrives (see store.queue_deliveries) and emptied here by a thread of the hub, with retries.

Each delivery is one report version to one destination node, in one of two forms:
- hl7: an ORU^R01 to the RIS endpoint of the node's institution, over MLLP;
- dicom: an Enhanced SR with the report text, in the same study as the images, C-STOREd to the node.
A version that replaces one already delivered to the same place says so: the ORU carries an NTE and a
ZIX segment naming the earlier message, and the SR lists the earlier SR in its Predecessor Documents.

Identifiers for the destination are chosen in one place, `destination_header`: the stored header of the
study, changed by the same harmonisation rules as its images.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import warnings
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from imex.config import Config
from imex.db import Database, utcnow
from imex.db.models import (
    instances,
    institutions,
    nodes,
    report_deliveries,
    reports,
    transfers,
)
from imex.dicom.scu import Outgoing, is_success, send_all
from imex.hl7 import build, client
from imex.jobs import engine
from imex.jobs.queue import JobQueue, RetrySettings
from imex.jobs.registry import register
from imex.reports.endpoints import endpoint_for_institution
from imex.store import BlobStore
from imex.tls import files as tls_files

log = logging.getLogger("imex.reports.forward")

ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


# One row per report version and destination; held by pushing its due time while it is sent.
FORWARD = register(
    JobQueue(
        "report-forward",
        report_deliveries,
        RetrySettings("hl7.retry_initial_seconds", "hl7.retry_multiplier", "hl7.retry_max_seconds", "hl7.max_attempts"),
        order=lambda t: [t.c.report_id, t.c.id],
        description="Reports forwarded with their studies (HL7 ORU to the RIS, SR or PDF to the PACS).",
    )
)


class DeliveryError(RuntimeError):
    """A report could not be delivered this time; the message says why."""


class NotWanted(RuntimeError):
    """This delivery is not to be made (e.g. hl7.report_form is none); it is cancelled, not retried."""


def report_series_uid(study_uid: str) -> str:
    """One series per study holds the hub's report SRs, the same at every destination."""
    return generate_uid(entropy_srcs=[study_uid, "imex report series"])


def _person_name(clinician: str) -> str:
    """'Family, Given (ID)' as a DICOM PN 'Family^Given'."""
    name = clinician.split(" (")[0]
    return "^".join(p.strip() for p in name.split(",")[:2]) or "UNKNOWN"


class ReportSender:
    def __init__(self, config: Config, db: Database, store: BlobStore, harmoniser=None) -> None:
        self.config = config
        self.db = db
        self.store = store
        self.harmoniser = harmoniser
        self.wake = threading.Event()

        self.policy = FORWARD.retry_policy(config)

    def run(self, stop: threading.Event, interval: float = 0.5) -> None:
        while not stop.is_set():
            try:
                self.send_due()
            except Exception:
                log.exception("report sender error; continuing")
            if self.wake.wait(interval):
                self.wake.clear()

    def send_due(self, limit: int = 20) -> int:
        """Send every due report delivery; returns how many went out."""
        # held out of other senders' reach while this one works (a sender that dies lets them fall due)
        hold = max(self.config["hl7.send_timeout"] * 4, 60)
        sent = 0
        for row in engine.claim(self.db, FORWARD, "", hold, limit=limit):
            try:
                message_id, supersedes = self.deliver(row)
            except NotWanted as exc:
                with self.db.engine.begin() as conn:
                    engine.finish(conn, FORWARD, row.id, None, "cancelled", last_error=str(exc))
            except Exception as exc:
                error = (
                    str(exc) if isinstance(exc, (DeliveryError, client.MllpError)) else f"{type(exc).__name__}: {exc}"
                )
                with self.db.engine.begin() as conn:
                    outcome = engine.retry_later(conn, FORWARD, row.id, None, error, self.policy)
                log.warning(
                    "report delivery %s (%s) failed (attempt %s%s): %s",
                    row.id,
                    row.kind,
                    row.attempts,
                    ", giving up" if outcome is not None and outcome.dead else "",
                    error,
                )
            else:
                with self.db.engine.begin() as conn:
                    engine.finish(
                        conn,
                        FORWARD,
                        row.id,
                        None,
                        "sent",
                        last_error=None,
                        sent_at=utcnow(),
                        message_id=message_id,
                        supersedes=supersedes,
                    )
                sent += 1
        return sent

    # -- one delivery ---------------------------------------------------------------------------------

    def deliver(self, row) -> tuple[str, str]:
        """Send one delivery; returns (message ID sent, what it supersedes)."""
        with self.db.reader() as conn:
            report = conn.execute(select(reports).where(reports.c.id == row.report_id)).one()
            node = conn.execute(select(nodes).where(nodes.c.id == row.destination_node_id)).one()
            # the latest version already delivered in this form to this node: the one this version replaces
            previous = conn.execute(
                select(report_deliveries.c.message_id)
                .join(reports, reports.c.id == report_deliveries.c.report_id)
                .where(
                    report_deliveries.c.destination_node_id == node.id,
                    report_deliveries.c.kind == row.kind,
                    report_deliveries.c.state == "sent",
                    reports.c.study_id == report.study_id,
                    reports.c.id < report.id,
                )
                .order_by(reports.c.id.desc())
                .limit(1)
            ).scalar()
            header = self.destination_header(conn, report.study_id, node.id)
            source = conn.execute(
                select(institutions.c.ods_code).where(institutions.c.id == report.institution_id)
            ).scalar_one()
            if row.kind == "hl7":
                endpoint = endpoint_for_institution(conn, node.institution_id)
                dest_ods = conn.execute(
                    select(institutions.c.ods_code).where(institutions.c.id == node.institution_id)
                ).scalar_one()
            conn.rollback()
        supersedes = previous or ""
        if row.kind == "hl7":
            if endpoint is None:
                raise DeliveryError(f"institution of node {node.name} has no RIS endpoint with a port")
            control = build.control_id()
            message = build.oru(
                identity=_identity(header, report),
                sending_facility=source,
                receiving_app=endpoint.receiving_application,
                receiving_facility=dest_ods,
                status=report.status,
                text=report.text,
                clinician=report.clinician,
                observed_at=report.observed_at,
                study_uid=str(header.StudyInstanceUID),
                procedure=report.procedure,
                control=control,
                supersedes=supersedes,
            )
            answer = client.send(endpoint.host, endpoint.port, message, timeout=self.config["hl7.send_timeout"])
            if not answer.accepted:
                raise DeliveryError(f"RIS {endpoint.name} answered {answer.code or 'without MSA'}: {answer.text}")
            log.info("report %s sent as HL7 to RIS %s (%s)", report.id, endpoint.name, control)
            return control, supersedes
        if self.config["hl7.report_form"] != "sr":
            raise NotWanted(f"hl7.report_form is {self.config['hl7.report_form']!r}: no DICOM form is sent")
        sr = make_sr(header, report, previous_sop_uid=supersedes, organisation=source)
        self._store(sr, node)
        log.info("report %s sent as SR %s to %s", report.id, sr.SOPInstanceUID, node.ae_title)
        return str(sr.SOPInstanceUID), supersedes

    def destination_header(self, conn, study_id: int, node_id: int) -> Dataset:
        """The study's patient and study attributes as the destination received them with the images: a
        stored header, changed by the harmonisation rules for this destination (when imex.harmonise has
        any). The one place where identifiers for a destination are chosen."""
        key = conn.execute(
            select(instances.c.blob_key).where(instances.c.study_id == study_id).order_by(instances.c.id).limit(1)
        ).scalar()
        if key is None:
            raise DeliveryError(f"study {study_id} has no stored instance to take its identifiers from")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(self.store.path(key), stop_before_pixels=True)
        if self.harmoniser is not None:
            transfer_id = conn.execute(
                select(transfers.c.id).where(
                    transfers.c.study_id == study_id, transfers.c.destination_node_id == node_id
                )
            ).scalar()
            prepared = (
                self.harmoniser.for_transfer(self.db, self.store, transfer_id)
                if transfer_id is not None
                else self.harmoniser.for_study(conn, self.store, study_id, node_id)
            )
            if prepared.coercion is not None:
                prepared.coercion.apply(ds)
        return ds

    def _store(self, sr: Dataset, node) -> None:
        with tempfile.TemporaryDirectory(prefix="imex-sr-") as tmp:
            path = Path(tmp) / "report.dcm"
            sr.save_as(path, enforce_file_format=True)
            out = Outgoing(path, ENHANCED_SR, EXPLICIT_LE, str(sr.SOPInstanceUID))
            for _, sent in send_all(
                [out],
                lambda o: o,
                calling_aet=self.config["dicom.ae_title"],
                called_aet=node.ae_title,
                host=node.host,
                port=node.port,
                timeout=self.config["dicom.dimse_timeout"],
                tls=tls_files.outbound(self.config, bool(getattr(node, "tls", False))),
            ):
                if sent.status is None:
                    raise DeliveryError(f"{node.ae_title}@{node.host}:{node.port}: {sent.error}")
                if not is_success(sent.status):
                    raise DeliveryError(
                        f"{node.ae_title} refused the report SR: status 0x{sent.status:04X} {sent.error}".rstrip()
                    )


def _identity(header: Dataset, report) -> build.Identity:
    return build.Identity(
        patient_id=str(header.get("PatientID", "") or report.patient_id),
        patient_id_authority=str(header.get("IssuerOfPatientID", "") or ""),
        nhs_number=report.nhs_number,
        accession_number=str(header.get("AccessionNumber", "") or report.accession_number),
        patient_name=str(header.get("PatientName", "") or report.patient_name),
        birth_date=str(header.get("PatientBirthDate", "") or report.birth_date),
        sex=str(header.get("PatientSex", "") or report.sex),
    )


def make_sr(header: Dataset, report, previous_sop_uid: str = "", organisation: str = "") -> Dataset:
    """The report as an Enhanced SR (made with highdicom) in the study of `header`: the text as one TEXT
    item, completion and verification flags from its status, the earlier version as predecessor."""
    from highdicom.sr import CodedConcept, ContainerContentItem, ContentSequence, EnhancedSR, TextContentItem

    root = ContainerContentItem(name=CodedConcept("18748-4", "LN", "Diagnostic imaging report"))
    items = [
        TextContentItem(name=CodedConcept("121071", "DCM", "Finding"), value=report.text, relationship_type="CONTAINS")
    ]
    if report.procedure:
        items.insert(
            0,
            TextContentItem(
                name=CodedConcept("121023", "DCM", "Procedure Code"),
                value=report.procedure,
                relationship_type="CONTAINS",
            ),
        )
    root.ContentSequence = ContentSequence(items)
    previous = []
    series_uid = report_series_uid(str(header.StudyInstanceUID))
    if previous_sop_uid:
        ref = Dataset()
        ref.StudyInstanceUID, ref.SeriesInstanceUID = header.StudyInstanceUID, series_uid
        ref.SOPClassUID, ref.SOPInstanceUID = ENHANCED_SR, previous_sop_uid
        previous.append(ref)
    done = report.status != "preliminary"
    evidence = Dataset()
    for keyword in (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "IssuerOfPatientID",
        "OtherPatientIDsSequence",
        "StudyInstanceUID",
        "AccessionNumber",
        "StudyID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
        "SeriesInstanceUID",
        "SOPClassUID",
        "SOPInstanceUID",
        "SpecificCharacterSet",
    ):
        if keyword in header:
            setattr(evidence, keyword, header[keyword].value)
    for keyword in (
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "PatientID",
    ):
        if keyword not in evidence:
            setattr(evidence, keyword, "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sr = EnhancedSR(
            evidence=[evidence],
            content=root,
            series_instance_uid=series_uid,
            series_number=990,
            sop_instance_uid=report.sop_instance_uid,
            instance_number=report.id,
            manufacturer="imex",
            is_complete=done,
            is_final=done,
            is_verified=done,
            verifying_observer_name=_person_name(report.clinician) if done else None,
            verifying_organization=(organisation or "RIS") if done else None,
            previous_versions=previous or None,
        )
    sr.PreliminaryFlag = "FINAL" if done else "PRELIMINARY"
    sr.SeriesDescription = "Radiology report"
    for keyword in ("IssuerOfPatientID", "OtherPatientIDsSequence"):
        if keyword in header:  # keep the identity exactly as harmonised for the images
            setattr(sr, keyword, header[keyword].value)
    if report.observed_at:
        sr.ContentDate, sr.ContentTime = report.observed_at.strftime("%Y%m%d"), report.observed_at.strftime("%H%M%S")
    return sr
