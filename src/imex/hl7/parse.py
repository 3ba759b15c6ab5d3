"""Turning an HL7 v2 ORU^R01 message (v2.3 to v2.5.1) into a Report.

python-hl7 splits the message into segments and undoes escape sequences; this module knows where a
radiology report keeps what the hub needs: identifiers in PID-3 (the NHS number is the one whose
assigning authority is NHS or whose type is NH), the accession number (OBR-18, else the filler order
number OBR-3, else the placer order number OBR-2), the report text (OBX-5), the status (OBR-25, else
OBX-11), the reporting clinician (OBR-32, else OBX-16) and the report time (OBR-22, else OBR-7, else MSH-7).
A ZDS segment (IHE's study instance UID) is read when present.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import hl7
from hl7.exceptions import ParseException

SUPPORTED_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1")
# HL7 table 0123 (OBR-25) and 0085 (OBX-11) codes, as the hub names them. "A" is used by RIS vendors
# for an addendum to a final report; "R" (not yet verified) is treated as preliminary.
STATUS_CODES = {"P": "preliminary", "R": "preliminary", "F": "final", "C": "corrected", "A": "addendum"}
STATUS_TO_CODE = {"preliminary": "P", "final": "F", "corrected": "C", "addendum": "A"}
# Text display codes (.br etc.) become line breaks; highlighting is dropped.
_APP_MAP = {".br": "\n", ".sp": "\n", ".ce": "\n", "H": "", "N": ""}
_TEXT_TYPES = {"TX", "FT", "ST", "CE", "CWE", "ED", ""}


class HL7Reject(ValueError):
    """The bytes are not an HL7 message the hub can read (answered with AR)."""


class HL7Error(ValueError):
    """A readable message the hub cannot accept (answered with AE); `code` is an HL7 table 0357 code."""

    def __init__(self, message: str, code: str = "207") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Header:
    """MSH fields needed to answer any message, even one that is not a usable ORU."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    control_id: str
    message_type: str
    version: str
    processing_id: str


@dataclass(frozen=True)
class PatientIdentifier:
    value: str
    authority: str = ""
    type_code: str = ""


@dataclass
class Report:
    header: Header
    identifiers: list[PatientIdentifier]
    nhs_number: str
    patient_name: str
    birth_date: str
    sex: str
    accession_number: str
    study_uid: str
    procedure: str
    status: str  # preliminary | final | corrected | addendum
    clinician: str
    observed_at: dt.datetime | None
    text: str
    z_segments: dict[str, str] = field(default_factory=dict)

    @property
    def patient_id(self) -> str:
        """The first identifier that is not the NHS number (the sender's local ID), else the NHS number."""
        for ident in self.identifiers:
            if ident.value != self.nhs_number:
                return ident.value
        return self.nhs_number


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def normalise_segments(text: str) -> str:
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    return text


def read_header(data: bytes) -> Header:
    """The MSH of a message; raises HL7Reject when there is none or it is malformed."""
    text = normalise_segments(decode(data))
    if not text.startswith("MSH") or len(text) < 8:
        raise HL7Reject("the message does not start with an MSH segment")
    msh_line = text.split("\r", 1)[0]
    sep = msh_line[3]
    if sep.isalnum() or sep.isspace():
        raise HL7Reject("MSH-1 (field separator) is not a separator character")
    fields = msh_line.split(sep)
    if len(fields) < 12:
        raise HL7Reject(f"the MSH segment has {len(fields)} fields; at least 12 are needed (MSH-12 version)")
    enc = fields[1]
    comp = enc[0] if enc else "^"

    def first(value: str) -> str:
        return value.split(comp)[0].strip()

    msg_type = "^".join(fields[8].split(comp)[:2]).strip()
    return Header(
        first(fields[2]),
        first(fields[3]),
        first(fields[4]),
        first(fields[5]),
        fields[9].strip(),
        msg_type,
        first(fields[11]),
        first(fields[10]),
    )


class Reader:
    """Field access on a parsed message: repetitions and components as unescaped strings."""

    def __init__(self, message: hl7.Message) -> None:
        self.m = message
        self.rep, self.comp = message.separators[2] if len(message.separators) > 2 else "~", "^"
        enc = str(message.segment("MSH")[2])
        if len(enc) >= 2:
            self.comp, self.rep = enc[0], enc[1]
        self.sub = enc[3] if len(enc) > 3 else "&"

    def raw(self, segment, index: int) -> str:
        return str(segment[index]) if len(segment) > index else ""

    def text(self, value: str) -> str:
        return self.m.unescape(value, app_map=_APP_MAP) if value else ""

    def reps(self, segment, index: int) -> list[list[str]]:
        """Each repetition of a field as its components (first subcomponent, unescaped)."""
        raw = self.raw(segment, index)
        if not raw:
            return []
        return [[self.text(c.split(self.sub)[0]) for c in r.split(self.comp)] for r in raw.split(self.rep)]

    def subcomponents(self, segment, index: int) -> list[list[str]]:
        """Each repetition's first component split into its subcomponents (NDL fields such as OBR-32)."""
        raw = self.raw(segment, index)
        if not raw:
            return []
        return [[self.text(s) for s in r.split(self.comp)[0].split(self.sub)] for r in raw.split(self.rep)]

    def first(self, segment, index: int, component: int = 0) -> str:
        for rep in self.reps(segment, index):
            if len(rep) > component and rep[component].strip():
                return rep[component].strip()
        return ""


def _person(parts: list[str]) -> str:
    """An ID, family name, given name (XCN components or NDL subcomponents) as 'Family, Given (ID)'."""
    parts = [p.strip() for p in parts]
    name = ", ".join(p for p in parts[1:3] if p)
    ident = parts[0] if parts else ""
    if name and ident:
        return f"{name} ({ident})"
    return name or ident


def parse_time(value: str) -> dt.datetime | None:
    """An HL7 TS (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) as naive UTC; None when empty or malformed."""
    m = re.match(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$", value.strip())
    if not m:
        return None
    y, mo, d, h, mi, s, tz = m.groups()
    try:
        when = dt.datetime(int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError:
        return None
    if tz:
        offset = dt.timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])) * (1 if tz[0] == "+" else -1)
        when -= offset
    return when


def parse_oru(data: bytes, allow_query_response: bool = False) -> Report:
    """Parse an ORU^R01 (or, answering a report query, an ORF^R04); HL7Reject when it cannot be read,
    HL7Error when it is read but not usable."""
    header = read_header(data)
    accepted = ("ORU", "ORF") if allow_query_response else ("ORU",)
    if header.message_type.split("^")[0] not in accepted:
        raise HL7Reject(f"message type {header.message_type or '(empty)'} is not accepted; send ORU^R01")
    if header.version not in SUPPORTED_VERSIONS:
        raise HL7Reject(
            f"HL7 version {header.version or '(empty)'} is not supported ({', '.join(SUPPORTED_VERSIONS)} are)"
        )
    try:
        message = hl7.parse(normalise_segments(decode(data)))
    except (ParseException, IndexError, ValueError) as exc:
        raise HL7Reject(f"the message cannot be parsed: {exc}") from None
    r = Reader(message)
    present = {str(seg[0]) for seg in message}
    for required in ("PID", "OBR"):
        if required not in present:
            raise HL7Error(f"the ORU has no {required} segment", "100")
    pid = message.segment("PID")
    obr = message.segment("OBR")
    identifiers: list[PatientIdentifier] = []
    nhs = ""
    for rep in r.reps(pid, 3):
        value = rep[0].strip() if rep else ""
        if not value:
            continue
        authority = rep[3].strip() if len(rep) > 3 else ""
        type_code = rep[4].strip() if len(rep) > 4 else ""
        identifiers.append(PatientIdentifier(value, authority, type_code))
        if not nhs and (authority.upper() == "NHS" or type_code.upper() == "NH"):
            nhs = value.replace(" ", "").replace("-", "")
    if not identifiers:
        raise HL7Error("PID-3 holds no patient identifier", "101")
    name = next(iter(r.reps(pid, 5)), [])
    patient_name = "^".join(name[:3]).rstrip("^") if name else ""

    accession = r.first(obr, 18) or r.first(obr, 3) or r.first(obr, 2)
    if not accession:
        raise HL7Error("the report has no accession number (OBR-18, OBR-3 or OBR-2)", "101")

    obx_segments = [s for s in message if str(s[0]) == "OBX"]
    code = r.first(obr, 25).upper()
    codes = [r.first(s, 11).upper() for s in obx_segments]
    if not code:  # the most advanced observation status, else whatever was given
        code = next((c for c in ("A", "C", "F", "P", "R") if c in codes), next((c for c in codes if c), ""))
    if code not in STATUS_CODES:
        raise HL7Error(
            f"report status {code or '(empty)'} (OBR-25/OBX-11) is not one of {', '.join(STATUS_CODES)}", "103"
        )

    lines: list[str] = []
    for seg in obx_segments:
        value_type = r.first(seg, 2).upper()
        if value_type not in _TEXT_TYPES:
            continue
        for rep in r.reps(seg, 5):
            lines.append(("^".join(rep[1:2]) if value_type in ("CE", "CWE") else r.comp.join(rep)).rstrip())
    text = "\n".join(lines).strip("\n")
    if not text:
        raise HL7Error("the report has no text (OBX-5 of a TX, FT or ST observation)", "101")

    clinician = ""
    for subs, comps in zip(r.subcomponents(obr, 32), r.reps(obr, 32), strict=False):
        clinician = _person(subs if len(subs) > 1 else comps)
        if clinician:
            break
    if not clinician:
        for seg in obx_segments:
            rep = next(iter(r.reps(seg, 16)), [])
            clinician = _person(rep)
            if clinician:
                break
    observed = (
        parse_time(r.first(obr, 22)) or parse_time(r.first(obr, 7)) or parse_time(r.first(message.segment("MSH"), 7))
    )
    z_segments = {str(s[0]): str(s) for s in message if str(s[0]).startswith("Z")}
    study_uid = ""
    for seg in message:
        if str(seg[0]) == "ZDS":
            study_uid = r.first(seg, 1)
    return Report(
        header=header,
        identifiers=identifiers,
        nhs_number=nhs,
        patient_name=patient_name,
        birth_date=r.first(pid, 7)[:8],
        sex=r.first(pid, 8)[:1],
        accession_number=accession[:64],
        study_uid=study_uid[:64],
        procedure=r.first(obr, 4, 1) or r.first(obr, 4),
        status=STATUS_CODES[code],
        clinician=clinician[:320],
        observed_at=observed,
        text=text,
        z_segments=z_segments,
    )
