"""C-FIND from the hub to a node at patient level: who the local PACS knows under an NHS number or
patient ID, so a PACS guardian can reconcile a shared study with the local record before importing it."""
from __future__ import annotations

from dataclasses import dataclass


class FindFailed(ConnectionError):
    """The node could not be asked, or refused the query; the message says which."""


@dataclass(frozen=True)
class LocalPatient:
    patient_id: str
    issuer: str
    name: str
    birth_date: str
    sex: str


def find_patients(hub_aet: str, ae_title: str, host: str, port: int, patient_id: str,
                  timeout: float = 15.0, limit: int = 50) -> list[LocalPatient]:
    """Patients the node holds with this Patient ID (exact) or Other Patient ID."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind

    from imex.dicom import net

    net.install()
    ae = AE(ae_title=hub_aet)
    ae.acse_timeout = ae.connection_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "".join(ch for ch in patient_id if ch.isprintable() and ch not in "\\*?")[:64]
    for keyword in ("PatientName", "PatientBirthDate", "PatientSex", "IssuerOfPatientID"):
        setattr(query, keyword, "")
    where = f"{ae_title}@{host}:{port}"
    try:
        assoc = ae.associate(host, port, ae_title=ae_title)
    except (OSError, ValueError) as exc:  # unreachable, or a host name that is not a name at all
        raise FindFailed(f"cannot reach {where}: {exc}") from None
    if not assoc.is_established:
        raise FindFailed(f"{where} did not accept a query association from {hub_aet}: it must know the hub "
                         "as a modality allowed to query")
    found: list[LocalPatient] = []
    try:
        for status, identifier in _answers(assoc, query, PatientRootQueryRetrieveInformationModelFind, where):
            if not status or "Status" not in status:
                raise FindFailed(f"{where} stopped answering the query")
            code = int(status.Status)
            if code in (0xFF00, 0xFF01) and identifier is not None and len(found) < limit:
                found.append(LocalPatient(str(identifier.get("PatientID", "")),
                                          str(identifier.get("IssuerOfPatientID", "") or ""),
                                          str(identifier.get("PatientName", "")),
                                          str(identifier.get("PatientBirthDate", "")),
                                          str(identifier.get("PatientSex", ""))))
            elif code != 0x0000 and code not in (0xFF00, 0xFF01):
                raise FindFailed(f"{where} refused the query with status 0x{code:04X}")
    finally:
        assoc.release()
    return found


def _answers(assoc, query, model, where: str):  # type: ignore[no-untyped-def]
    """The C-FIND responses; a node that answers with something unreadable is a failed query, not a crash."""
    try:
        yield from assoc.send_c_find(query, model)
    except (RuntimeError, ValueError, AttributeError) as exc:
        raise FindFailed(f"{where} sent an answer the hub cannot read: {exc}") from None
