"""The demo's RIS: one HL7 v2 MLLP endpoint standing in for both hospitals' radiology information systems.
As King's RIS it sends the sample studies' reports (ORU^R01) to the hub; as Imperial's it receives the
reports the hub forwards with the delivered studies, acknowledges them (AA) and keeps each one as a file
in DATA_DIR/demo-ris, so both directions of "HL7 reports" happen without installing a RIS."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from imex.hl7.build import ack, escape, timestamp
from imex.hl7.client import Answer, send
from imex.hl7.mllp import MllpListener
from imex.hl7.parse import HL7Reject, read_header

log = logging.getLogger("imex.demo.ris")

SENDING_APPLICATION = "CRIS"  # what King's RIS calls itself in MSH-3


@dataclass(frozen=True)
class Report:
    """A sample study's report as King's RIS sends it."""

    control: str  # MSH-10: fixed per study, so a report sent twice is stored once
    facility: str  # MSH-4: the sending hospital's ODS code (a [[ris]] facility)
    patient_id: str
    nhs_number: str
    patient_name: str
    birth_date: str
    sex: str
    accession: str
    study_uid: str
    procedure: str
    clinician: str  # ID^FAMILY^GIVEN
    lines: tuple[str, ...]
    status: str = "F"


def oru(report: Report, when: dt.datetime | None = None) -> bytes:
    """The report as an ORU^R01 (HL7 v2.5.1): identifiers in PID-3 (the hospital number, and the NHS number
    with authority NHS), the accession in OBR-3 and OBR-18, one TX OBX per line, the study UID in ZDS."""
    at = timestamp(when)
    ids = f"{escape(report.patient_id)}^^^{escape(report.facility)}^MR"
    if report.nhs_number:
        ids += f"~{escape(report.nhs_number)}^^^NHS^NH"
    accession = escape(report.accession)
    segments = [
        f"MSH|^~\\&|{SENDING_APPLICATION}|{escape(report.facility)}|IMEX|IMEX|{at}||ORU^R01^ORU_R01|"
        f"{escape(report.control)}|P|2.5.1",
        f"PID|1||{ids}||{report.patient_name}||{report.birth_date}|{report.sex}",
        f"OBR|1||{accession}|^{escape(report.procedure)}|||{at}|||||||||||{accession}||||{at}|||{report.status}",
    ]
    for i, line in enumerate(report.lines, start=1):
        clinician = f"||{report.clinician}" if i == 1 else ""
        segments.append(
            f"OBX|{i}|TX|^{escape(report.procedure)}||{escape(line)}||||||{report.status}|||{at}{clinician}"
        )
    segments.append(f"ZDS|{escape(report.study_uid)}^RIS^Application^DICOM")
    return ("\r".join(segments) + "\r").encode("utf-8")


class DemoRis:
    """The MLLP endpoint on 127.0.0.1:`port`: acknowledges every message and keeps it in `folder`."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.listener = MllpListener(self._handle, "127.0.0.1", port, allow=lambda peer: peer in ("127.0.0.1", "::1"))

    @property
    def port(self) -> int:
        return self.listener.port

    def _handle(self, data: bytes, peer: str) -> bytes:
        try:
            header = read_header(data)
        except HL7Reject as exc:
            return ack(None, "AR", str(exc), hub_app="RIS", hub_facility="DEMO")
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-%f")
        control = "".join(ch for ch in header.control_id if ch.isalnum())[:20] or "message"
        (self.folder / f"{stamp}-{control}.hl7").write_bytes(data)
        log.info("demo RIS received %s from %s (control %s)", header.message_type, peer, header.control_id)
        return ack(header, "AA", hub_app="RIS", hub_facility=header.receiving_facility or "DEMO")

    def received(self) -> list[Path]:
        return sorted(self.folder.glob("*.hl7"))

    def start(self) -> DemoRis:
        self.listener.start()
        return self

    def stop(self) -> None:
        self.listener.stop()

    @staticmethod
    def send(report: Report, host: str, port: int) -> Answer:
        """Send a report to the hub's MLLP listener as King's RIS; the hub's ACK is returned."""
        return send(host, port, oru(report), timeout=15.0)
