"""A destination PACS made with pynetdicom that stores instances and answers Storage Commitment: on the
same association or on a new one to the hub, reporting chosen instances as failed a chosen number of
times, or staying silent for the first requests."""

from __future__ import annotations

import threading
import time

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification

from peers import free_port

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


class CommitmentPeer:
    """`refuse` maps SOP Instance UIDs to how many reports list them as failed; `silent` is how many
    N-ACTIONs get a success response but never a report; `mode` is "same" or "new" (association)."""

    def __init__(
        self,
        aet: str = "RYJPACS",
        *,
        mode: str = "new",
        hub: tuple[str, str, int] | None = None,
        refuse: dict[str, int] | None = None,
        silent: int = 0,
    ) -> None:
        self.aet = aet
        self.mode = mode
        self.hub = hub  # (AE title, host, port) to report to on a new association
        self.refuse = dict(refuse or {})
        self.silent = silent
        self.port = free_port()
        self.stored: list[str] = []
        self.actions: list[tuple[str, list[str]]] = []  # (transaction UID, referenced SOP UIDs)
        self.report_statuses: list[int] = []
        self._lock = threading.Lock()
        self._server = None

    def _on_store(self, event) -> int:  # type: ignore[no-untyped-def]
        with self._lock:
            self.stored.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    def _on_action(self, event):  # type: ignore[no-untyped-def]
        info = event.action_information
        refs = [(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)) for i in info.ReferencedSOPSequence]
        with self._lock:
            self.actions.append((str(info.TransactionUID), [uid for _, uid in refs]))
            quiet = len(self.actions) <= self.silent
        if not quiet:
            threading.Thread(
                target=self._report, args=(event.assoc, str(info.TransactionUID), refs), daemon=True
            ).start()
        return 0x0000, None

    def report_dataset(self, transaction: str, refs: list[tuple[str, str]]) -> tuple[int, Dataset]:
        ok, bad = [], []
        with self._lock:
            for sop_class, uid in refs:
                item = Dataset()
                item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, uid
                if self.refuse.get(uid, 0) > 0:
                    self.refuse[uid] -= 1
                    item.FailureReason = 0x0110
                    bad.append(item)
                elif uid in self.stored:
                    ok.append(item)
                else:
                    item.FailureReason = 0x0112  # no such object instance
                    bad.append(item)
        ds = Dataset()
        ds.TransactionUID = transaction
        ds.ReferencedSOPSequence = ok
        if bad:
            ds.FailedSOPSequence = bad
        return (2 if bad else 1), ds

    def _report(self, assoc, transaction: str, refs: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
        time.sleep(0.2)  # after the N-ACTION response has gone
        event_type, ds = self.report_dataset(transaction, refs)
        if self.mode == "same":
            status = assoc.send_n_event_report(ds, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE)[0]
        else:
            status = send_report(self.aet, self.hub, ds, event_type)
        with self._lock:
            self.report_statuses.append(int(status.Status) if status and "Status" in status else -1)

    def start(self) -> CommitmentPeer:
        ae = AE(ae_title=self.aet)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, SYNTAXES)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StorageCommitmentPushModel, SYNTAXES)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store), (evt.EVT_N_ACTION, self._on_action)],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


def send_report(
    calling_aet: str,
    hub: tuple[str, str, int] | None,
    ds: Dataset | None,
    event_type: int,
    sop_instance: str = COMMITMENT_INSTANCE,
) -> Dataset | None:
    """Open a new association to the hub as the Storage Commitment SCP and send one N-EVENT-REPORT;
    the response's status dataset (None when the hub refused the association)."""
    assert hub is not None
    hub_aet, host, port = hub
    ae = AE(ae_title=calling_aet)
    ae.add_requested_context(StorageCommitmentPushModel, SYNTAXES)
    assoc = ae.associate(
        host, port, ae_title=hub_aet, ext_neg=[build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)]
    )
    if not assoc.is_established:
        return None
    try:
        status, _ = assoc.send_n_event_report(ds, event_type, StorageCommitmentPushModel, sop_instance)
        return status
    finally:
        if assoc.is_established:
            assoc.release()
