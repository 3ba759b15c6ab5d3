"""Building HL7 v2 messages the hub sends: acknowledgements, forwarded ORU^R01 reports and the query that
asks a RIS for a missing report. Everything is written with the default encoding characters |^~\\&."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from imex.hl7.parse import STATUS_TO_CODE, Header

SEGMENT_END = "\r"


@dataclass(frozen=True)
class Outcome:
    """How a message was answered: AA, AE or AR, why, and the report row when one was stored."""

    code: str
    text: str = ""
    error_code: str = ""
    header: Header | None = None
    report_id: int | None = None


def escape(value: str) -> str:
    """Escape a value for a field (HL7 v2 2.7 escape sequences); line breaks become \\.br\\."""
    out = (
        value.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
    )
    return out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\\.br\\")


def timestamp(when: dt.datetime | None = None) -> str:
    return (when or dt.datetime.now(dt.UTC).replace(tzinfo=None)).strftime("%Y%m%d%H%M%S")


def control_id() -> str:
    """A new message control ID (MSH-10, at most 20 characters)."""
    return uuid.uuid4().hex[:20].upper()


def msh(
    sending_app: str,
    sending_facility: str,
    receiving_app: str,
    receiving_facility: str,
    message_type: str,
    control: str,
    version: str = "2.5.1",
    processing_id: str = "P",
) -> str:
    return "|".join(
        [
            "MSH",
            "^~\\&",
            escape(sending_app),
            escape(sending_facility),
            escape(receiving_app),
            escape(receiving_facility),
            timestamp(),
            "",
            message_type,
            control,
            processing_id or "P",
            version,
        ]
    )


def ack(
    header: Header | None,
    code: str,
    text: str = "",
    error_code: str = "",
    *,
    hub_app: str = "IMEX",
    hub_facility: str = "IMEX",
) -> bytes:
    """An ACK for `header` (None when the message had no readable MSH): AA, AE or AR, with an ERR segment
    carrying the HL7 table 0357 code and the reason when it is not AA."""
    version = header.version if header and header.version else "2.5.1"
    trigger = header.message_type.split("^")[1] if header and "^" in header.message_type else ""
    segments = [
        msh(
            hub_app,
            hub_facility,
            header.sending_application if header else "",
            header.sending_facility if header else "",
            f"ACK^{trigger}" if trigger else "ACK",
            control_id(),
            version,
            header.processing_id if header else "P",
        ),
        "|".join(["MSA", code, escape(header.control_id if header else ""), escape(text[:80])]),
    ]
    if code != "AA":
        err_code = error_code or ("200" if code == "AR" else "207")
        if version in ("2.5", "2.5.1"):
            segments.append(f"ERR|||{err_code}^{escape(text[:200])}^HL70357|E")
        else:
            segments.append(f"ERR|^^^{err_code}&{escape(text[:200]).replace('&', '')}&HL70357")
    return (SEGMENT_END.join(segments) + SEGMENT_END).encode("utf-8")


@dataclass(frozen=True)
class Identity:
    """The patient and accession as the destination should see them (see forward.destination_identity)."""

    patient_id: str
    patient_id_authority: str
    nhs_number: str
    accession_number: str
    patient_name: str
    birth_date: str
    sex: str


def oru(
    *,
    identity: Identity,
    sending_facility: str,
    receiving_app: str,
    receiving_facility: str,
    status: str,
    text: str,
    clinician: str,
    observed_at: dt.datetime | None,
    study_uid: str,
    procedure: str,
    control: str,
    supersedes: str = "",
) -> bytes:
    """A forwarded report as ORU^R01 v2.5.1: one TX OBX per line of text, the study UID in ZDS, and when it
    replaces a report sent earlier, an NTE and a ZIX segment naming the message it supersedes."""
    ids = [f"{escape(identity.patient_id)}^^^{escape(identity.patient_id_authority)}^MR"]
    if identity.nhs_number and identity.nhs_number != identity.patient_id:
        ids.append(f"{escape(identity.nhs_number)}^^^NHS^NH")
    elif identity.nhs_number:
        ids = [f"{escape(identity.nhs_number)}^^^NHS^NH"]
    code = STATUS_TO_CODE[status]
    when = timestamp(observed_at) if observed_at else ""
    interpreter = escape(clinician)
    segments = [
        msh("IMEX", sending_facility, receiving_app, receiving_facility, "ORU^R01^ORU_R01", control),
        "|".join(
            [
                "PID",
                "1",
                "",
                "~".join(ids),
                "",
                escape(identity.patient_name).replace("\\S\\", "^"),
                "",
                escape(identity.birth_date),
                escape(identity.sex),
            ]
        ),
        "|".join(
            [
                "OBR",
                "1",
                "",
                escape(identity.accession_number),
                f"^{escape(procedure)}",
                "",
                "",
                when,
                *[""] * 10,
                escape(identity.accession_number),
                "",
                "",
                "",
                when,
                "",
                "",
                code,
                *[""] * 6,
                f"&{interpreter}" if interpreter else "",
            ]
        ),
    ]
    if supersedes:
        segments.append(f"NTE|1||This report supersedes the one sent in message {escape(supersedes)}")
    for i, line in enumerate(text.split("\n") or [""], start=1):
        segments.append(f"OBX|{i}|TX|^Report||{escape(line)}||||||{code}|||{when}")
    segments.append(f"ZDS|{escape(study_uid)}^IMEX^Application^DICOM")
    if supersedes:
        segments.append(f"ZIX|SUPERSEDES|{escape(supersedes)}")
    return (SEGMENT_END.join(segments) + SEGMENT_END).encode("utf-8")


DEFAULT_QUERY = (
    "MSH|^~\\&|IMEX|IMEX|{ris_name}|{ods}|{now}||QRY^R02|{control}|P|2.4\r"
    "QRD|{now}|R|I|{control}|||1^RD|{patient_id}|RES|{accession}\r"
    "QRF|{ods}|||||{accession}\r"
)


def query(template: str, *, ris_name: str, ods: str, accession: str, patient_id: str) -> bytes:
    """The query message from a RIS endpoint's template ({ris_name}, {ods}, {now}, {control}, {accession},
    {patient_id} are filled in, escaped); newlines in the template are segment ends."""
    text = (template or DEFAULT_QUERY).format(
        ris_name=escape(ris_name),
        ods=escape(ods),
        now=timestamp(),
        control=control_id(),
        accession=escape(accession),
        patient_id=escape(patient_id),
    )
    return text.replace("\r\n", "\r").replace("\n", "\r").encode("utf-8")
