"""Sending stored instances to a DICOM node with C-STORE.

Each instance is proposed in the transfer syntax it was stored in, so it goes out byte for byte from its
file without being decoded. Each SOP class is also proposed uncompressed (explicit, then implicit VR
little endian); when a destination refuses the stored syntax, the instance is decompressed with pydicom
and sent that way.
"""

from __future__ import annotations

import logging
import ssl
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from imex.dicom.part10 import dataset_offset, encode_dataset
from imex.dicom.syntaxes import UNCOMPRESSED
from imex.dicom.syntaxes import name as syntax_name
from imex.dicom.upper_layer import Accepted, Requestor, UpperLayerError

log = logging.getLogger("imex.dicom.scu")

MAX_CONTEXTS = 128


class AssociationFailed(ConnectionError):
    """The destination could not be reached, refused the association, or dropped it."""


class NoAcceptableContext(ValueError):
    """The destination accepts neither the stored transfer syntax nor an uncompressed one for a SOP class."""


@dataclass(frozen=True)
class Outgoing:
    """A stored instance to send: where its file is, and its SOP class and transfer syntax. `coerce`, when
    given, changes the decoded dataset before it goes (header harmonisation); without it the stored bytes
    go as they are."""

    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str
    sop_instance_uid: str
    coerce: Callable[[Dataset], object] | None = None


def plan_contexts(kinds: Iterable[tuple[str, str]]) -> list[list[tuple[str, list[str]]]]:
    """Presentation contexts for (SOP class, transfer syntax) pairs, split into groups of at most 128
    (the PS3.8 limit per association). Each pair gets its own context; each SOP class also gets one
    uncompressed fallback context."""
    contexts: list[tuple[str, list[str]]] = []
    seen_fallback: set[str] = set()
    for sop_class, ts in sorted(set(kinds)):
        if ts not in UNCOMPRESSED:
            contexts.append((sop_class, [ts]))
        if sop_class not in seen_fallback:
            seen_fallback.add(sop_class)
            contexts.append((sop_class, list(UNCOMPRESSED)))
    groups: list[list[tuple[str, list[str]]]] = []
    current: list[tuple[str, list[str]]] = []
    sop_classes_in_current: set[str] = set()
    for sop_class, syntaxes in contexts:
        if len(current) >= MAX_CONTEXTS - 1 and sop_class not in sop_classes_in_current:
            groups.append(current)
            current, sop_classes_in_current = [], set()
        current.append((sop_class, syntaxes))
        sop_classes_in_current.add(sop_class)
    if current:
        groups.append(current)
    return groups


def encoded_for(item: Outgoing, ts: str, called: str) -> tuple[bytes | memoryview, str]:
    """The dataset of a stored instance as it goes out in transfer syntax `ts`, and its SOP Instance UID:
    the stored bytes from the file when nothing changes; otherwise decoded, changed by `item.coerce`,
    decompressed when `ts` asks, and encoded again. NoAcceptableContext when it cannot be decompressed."""
    if item.coerce is None and ts == item.transfer_syntax_uid:
        data = item.path.read_bytes()
        return memoryview(data)[dataset_offset(data) :], item.sop_instance_uid
    try:
        ds = dcmread(item.path)
    except Exception as exc:  # a damaged file: this instance cannot go, the others can
        raise NoAcceptableContext(f"the stored instance {item.sop_instance_uid} cannot be read: {exc}") from None
    if item.coerce is not None:
        item.coerce(ds)
    if ts != item.transfer_syntax_uid and UID(item.transfer_syntax_uid).is_compressed:
        try:  # pydicom's handlers (pylibjpeg, numpy RLE) decode it; the instance keeps its SOP Instance UID
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:  # no decoder for it, or corrupt compressed data
            raise NoAcceptableContext(
                f"{called} refuses {syntax_name(item.transfer_syntax_uid)} and the instance cannot be "
                f"decompressed: {exc}"
            ) from None
    uid = UID(ts)
    encoded = encode_dataset(ds, implicit=uid.is_implicit_VR, little=uid.is_little_endian)
    if uid == DeflatedExplicitVRLittleEndian:
        packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        encoded = packer.compress(encoded) + packer.flush()
        if len(encoded) % 2:  # PS3.5 A.5: the deflated stream is padded to an even length (dcmtk insists)
            encoded += b"\x00"
    return encoded, str(ds.SOPInstanceUID)


class Sender:
    """One association to a destination, used to send many instances in turn (see upper_layer for why
    this does not go through pynetdicom's association machinery)."""

    def __init__(
        self,
        calling_aet: str,
        called_aet: str,
        host: str,
        port: int,
        contexts: list[tuple[str, list[str]]],
        *,
        timeout: float = 60.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.called = f"{called_aet}@{host}:{port}"
        try:
            self.requestor = Requestor(calling_aet, called_aet, host, port, contexts, timeout=timeout, tls=tls)
        except UpperLayerError as exc:
            raise AssociationFailed(str(exc)) from None

    def _choose(self, item: Outgoing) -> Accepted | None:
        accepted = self.requestor.accepted
        for ts in (item.transfer_syntax_uid, *UNCOMPRESSED):  # as stored first, then uncompressed
            cx = accepted.get((item.sop_class_uid, ts))
            if cx is not None:
                return cx
        return None

    def send(self, item: Outgoing) -> tuple[int, str]:
        """Send one instance; returns (DICOM status, error comment). Raises AssociationFailed when the
        association is lost and NoAcceptableContext when no context fits."""
        cx = self._choose(item)
        if cx is None:
            raise NoAcceptableContext(
                f"{self.called} accepts neither {syntax_name(item.transfer_syntax_uid)} nor uncompressed "
                f"transfer syntaxes for SOP class {UID(item.sop_class_uid).name or item.sop_class_uid}"
            )
        dataset, sop_instance_uid = encoded_for(item, cx.transfer_syntax, self.called)
        try:
            status = self.requestor.c_store(cx, sop_instance_uid, dataset)
        except UpperLayerError as exc:
            raise AssociationFailed(str(exc)) from None
        return int(status.get("Status", 0xFFFF)), str(status.get("ErrorComment", "") or "")

    def close(self) -> None:
        self.requestor.release()


T = TypeVar("T")


@dataclass(frozen=True)
class Sent:
    """What happened to one instance: `status` is the DICOM status, or None when it was not sent; `error`
    says why. `association_lost`: the association failed, and the rest of its batch was not sent either."""

    status: int | None
    error: str = ""
    association_lost: bool = False


def send_all(
    items: Sequence[T],
    outgoing: Callable[[T], Outgoing],
    *,
    calling_aet: str,
    called_aet: str,
    host: str,
    port: int,
    timeout: float = 60.0,
    tls: ssl.SSLContext | None = None,
) -> Iterator[tuple[T, Sent]]:
    """Send items over as few associations as the presentation-context limit allows, yielding each
    item with its outcome as soon as it is known. Stopping the iteration releases the association.
    With `tls` (a client context from imex.tls), each association runs over TLS."""
    for group in plan_contexts((outgoing(i).sop_class_uid, outgoing(i).transfer_syntax_uid) for i in items):
        classes = {sop for sop, _ in group}
        batch = [i for i in items if outgoing(i).sop_class_uid in classes]
        try:
            sender = Sender(calling_aet, called_aet, host, port, group, timeout=timeout, tls=tls)
        except AssociationFailed as exc:
            for item in batch:
                yield item, Sent(None, str(exc), association_lost=True)
            continue
        try:
            for index, item in enumerate(batch):
                out = outgoing(item)
                if not out.path.exists():
                    yield item, Sent(None, f"stored file {out.path.name} is missing")
                    continue
                try:
                    status, comment = sender.send(out)
                except NoAcceptableContext as exc:
                    yield item, Sent(None, str(exc))
                except AssociationFailed as exc:
                    for rest in batch[index:]:
                        yield rest, Sent(None, str(exc), association_lost=True)
                    break
                else:
                    yield item, Sent(status, comment)
        finally:
            sender.close()


def is_success(status: int) -> bool:
    """Success and the warning statuses (coercion, elements discarded) mean the instance was stored."""
    return status == 0x0000 or status in (0x0001, 0xB000, 0xB007, 0xB006) or (status & 0xF000) == 0xB000
