"""The demo's PACS: a folder of DICOM files behind a pynetdicom AE that stores what it is sent (C-STORE) and
answers Query/Retrieve (C-FIND at PATIENT, STUDY, SERIES and IMAGE level, Patient and Study Root; C-MOVE to
the AE titles it knows), so the hub's PACS search, pre-authorised exchanges, requests and the locator's
sweeps have something real to talk to without installing a PACS."""

from __future__ import annotations

import fnmatch
import logging
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.presentation import StoragePresentationContexts

from imex.dicom import net
from imex.dicom.syntaxes import ACCEPTED

log = logging.getLogger("imex.demo.pacs")

# Query/Retrieve information models it answers (Patient Root and Study Root, FIND and MOVE)
QR_MODELS = (
    "1.2.840.10008.5.1.4.1.2.1.1",
    "1.2.840.10008.5.1.4.1.2.1.2",
    "1.2.840.10008.5.1.4.1.2.2.1",
    "1.2.840.10008.5.1.4.1.2.2.2",
)
VERIFICATION = "1.2.840.10008.1.1"
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
# what identifies one entity of each level, and which attributes belong to it (a key of a lower level in a
# query at a higher one is ignored, as PS3.4 C.2.2.1 allows)
_UNIQUE = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_DATES = {"StudyDate", "SeriesDate", "PatientBirthDate", "ContentDate", "AcquisitionDate"}
_TIMES = {"StudyTime", "SeriesTime", "ContentTime"}
_NOT_MATCHED = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability"}
# Where a C-MOVE may send: AE title -> (host, port), looked up when the move is asked for
Destinations = Callable[[str], tuple[str, int] | None]


@dataclass(frozen=True)
class Held:
    """One instance in the folder: where its file is and its header (no pixels)."""

    path: Path
    header: Dataset


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _in_range(have: str, wanted: str) -> bool:
    """DICOM range matching for dates and times: `A-B`, `A-`, `-B` or one value."""
    if "-" not in wanted:
        return bool(have) and have.startswith(wanted)  # a time matches to the precision asked for
    low, _, high = wanted.partition("-")
    return bool(have) and (not low or have >= low) and (not high or have[: len(high)] <= high)


def matches(keyword: str, wanted: str, have: list[str]) -> bool:
    """Whether one of an entity's values `have` matches the query value `wanted` (universal when empty):
    list of UIDs, date and time ranges, `*` and `?` wildcards (names without regard to case)."""
    if not wanted or wanted == "*":
        return True
    if keyword.endswith("UID") or keyword == "ModalitiesInStudy":
        options = set(wanted.split("\\"))
        return any(h in options for h in have)
    if keyword in _DATES or keyword in _TIMES:
        return any(_in_range(h, wanted) for h in have)
    if keyword.startswith(("PatientName", "ReferringPhysician")) or keyword.endswith("Name"):
        pattern = re.compile(fnmatch.translate(wanted.upper()))
        return any(pattern.match(h.upper()) for h in have)
    if "*" in wanted or "?" in wanted:
        pattern = re.compile(fnmatch.translate(wanted))
        return any(pattern.match(h) for h in have)
    return wanted in have


class Folder:
    """An index of the DICOM files under a folder, kept in memory and updated as instances are stored."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.Lock()
        self.held: dict[str, Held] = {}
        root.mkdir(parents=True, exist_ok=True)
        for path in sorted(root.rglob("*.dcm")):
            self._add(path)

    def _add(self, path: Path) -> None:
        try:
            header = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as exc:
            log.warning("demo PACS: %s is not readable DICOM: %s", path, exc)
            return
        with self.lock:
            self.held[str(header.SOPInstanceUID)] = Held(path, header)

    def store(self, ds: Dataset, encoded: bytes) -> Path:
        path = self.root / f"{ds.SOPInstanceUID}.dcm"
        tmp = path.with_suffix(".part")
        tmp.write_bytes(encoded)
        tmp.replace(path)
        self._add(path)
        return path

    def instances(self) -> list[Held]:
        with self.lock:
            return list(self.held.values())

    def find(self, query: Dataset, level: str) -> list[Dataset]:
        """The identifiers answering a C-FIND at `level`: one per patient, study, series or instance."""
        groups: dict[str, list[Held]] = {}
        for held in self.instances():
            groups.setdefault(_text(held.header.get(_UNIQUE[level], "")), []).append(held)
        wanted = [(e.keyword, _text(e.value)) for e in query if e.keyword and e.keyword not in _NOT_MATCHED]
        answers = []
        for members in groups.values():
            values = _entity_values(members, level)
            if all(matches(kw, value, values.get(kw, [])) for kw, value in wanted):
                answer = Dataset()
                answer.QueryRetrieveLevel = level
                for kw, _ in wanted:
                    setattr(answer, kw, _answer_value(values.get(kw, [])))
                answers.append(answer)
        return answers

    def select(self, query: Dataset) -> list[Held]:
        """The instances a C-MOVE of `query` sends: those of the patients, studies, series or instances
        whose unique keys it lists."""
        level = str(query.get("QueryRetrieveLevel", "")).upper()
        chosen = self.instances()
        for lvl in LEVELS[: LEVELS.index(level) + 1] if level in LEVELS else ():
            keyword = _UNIQUE[lvl]
            wanted = _text(query.get(keyword, ""))
            if wanted:
                options = set(wanted.split("\\"))
                chosen = [h for h in chosen if _text(h.header.get(keyword, "")) in options]
        return chosen


def _entity_values(members: list[Held], level: str) -> dict[str, list[str]]:
    """Every attribute of one entity as the list of its distinct values, plus the computed ones
    (ModalitiesInStudy, the NumberOf... counts)."""
    values: dict[str, list[str]] = {}
    for held in members:
        for element in held.header:
            if element.keyword and element.VR != "SQ" and element.keyword != "PixelData":
                text = _text(element.value)
                for part in text.split("\\") if element.VM > 1 else [text]:
                    bucket = values.setdefault(element.keyword, [])
                    if part not in bucket:
                        bucket.append(part)
    studies = {_text(h.header.get("StudyInstanceUID")) for h in members}
    series = {_text(h.header.get("SeriesInstanceUID")) for h in members}
    values["ModalitiesInStudy"] = sorted({_text(h.header.get("Modality")) for h in members} - {""})
    values["NumberOfPatientRelatedStudies"] = [str(len(studies))]
    values["NumberOfPatientRelatedSeries"] = values["NumberOfStudyRelatedSeries"] = [str(len(series))]
    values["NumberOfPatientRelatedInstances"] = values["NumberOfStudyRelatedInstances"] = [str(len(members))]
    values["NumberOfSeriesRelatedInstances"] = [str(len(members))]
    if level in ("PATIENT", "STUDY"):  # series-level attributes of a study differ between its series
        for keyword in ("SeriesInstanceUID", "SOPInstanceUID", "SeriesNumber", "InstanceNumber"):
            values.pop(keyword, None)
    return values


def _answer_value(values: list[str]) -> str | list[str]:
    if not values:
        return ""
    return values[0] if len(values) == 1 else values


class DemoPacs:
    """A PACS holding the files under `folder`: it stores what it is sent, and answers C-FIND and C-MOVE;
    `destinations` says where a C-MOVE may send (the hub, by its AE title)."""

    def __init__(self, ae_title: str, folder: Path, port: int, destinations: Destinations) -> None:
        self.ae_title = ae_title
        self.folder = Folder(folder)
        self.port = port
        self.destinations = destinations
        self.server: Any = None

    def start(self) -> DemoPacs:
        net.install()
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(VERIFICATION)
        for model in QR_MODELS:
            ae.add_supported_context(model)
        for cx in StoragePresentationContexts:
            if cx.abstract_syntax is not None:  # always set on pynetdicom's predefined contexts
                ae.add_supported_context(cx.abstract_syntax, list(ACCEPTED))
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_MOVE, self._on_move),
        ]
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        self.port = self.server.server_address[1]
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_store(self, event: Any) -> int:
        self.folder.store(event.dataset, event.encoded_dataset())
        return 0x0000

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query: Dataset = event.identifier
        level = str(query.get("QueryRetrieveLevel", "")).upper()
        if level not in LEVELS:
            yield 0xA900, None  # identifier does not match the SOP class
            return
        for answer in self.folder.find(query, level):
            if event.is_cancelled:
                yield 0xFE00, None
                return
            answer.RetrieveAETitle = self.ae_title
            yield 0xFF00, answer

    def _on_move(self, event: Any) -> Iterator[Any]:
        destination = (event.move_destination or "").strip()
        address = self.destinations(destination)
        if address is None:
            log.warning("demo PACS %s: C-MOVE to unknown AE title %r refused", self.ae_title, destination)
            yield None, None
            return
        chosen = self.folder.select(event.identifier)
        classes = sorted({str(h.header.SOPClassUID) for h in chosen})
        contexts = [build_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for uid in classes[:128]]
        yield address[0], address[1], {"contexts": contexts}
        yield len(chosen)
        for held in chosen:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, dcmread(held.path)
