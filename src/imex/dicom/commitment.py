"""Storage Commitment Push Model (PS3.4 Annex J), the hub as SCU: asking a destination with N-ACTION
whether it has taken responsibility for the instances sent, and reading its N-EVENT-REPORT.

The report may come back on the same association (the hub waits `wait` seconds for it) or later on a new
association the destination opens to the hub's listener; both paths end in the same `on_report` callback
(routing/confirm.py), so what a report changes does not depend on how it came.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from imex.dicom.net import printable  # (importing it escapes pynetdicom's log records too)

log = logging.getLogger("imex.dicom.commitment")

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model SOP Class
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # its well-known SOP Instance
REQUEST_ACTION = 1  # N-ACTION Action Type ID: Request Storage Commitment
EVENT_SUCCESS, EVENT_FAILURES = 1, 2  # N-EVENT-REPORT Event Type IDs

# N-EVENT-REPORT-RSP statuses the hub answers with (PS3.7 C.4.1.1.2 / 10.1.1.1.8)
STATUS_SUCCESS = 0x0000
STATUS_NO_SUCH_EVENT_TYPE = 0x0113
STATUS_INVALID_ARGUMENT = 0x0115
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_NOT_AUTHORIZED = 0x0124


class CommitmentFailed(ConnectionError):
    """The destination could not be asked: unreachable, refused the association or the SOP class, or
    answered the N-ACTION with a failure status. The message says which."""


class MalformedReport(ValueError):
    """An N-EVENT-REPORT the hub cannot read as a Storage Commitment result."""


@dataclass(frozen=True)
class Report:
    """A Storage Commitment result: which instances the destination holds and which it failed, with the
    failure reason it gave (PS3.4 J.3.2.1.1, 0x0110 processing failure, 0x0112 no such object, ...)."""

    transaction_uid: str
    committed: frozenset[str]
    failed: dict[str, int] = field(default_factory=dict)


# (report, calling AE title of the association it came on, or None for the hub's own association)
#   -> (status, comment) to answer with
ReportHandler = Callable[[Report, "str | None"], "tuple[int, str]"]


def _sop_uids(ds: Dataset, keyword: str) -> list[tuple[str, int | None]]:
    found = []
    for item in ds.get(keyword, None) or []:
        uid = str(item.get("ReferencedSOPInstanceUID", "") or "").strip()
        if not uid or len(uid) > 64:
            raise MalformedReport(f"{keyword} holds an item without a valid Referenced SOP Instance UID")
        reason = item.get("FailureReason", None)
        found.append((uid, int(reason) if reason is not None else None))
    return found


def parse_report(event_type: int, ds: Dataset) -> Report:
    """The report in an N-EVENT-REPORT dataset; MalformedReport when it is not one."""
    if event_type not in (EVENT_SUCCESS, EVENT_FAILURES):
        raise MalformedReport(f"event type {event_type} is not a Storage Commitment result (1 or 2)")
    try:
        transaction = str(ds.get("TransactionUID", "") or "").strip()
        if not transaction or len(transaction) > 64:
            raise MalformedReport("the report has no Transaction UID")
        committed = [uid for uid, _ in _sop_uids(ds, "ReferencedSOPSequence")]
        failed = {uid: reason or STATUS_PROCESSING_FAILURE for uid, reason in _sop_uids(ds, "FailedSOPSequence")}
    except MalformedReport:
        raise
    except Exception as exc:  # a dataset pydicom cannot decode lazily: bad VRs, truncated items
        raise MalformedReport(f"unreadable report: {type(exc).__name__}: {exc}") from None
    if event_type == EVENT_FAILURES and not failed:
        raise MalformedReport("event type 2 (failures exist) without a Failed SOP Sequence")
    return Report(transaction, frozenset(committed) - set(failed), failed)


def decode_dataset(raw: bytes, transfer_syntax: str) -> Dataset:
    """A dataset received on the hub's listener, in the presentation context's transfer syntax."""
    if transfer_syntax not in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
        raise MalformedReport(f"transfer syntax {transfer_syntax} is not accepted for Storage Commitment")
    try:
        ds = read_dataset(BytesIO(raw), transfer_syntax == ImplicitVRLittleEndian, True)
        for _ in ds.iterall():  # decode now, so a malformed element fails here and not later
            pass
        return ds
    except Exception as exc:
        raise MalformedReport(f"unreadable dataset: {type(exc).__name__}: {exc}") from None


def request_dataset(transaction_uid: str, instances: Iterable[tuple[str, str]]) -> Dataset:
    """The N-ACTION-RQ dataset: the Transaction UID and a Referenced SOP Sequence of (class, instance)."""
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    refs = []
    for sop_class, sop_uid in instances:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        refs.append(item)
    ds.ReferencedSOPSequence = refs
    return ds


def request(
    hub_aet: str,
    ae_title: str,
    host: str,
    port: int,
    transaction_uid: str,
    instances: list[tuple[str, str]],
    *,
    on_report: ReportHandler,
    wait: float,
    answered: Callable[[], bool],
    timeout: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> bool:
    """Send the N-ACTION and wait up to `wait` seconds on the same association for the report (handled by
    `on_report`) or for `answered()` (a report that came on another association). True when answered;
    False when the destination accepted the request but has not answered yet. CommitmentFailed when it
    could not be asked."""
    from pynetdicom import AE, build_role, evt

    from imex.dicom import net

    net.install()
    where = f"{ae_title}@{host}:{port}"
    got = threading.Event()

    def handle(event) -> tuple[int, Dataset | None]:
        try:
            report = parse_report(int(event.event_type), event.event_information)
        except MalformedReport as exc:
            log.warning("malformed N-EVENT-REPORT from %s: %s", printable(where), printable(exc))
            return STATUS_INVALID_ARGUMENT, None
        status, comment = on_report(report, None)
        if status == STATUS_SUCCESS:
            got.set()
        elif comment:
            log.warning("N-EVENT-REPORT from %s answered 0x%04X: %s", printable(where), status, printable(comment))
        return status, None

    ae = AE(ae_title=hub_aet)
    ae.acse_timeout = ae.connection_timeout = ae.network_timeout = ae.dimse_timeout = timeout
    ae.add_requested_context(STORAGE_COMMITMENT, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
    # the hub stays SCU on this association, but may receive the N-EVENT-REPORT on it (PS3.4 J.3.3)
    role = build_role(STORAGE_COMMITMENT, scu_role=True, scp_role=False)
    try:
        assoc = ae.associate(
            host,
            port,
            ae_title=ae_title,
            ext_neg=[role],
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, handle)],
            tls_args=(tls, host) if tls is not None else None,
        )
    except (OSError, ValueError) as exc:
        raise CommitmentFailed(f"cannot reach {where}: {exc}") from None
    if not assoc.is_established:
        raise CommitmentFailed(f"{where} refused a Storage Commitment association from {hub_aet}")
    try:
        if not any(cx.abstract_syntax == STORAGE_COMMITMENT for cx in assoc.accepted_contexts):
            raise CommitmentFailed(f"{where} does not support Storage Commitment (Push Model SOP class refused)")
        status, _reply = assoc.send_n_action(
            request_dataset(transaction_uid, instances), REQUEST_ACTION, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
        if not status or "Status" not in status:
            raise CommitmentFailed(f"{where} did not answer the Storage Commitment request")
        code = int(status.Status)
        if code != 0x0000:
            comment = str(status.get("ErrorComment", "") or "")
            raise CommitmentFailed(
                f"{where} refused the Storage Commitment request with status 0x{code:04X}"
                + (f" ({comment})" if comment else "")
            )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and assoc.is_established:
            if got.wait(0.2) or answered():
                return True
        return got.is_set() or answered()
    finally:
        if assoc.is_established:
            assoc.release()


def answer_event_report(
    calling_aet: str,
    sop_class: str,
    sop_instance: str,
    event_type: int,
    raw: bytes,
    transfer_syntax: str,
    on_report: ReportHandler,
) -> tuple[int, str]:
    """The hub's listener received an N-EVENT-REPORT on a new association: check it is a Storage
    Commitment result, then let `on_report` apply it (it checks the transaction and the sender)."""
    if sop_class != STORAGE_COMMITMENT:
        return STATUS_NOT_AUTHORIZED, "only Storage Commitment reports are accepted"
    if sop_instance and sop_instance != STORAGE_COMMITMENT_INSTANCE:
        return STATUS_INVALID_ARGUMENT, "not the Storage Commitment Push Model SOP instance"
    if event_type not in (EVENT_SUCCESS, EVENT_FAILURES):
        return STATUS_NO_SUCH_EVENT_TYPE, f"event type {event_type} is not 1 or 2"
    try:
        report = parse_report(event_type, decode_dataset(raw, transfer_syntax))
    except MalformedReport as exc:
        log.warning("malformed N-EVENT-REPORT from %s: %s", printable(calling_aet), printable(exc))
        return STATUS_INVALID_ARGUMENT, str(exc)
    return on_report(report, calling_aet)
