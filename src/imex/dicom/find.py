"""C-FIND from the hub to a node at patient level: who the local PACS knows under an NHS number or
patient ID, so a PACS guardian can reconcile a shared study with the local record before importing it."""

from __future__ import annotations

from dataclasses import dataclass

from imex.dicom.query import FindFailed, NodeAddress, association, clean

__all__ = ["FindFailed", "LocalPatient", "find_patients"]


@dataclass(frozen=True)
class LocalPatient:
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str


def find_patients(
    hub_aet: str, ae_title: str, host: str, port: int, patient_id: str, timeout: float = 15.0, limit: int = 50
) -> list[LocalPatient]:
    """Patients the node holds with this Patient ID (exact) or Other Patient ID."""
    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import uid_to_sop_class

    Model = uid_to_sop_class("1.2.840.10008.5.1.4.1.2.1.1")  # Patient Root Query/Retrieve Information Model - FIND

    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = clean(patient_id)
    for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "IssuerOfPatientID"):
        setattr(query, keyword, "")
    node = NodeAddress(ae_title, host, port)
    found: list[LocalPatient] = []
    with association(hub_aet, node, Model, timeout) as assoc:
        try:
            for status, identifier in assoc.send_c_find(query, Model):
                if not status or "Status" not in status:
                    raise FindFailed(f"{node} stopped answering the query")
                code = int(status.Status)
                if code in (0xFF00, 0xFF01) and identifier is not None and len(found) < limit:
                    found.append(
                        LocalPatient(
                            str(identifier.get("PatientID", "")),
                            str(identifier.get("IssuerOfPatientID", "") or ""),
                            str(identifier.get("PatientName", "")),
                            str(identifier.get("PatientBirthDate", "")),
                            str(identifier.get("PatientSex", "")),
                        )
                    )
                elif code != 0x0000 and code not in (0xFF00, 0xFF01):
                    raise FindFailed(f"{node} refused the query with status 0x{code:04X}")
        except (RuntimeError, ValueError, AttributeError, TypeError) as exc:
            raise FindFailed(f"{node} sent an answer the hub cannot read: {exc}") from None
    return found
