"""Sending stored instances to a DICOM node with C-STORE.

Each instance is proposed in the transfer syntax it was stored in, so it goes out byte for byte from its
file without being decoded. Each SOP class is also proposed uncompressed (explicit, then implicit VR
little endian); when a destination refuses the stored syntax, the instance is decompressed with pydicom
and sent that way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from pydicom import dcmread
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association

from imex.dicom import net
from imex.dicom.syntaxes import UNCOMPRESSED
from imex.dicom.syntaxes import name as syntax_name

log = logging.getLogger("imex.dicom.scu")

MAX_CONTEXTS = 128


class AssociationFailed(ConnectionError):
    """The destination could not be reached, refused the association, or dropped it."""


class NoAcceptableContext(ValueError):
    """The destination accepts neither the stored transfer syntax nor an uncompressed one for a SOP class."""


@dataclass(frozen=True)
class Outgoing:
    """A stored instance to send: where its file is, and its SOP class and transfer syntax."""

    path: Path
    sop_class_uid: str
    transfer_syntax_uid: str


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


class Sender:
    """One association to a destination, used to send many instances in turn."""

    def __init__(self, calling_aet: str, called_aet: str, host: str, port: int,
                 contexts: list[tuple[str, list[str]]], *, timeout: float = 60.0, max_pdu: int = 0) -> None:
        net.install()
        _config.STORE_SEND_CHUNKED_DATASET = True
        ae = AE(ae_title=calling_aet)
        ae.acse_timeout = timeout
        ae.dimse_timeout = timeout
        ae.network_timeout = timeout
        ae.connection_timeout = timeout
        ae.maximum_pdu_size = max_pdu
        for sop_class, syntaxes in contexts:
            ae.add_requested_context(sop_class, syntaxes)
        self.called = f"{called_aet}@{host}:{port}"
        connected: list[bool] = []
        try:
            assoc = ae.associate(host, port, ae_title=called_aet,
                                 evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: connected.append(True))])
        except OSError as exc:  # e.g. a host name that does not resolve
            raise AssociationFailed(f"cannot connect to {self.called}: {exc}") from None
        if not assoc.is_established:
            if not connected:
                raise AssociationFailed(f"cannot connect to {self.called}: connection refused or unreachable")
            if assoc.is_rejected:
                raise AssociationFailed(f"{self.called} rejected the association ({_reject_reason(assoc)})")
            if assoc.is_aborted:
                raise AssociationFailed(f"{self.called} aborted the association request")
            raise AssociationFailed(f"{self.called} did not answer the association request")
        self.assoc: Association = assoc
        self._accepted: dict[tuple[str, str], bool] = {}
        for cx in assoc.accepted_contexts:
            self._accepted[(cx.abstract_syntax, cx.transfer_syntax[0])] = True

    def _choose(self, item: Outgoing) -> str | None:
        if (item.sop_class_uid, item.transfer_syntax_uid) in self._accepted:
            return item.transfer_syntax_uid
        for ts in UNCOMPRESSED:
            if (item.sop_class_uid, ts) in self._accepted:
                return ts
        return None

    def send(self, item: Outgoing) -> tuple[int, str]:
        """Send one instance; returns (DICOM status, error comment). Raises AssociationFailed when the
        association is lost and NoAcceptableContext when no context fits."""
        if not self.assoc.is_established:
            raise AssociationFailed(f"association with {self.called} was lost")
        ts = self._choose(item)
        if ts is None:
            raise NoAcceptableContext(
                f"{self.called} accepts neither {syntax_name(item.transfer_syntax_uid)} nor uncompressed "
                f"transfer syntaxes for SOP class {UID(item.sop_class_uid).name or item.sop_class_uid}")
        if ts == item.transfer_syntax_uid:
            status = self.assoc.send_c_store(item.path)
        else:
            try:
                ds = dcmread(item.path)
                if UID(item.transfer_syntax_uid).is_compressed:
                    # pydicom's handlers (pylibjpeg, numpy RLE) decode it; the instance keeps its SOP Instance UID
                    ds.decompress(generate_instance_uid=False)
            except Exception as exc:  # no decoder for it, or corrupt compressed data
                raise NoAcceptableContext(
                    f"{self.called} refuses {syntax_name(item.transfer_syntax_uid)} and the instance cannot be "
                    f"decompressed: {exc}") from None
            status = self.assoc.send_c_store(ds)
        if not status or "Status" not in status:
            if not self.assoc.is_established:
                raise AssociationFailed(f"{self.called} dropped the association during C-STORE")
            raise AssociationFailed(f"no C-STORE response from {self.called}")
        return int(status.Status), str(status.get("ErrorComment", "") or "")

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()
        else:
            self.assoc.abort()


T = TypeVar("T")


@dataclass(frozen=True)
class Sent:
    """What happened to one instance: `status` is the DICOM status, or None when it was not sent; `error`
    says why. `association_lost`: the association failed, and the rest of its batch was not sent either."""

    status: int | None
    error: str = ""
    association_lost: bool = False


def send_all(items: Sequence[T], outgoing: Callable[[T], Outgoing], *, calling_aet: str, called_aet: str,
             host: str, port: int, timeout: float = 60.0) -> Iterator[tuple[T, Sent]]:
    """Send items over as few associations as the presentation-context limit allows, yielding each
    item with its outcome as soon as it is known. Stopping the iteration releases the association."""
    for group in plan_contexts((outgoing(i).sop_class_uid, outgoing(i).transfer_syntax_uid) for i in items):
        classes = {sop for sop, _ in group}
        batch = [i for i in items if outgoing(i).sop_class_uid in classes]
        try:
            sender = Sender(calling_aet, called_aet, host, port, group, timeout=timeout)
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


def _reject_reason(assoc: Association) -> str:
    rsp = assoc.acceptor.primitive
    if rsp is None:
        return "no reason given"
    reasons = {
        (1, 2): "no reason given", (1, 3): "calling AE title not recognised",
        (1, 7): "called AE title not recognised", (2, 1): "no reason given",
        (2, 2): "application context not supported", (3, 1): "temporary congestion",
        (3, 2): "local limit exceeded", (2, 3): "local limit exceeded",
    }
    return reasons.get((rsp.result_source, rsp.diagnostic), f"source {rsp.result_source}, reason {rsp.diagnostic}")


def is_success(status: int) -> bool:
    """Success and the warning statuses (coercion, elements discarded) mean the instance was stored."""
    return status == 0x0000 or status in (0x0001, 0xB000, 0xB007, 0xB006) or (status & 0xF000) == 0xB000
