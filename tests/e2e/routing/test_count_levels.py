"""Count verification with a destination that does not answer C-FIND at IMAGE level: the hub asks for
series counts instead, and a series holding fewer instances than were sent is sent again whole."""

from __future__ import annotations

import threading

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import select

import peers
from hubtools import register_hospitals, wait_until
from imex.db.models import Transfer, TransferEvent
from imex.directory import add_node
from imex.samples import make_study


class SeriesOnlyPacs:
    """Stores instances ({series: {SOP UIDs}}) and answers C-FIND at SERIES and STUDY level only."""

    def __init__(self) -> None:
        self.port = peers.free_port()
        self.held: dict[str, set[str]] = {}
        self.levels: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title="RYJPACS")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._store), (evt.EVT_C_FIND, self._find)],
        )

    def _store(self, event) -> int:  # type: ignore[no-untyped-def]
        ds = event.dataset
        with self._lock:
            self.held.setdefault(str(ds.SeriesInstanceUID), set()).add(str(ds.SOPInstanceUID))
        return 0x0000

    def _find(self, event):  # type: ignore[no-untyped-def]
        level = str(event.identifier.QueryRetrieveLevel)
        self.levels.append(level)
        if level == "IMAGE":
            yield 0xC000, None  # unable to process
            return
        with self._lock:
            held = {k: set(v) for k, v in self.held.items()}
        if level == "SERIES":
            for series_uid, uids in held.items():
                answer = Dataset()
                answer.QueryRetrieveLevel = "SERIES"
                answer.SeriesInstanceUID = series_uid
                answer.NumberOfSeriesRelatedInstances = len(uids)
                yield 0xFF00, answer
        else:
            yield 0xC000, None

    def stop(self) -> None:
        self.server.shutdown()


def test_series_counts_when_image_level_is_refused(make_config, start_hub, tmp_path):
    pacs = SeriesOnlyPacs()
    try:
        hub = start_hub(make_config(confirm__scan_interval=3600.0))
        register_hospitals(hub, dest_port=pacs.port)
        add_node(hub.db, "IMPERIAL_PACS", "RYJPACS", "127.0.0.1", pacs.port, "RYJ", update=True, confirm="count")
        hub.nodes.invalidate()
        files = make_study(tmp_path / "s", series=2, instances_per_series=3)
        assert peers.storescu(files, hub.listener.port, "RYJ").statuses == [0] * 6

        def state() -> str:
            with hub.db.session() as s:
                return s.scalar(select(Transfer.state))

        wait_until(lambda: state() == "delivered", message="delivered")
        short = sorted(pacs.held)[0]
        pacs.held[short].pop()  # the PACS lost one instance of this series

        def confirmed() -> bool:
            hub.confirmer.run_once()
            return state() == "confirmed"

        wait_until(confirmed, timeout=60, interval=0.3, message="series re-sent and confirmed")
        assert all(len(uids) == 3 for uids in pacs.held.values())
        assert "IMAGE" in pacs.levels and "SERIES" in pacs.levels
        with hub.db.session() as s:
            events = [(e.event, e.detail) for e in s.scalars(select(TransferEvent).order_by(TransferEvent.id))]
        resend = [d for e, d in events if e == "confirm-resend"]
        assert len(resend) == 1 and "did not confirm 3 of 6" in resend[0] and "SERIES level" in resend[0]
    finally:
        pacs.stop()
