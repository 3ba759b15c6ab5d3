"""The audit trail as DICOM audit messages (PS3.15 A.5, the schema IHE ATNA repositories read), so a
trust can load imex's trail into the audit record repository it already runs.

Each imex action maps to a DICOM event ID (DCM codes of PS3.16 CID 400); the actor, the address they
came from, and the study or patient the event concerned become the message's participants.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator

# action prefix -> (EventID code, its meaning, EventActionCode)
_EVENTS: tuple[tuple[str, str, str, str], ...] = (
    ("auth.", "110114", "User Authentication", "E"),
    ("audit.", "110101", "Audit Log Used", "R"),
    ("study.view", "110103", "DICOM Instances Accessed", "R"),
    ("study.delete", "110105", "DICOM Study Deleted", "D"),
    ("quarantine.delete", "110105", "DICOM Study Deleted", "D"),
    ("quarantine.route", "110104", "DICOM Instances Transferred", "E"),
    ("transfer.", "110104", "DICOM Instances Transferred", "E"),
    ("search", "110112", "Query", "E"),
    ("user.", "110113", "Security Alert", "U"),
    ("role.", "110113", "Security Alert", "U"),
    ("node.", "110113", "Security Alert", "U"),
    ("institution.", "110113", "Security Alert", "U"),
    ("access.denied", "110113", "Security Alert", "E"),
)
_DEFAULT = ("110100", "Application Activity", "E")
# imex outcome -> EventOutcomeIndicator (0 success, 4 minor failure, 8 serious failure)
_OUTCOMES = {"success": "0", "failure": "8", "denied": "4"}


def event_code(action: str) -> tuple[str, str, str]:
    for prefix, code, meaning, verb in _EVENTS:
        if action == prefix or action.startswith(prefix):
            return code, meaning, verb
    return _DEFAULT


def message(row, source_id: str) -> ET.Element:
    code, meaning, verb = event_code(row.action)
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(
        root,
        "EventIdentification",
        EventActionCode=verb,
        EventDateTime=row.at.isoformat(timespec="seconds") + "Z",
        EventOutcomeIndicator=_OUTCOMES.get(row.outcome, "8"),
    )
    ET.SubElement(ident, "EventID", {"csd-code": code, "codeSystemName": "DCM", "originalText": meaning})
    ET.SubElement(
        ident, "EventTypeCode", {"csd-code": row.action, "codeSystemName": "imex", "originalText": row.action}
    )
    if row.detail:
        ET.SubElement(ident, "EventOutcomeDescription").text = row.detail[:1000]
    participant = {"UserID": row.username or "(hub)", "UserIsRequestor": "true"}
    if row.ip:
        participant.update(NetworkAccessPointID=row.ip, NetworkAccessPointTypeCode="2")
    ET.SubElement(root, "ActiveParticipant", participant)
    ET.SubElement(root, "AuditSourceIdentification", AuditSourceID=source_id)
    if row.patient_id:
        patient = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            ParticipantObjectID=row.patient_id,
            ParticipantObjectTypeCode="1",
            ParticipantObjectTypeCodeRole="1",
        )
        ET.SubElement(
            patient,
            "ParticipantObjectIDTypeCode",
            {"csd-code": "2", "codeSystemName": "RFC-3881", "originalText": "Patient Number"},
        )
    if row.study_uid:
        study = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            ParticipantObjectID=row.study_uid,
            ParticipantObjectTypeCode="2",
            ParticipantObjectTypeCodeRole="3",
        )
        ET.SubElement(
            study,
            "ParticipantObjectIDTypeCode",
            {"csd-code": "110180", "codeSystemName": "DCM", "originalText": "Study Instance UID"},
        )
    elif row.object_type and row.object_id:
        other = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            ParticipantObjectID=str(row.object_id),
            ParticipantObjectTypeCode="2",
            ParticipantObjectTypeCodeRole="4",
        )
        ET.SubElement(
            other,
            "ParticipantObjectIDTypeCode",
            {"csd-code": row.object_type, "codeSystemName": "imex", "originalText": row.object_type},
        )
    return root


def iter_xml(rows: Iterable, source_id: str) -> Iterator[str]:
    """One document holding one AuditMessage per event, streamed."""
    yield '<?xml version="1.0" encoding="UTF-8"?>\n<AuditMessages>\n'
    for row in rows:
        yield ET.tostring(message(row, source_id), encoding="unicode") + "\n"
    yield "</AuditMessages>\n"
