"""Locator test helpers: hospitals whose PACS the hub may sweep, a PACS that never answers, and a PACS
that holds back a C-MOVE after its first images until the test lets it go on (a throttled source)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

import peers
from imex.db.models import LocatorEntry
from imex.directory import add_institution, add_node

PATIENT_NHS = "9434765919"
PATIENT_DOB = "19700101"
OTHER_NHS = "9434765870"


def register_pacs(hub: Any, ods: str, name: str, node: str, aet: str, port: int, *, destination: bool = False) -> int:
    """An institution and its PACS, which the hub may query and retrieve; returns the node's id."""
    add_institution(hub.db, ods, name)
    row = add_node(hub.db, node, aet, "127.0.0.1", port, ods, destination=destination, query_retrieve=True)
    hub.nodes.invalidate()
    return row.id


def entries(hub: Any) -> list[LocatorEntry]:
    """The locator's entries, from a hub or a Database."""
    with getattr(hub, "db", hub).sessions() as s:
        return list(s.scalars(select(LocatorEntry).order_by(LocatorEntry.id)))


class SilentPacs:
    """Accepts TCP connections and never says anything: a PACS that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.stopped.set()
        for conn in self.held:
            conn.close()
        self.sock.close()


def _study_identifier(first: Dataset, files: list[Path]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "AccessionNumber",
        "StudyDate",
        "StudyTime",
        "StudyDescription",
    ):
        setattr(ds, keyword, first.get(keyword, ""))
    ds.IssuerOfPatientID = first.get("IssuerOfPatientID", "")
    ds.OtherPatientIDs = [str(i.PatientID) for i in first.get("OtherPatientIDsSequence", [])]
    ds.ModalitiesInStudy = first.Modality
    ds.NumberOfStudyRelatedSeries = len({dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in files})
    ds.NumberOfStudyRelatedInstances = len(files)
    return ds


class GatedPacs:
    """A Study Root C-FIND/C-MOVE SCP holding one study: a C-MOVE sends the first `first` instances, then
    waits until `gate` is set before sending the rest. It knows the hub as the move destination."""

    def __init__(self, files: list[Path], aet: str, hub_aet: str, hub_port: int, first: int = 2) -> None:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import (
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelMove,
        )

        self.files = list(files)
        self.first = first
        self.gate = threading.Event()
        self.sent = 0
        self.asked: list[str] = []  # the study date ranges of the study-level queries, in order
        self.hub = (hub_aet, hub_port)
        self.datasets = [dcmread(p, stop_before_pixels=True) for p in self.files]
        self.ae = AE(ae_title=aet)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self.ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
        for uid in {d.SOPClassUID for d in self.datasets}:
            self.ae.add_requested_context(uid)
        self.port = peers.free_port()
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_FIND, self._find), (evt.EVT_C_MOVE, self._move)],
        )

    def _find(self, event):  # type: ignore[no-untyped-def]
        level = event.identifier.QueryRetrieveLevel
        first = self.datasets[0]
        if level == "STUDY":
            self.asked.append(str(event.identifier.get("StudyDate", "")))
            yield 0xFF00, _study_identifier(first, self.files)
        elif level == "SERIES":
            for uid in dict.fromkeys(d.SeriesInstanceUID for d in self.datasets):
                members = [d for d in self.datasets if d.SeriesInstanceUID == uid]
                ds = Dataset()
                ds.QueryRetrieveLevel = "SERIES"
                ds.StudyInstanceUID = first.StudyInstanceUID
                ds.SeriesInstanceUID = uid
                ds.Modality = members[0].Modality
                ds.SeriesNumber = members[0].get("SeriesNumber", "")
                ds.SeriesDescription = members[0].get("SeriesDescription", "")
                ds.BodyPartExamined = members[0].get("BodyPartExamined", "")
                ds.NumberOfSeriesRelatedInstances = len(members)
                yield 0xFF00, ds

    def _move(self, event):  # type: ignore[no-untyped-def]
        if event.move_destination.strip() != self.hub[0]:
            yield None, None
            return
        yield "127.0.0.1", self.hub[1]
        yield len(self.files)
        for index, path in enumerate(self.files):
            if index == self.first:
                self.gate.wait(120)
            if event.is_cancelled:
                yield 0xFE00, None
                return
            self.sent += 1
            yield 0xFF00, dcmread(path)

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
