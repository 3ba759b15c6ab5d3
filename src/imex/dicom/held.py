"""Count verification: which SOP instances of a study a node holds, asked with C-FIND (Study Root).

IMAGE level names each instance; a node that does not answer at IMAGE level is asked per series
(Number of Series Related Instances), then per study: a series or study holding at least as many
instances as were sent counts as held whole, one holding fewer as not held at all (its instances go again).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

from pydicom.dataset import Dataset

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
_PENDING = (0xFF00, 0xFF01)


class FindFailed(ConnectionError):
    """The node could not be asked or refused the query; the message says which."""


class _Refused(Exception):
    """This level was refused: try a coarser one."""


def _clean(uid: str) -> str:
    return "".join(ch for ch in uid if ch.isdigit() or ch == ".")[:64]


def _find(assoc, query: Dataset, where: str) -> Iterator[Dataset]:
    try:
        for status, identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
            if not status or "Status" not in status:
                raise FindFailed(f"{where} stopped answering the query")
            code = int(status.Status)
            if code in _PENDING and identifier is not None:
                yield identifier
            elif code != 0x0000 and code not in _PENDING:
                raise _Refused(f"status 0x{code:04X}")
    except (RuntimeError, ValueError, AttributeError) as exc:
        raise FindFailed(f"{where} sent an answer the hub cannot read: {exc}") from None


def held_instances(
    hub_aet: str,
    ae_title: str,
    host: str,
    port: int,
    study_uid: str,
    sent: dict[str, set[str]],
    *,
    timeout: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> tuple[set[str], str]:
    """The SOP Instance UIDs, of those `sent` ({series UID: SOP UIDs}), that the node holds, and the
    level that told (IMAGE, SERIES or STUDY)."""
    from pynetdicom import AE

    from imex.dicom import net

    net.install()
    where = f"{ae_title}@{host}:{port}"
    ae = AE(ae_title=hub_aet)
    ae.acse_timeout = ae.connection_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    ae.add_requested_context(STUDY_ROOT_FIND)
    try:
        assoc = ae.associate(host, port, ae_title=ae_title, tls_args=(tls, host) if tls is not None else None)
    except (OSError, ValueError) as exc:
        raise FindFailed(f"cannot reach {where}: {exc}") from None
    if not assoc.is_established:
        raise FindFailed(
            f"{where} did not accept a query association from {hub_aet}: it must allow the hub to query it"
        )
    try:
        errors = []
        for level in ("IMAGE", "SERIES", "STUDY"):
            try:
                return _at_level(assoc, level, _clean(study_uid), sent, where), level
            except _Refused as exc:
                errors.append(f"{level} {exc}")
        raise FindFailed(f"{where} refused every query level: {'; '.join(errors)}")
    finally:
        if assoc.is_established:
            assoc.release()


def _at_level(assoc, level: str, study_uid: str, sent: dict[str, set[str]], where: str) -> set[str]:
    held: set[str] = set()
    if level == "IMAGE":
        for series_uid, uids in sent.items():
            q = Dataset()
            q.QueryRetrieveLevel = "IMAGE"
            q.StudyInstanceUID, q.SeriesInstanceUID, q.SOPInstanceUID = study_uid, _clean(series_uid), ""
            held |= {str(i.get("SOPInstanceUID", "")) for i in _find(assoc, q, where)} & uids
        return held
    if level == "SERIES":
        q = Dataset()
        q.QueryRetrieveLevel = "SERIES"
        q.StudyInstanceUID, q.SeriesInstanceUID, q.NumberOfSeriesRelatedInstances = study_uid, "", ""
        counts = {
            str(i.get("SeriesInstanceUID", "")): int(i.get("NumberOfSeriesRelatedInstances", 0) or 0)
            for i in _find(assoc, q, where)
        }
        for series_uid, uids in sent.items():
            if counts.get(series_uid, 0) >= len(uids):
                held |= uids
        return held
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID, q.NumberOfStudyRelatedInstances = study_uid, ""
    total = sum(int(i.get("NumberOfStudyRelatedInstances", 0) or 0) for i in _find(assoc, q, where))
    every = set().union(*sent.values()) if sent else set()
    return every if total >= len(every) else set()
