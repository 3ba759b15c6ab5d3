"""A destination PACS made with pynetdicom for priority tests: it records the order in which instances
arrive (study and SOP Instance UID) and can be slowed down per instance, so a backlog builds up."""

from __future__ import annotations

import threading
import time

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from peers import free_port

ALL_SYNTAXES = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
]


class RecordingSCP:
    """C-STORE SCP on 127.0.0.1 that appends (StudyInstanceUID, SOPInstanceUID, monotonic time) per
    instance received, after waiting `delay` seconds."""

    def __init__(self, aet: str = "RYJPACS", delay: float = 0.0) -> None:
        self.aet = aet
        self.delay = delay
        self.port = free_port()
        self.received: list[tuple[str, str, float]] = []
        self._lock = threading.Lock()
        self._server = None

    def _on_store(self, event) -> int:  # type: ignore[no-untyped-def]
        ds = event.dataset
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.received.append((str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), time.monotonic()))
        return 0x0000

    def start(self) -> RecordingSCP:
        ae = AE(ae_title=self.aet)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_SYNTAXES)
        ae.add_supported_context(Verification)
        ae.maximum_associations = 4
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def studies_in_order(self) -> list[str]:
        """Study UIDs in the order their first instance arrived."""
        with self._lock:
            return list(dict.fromkeys(study for study, _, _ in self.received))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
