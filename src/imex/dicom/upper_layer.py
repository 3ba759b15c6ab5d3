"""A lean DICOM upper-layer requestor for the delivery hot path: one blocking socket, no threads.

pynetdicom sends each P-DATA PDU through a queue to a reactor thread that polls; with a destination
that accepts 16 KiB PDUs (dcmtk's default), a 512 KiB CT slice is 32 PDUs and the queueing, polling and
GIL hand-offs cost about 10 ms per instance (measured in bench/). Here the stored file's dataset bytes
go straight from the file to the socket, fragmented to the peer's maximum PDU length, and the C-STORE
response is read on the same thread. pynetdicom's PDU classes still encode and decode the association
PDUs (PS3.8 9.3), so negotiation is not reimplemented.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
_ASSOCIATE_AC, _ASSOCIATE_RJ, _P_DATA, _RELEASE_RQ, _RELEASE_RP, _ABORT = 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
# Our own limit on what we accept from the peer, and the fragment size when the peer sets no limit.
OWN_MAX_PDU = 1 << 20
_REJECT_REASONS = {
    (1, 1): "no reason given", (1, 2): "application context not supported",
    (1, 3): "calling AE title not recognised", (1, 7): "called AE title not recognised",
    (2, 1): "no reason given", (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion", (3, 2): "local limit exceeded",
}


class UpperLayerError(ConnectionError):
    """The association could not be made or was lost; the message says what the peer did."""


class Rejected(UpperLayerError):
    pass


@dataclass(frozen=True)
class Accepted:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str


def _encode_implicit(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = True
    fp.is_little_endian = True
    write_dataset(fp, ds)
    return fp.getvalue()


class Requestor:
    """One association as requestor: negotiate, send C-STOREs one after another, release."""

    def __init__(self, calling_aet: str, called_aet: str, host: str, port: int,
                 contexts: list[tuple[str, list[str]]], *, timeout: float = 60.0) -> None:
        self.peer = f"{called_aet}@{host}:{port}"
        self.timeout = timeout
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise UpperLayerError(f"cannot connect to {self.peer}: {exc.strerror or exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.open = False
        self.message_id = 0
        try:
            self.accepted, self.peer_max_pdu = self._negotiate(calling_aet, called_aet, contexts)
        except BaseException:
            self.sock.close()
            raise
        self.open = True

    # -- PDUs ---------------------------------------------------------------------------------------

    def _recv_exact(self, n: int) -> bytes:
        buffer = bytearray(n)
        view = memoryview(buffer)
        got = 0
        while got < n:
            try:
                chunk = self.sock.recv_into(view[got:], n - got)
            except socket.timeout:
                raise UpperLayerError(f"{self.peer} did not answer within {self.timeout:.0f} s") from None
            except OSError as exc:
                raise UpperLayerError(f"connection to {self.peer} failed: {exc}") from None
            if not chunk:
                raise UpperLayerError(f"{self.peer} closed the connection")
            got += chunk
        view.release()
        return bytes(buffer)

    def _read_pdu(self) -> tuple[int, bytes]:
        header = self._recv_exact(6)
        pdu_type, _, length = struct.unpack(">BBL", header)
        if length > OWN_MAX_PDU + 1024 and pdu_type == _P_DATA:
            self.abort()
            raise UpperLayerError(f"{self.peer} sent a PDU of {length} bytes, more than the {OWN_MAX_PDU} allowed")
        return pdu_type, header + self._recv_exact(length)

    def _send(self, *parts: bytes | memoryview) -> None:
        try:
            total = sum(len(p) for p in parts)
            sent = self.sock.sendmsg(list(parts))
            if sent < total:  # rare partial write: finish with sendall on the joined remainder
                self.sock.sendall(b"".join(bytes(p) for p in parts)[sent:])
        except OSError as exc:
            raise UpperLayerError(f"sending to {self.peer} failed: {exc}") from None

    def _negotiate(self, calling: str, called: str, contexts: list[tuple[str, list[str]]]) \
            -> tuple[dict[tuple[str, str], Accepted], int]:
        rq = A_ASSOCIATE()
        rq.application_context_name = APPLICATION_CONTEXT
        rq.calling_ae_title = calling
        rq.called_ae_title = called
        proposed: dict[int, str] = {}
        for index, (abstract, syntaxes) in enumerate(contexts):
            cx = PresentationContext()
            cx.context_id = 2 * index + 1
            cx.abstract_syntax = abstract
            cx.transfer_syntax = list(syntaxes)
            proposed[cx.context_id] = abstract
            rq.presentation_context_definition_list.append(cx)
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = OWN_MAX_PDU
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
        rq.user_information = [max_length, implementation, version]
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(rq)
        self._send(pdu.encode())

        pdu_type, data = self._read_pdu()
        if pdu_type == _ASSOCIATE_RJ:
            _result, source, reason = data[7], data[8], data[9]
            raise Rejected(f"{self.peer} rejected the association "
                           f"({_REJECT_REASONS.get((source, reason), f'source {source}, reason {reason}')})")
        if pdu_type == _ABORT:
            raise UpperLayerError(f"{self.peer} aborted the association request")
        if pdu_type != _ASSOCIATE_AC:
            raise UpperLayerError(f"{self.peer} answered the association request with PDU type {pdu_type}")
        ac = A_ASSOCIATE_AC()
        ac.decode(data)
        primitive = ac.to_primitive()
        accepted: dict[tuple[str, str], Accepted] = {}
        for cx in primitive.presentation_context_definition_results_list:
            if cx.result == 0 and cx.context_id in proposed and cx.transfer_syntax:
                abstract = proposed[cx.context_id]
                ts = str(cx.transfer_syntax[0])
                accepted.setdefault((abstract, ts), Accepted(cx.context_id, abstract, ts))
        peer_max = 0
        for item in primitive.user_information:
            if isinstance(item, MaximumLengthNotification):
                peer_max = item.maximum_length_received or 0
        return accepted, peer_max

    # -- C-STORE ------------------------------------------------------------------------------------

    def _pdata(self, context_id: int, payload: memoryview | bytes, command: bool) -> None:
        """Send a message's bytes as P-DATA-TF PDUs of one PDV each, within the peer's maximum length."""
        limit = (self.peer_max_pdu or OWN_MAX_PDU) - 6  # the PDV item header takes 6 bytes
        view = memoryview(payload)
        total = len(view)
        offset = 0
        while True:
            chunk = view[offset:offset + limit]
            offset += len(chunk)
            control = (0x01 if command else 0x00) | (0x02 if offset >= total else 0x00)
            header = struct.pack(">BBLLBB", _P_DATA, 0, len(chunk) + 6, len(chunk) + 2, context_id, control)
            self._send(header, chunk)
            if offset >= total:
                break

    def c_store(self, cx: Accepted, sop_instance_uid: str, dataset: memoryview | bytes) -> Dataset:
        """Send one C-STORE-RQ with its encoded dataset; returns the C-STORE-RSP command set."""
        if not self.open:
            raise UpperLayerError(f"association with {self.peer} is closed")
        self.message_id = (self.message_id % 0xFFFF) + 1
        command = Dataset()
        command.AffectedSOPClassUID = cx.abstract_syntax
        command.CommandField = 0x0001
        command.MessageID = self.message_id
        command.Priority = 0x0000
        command.CommandDataSetType = 0x0000
        command.AffectedSOPInstanceUID = sop_instance_uid
        body = _encode_implicit(command)
        command.CommandGroupLength = len(body)
        self._pdata(cx.context_id, _encode_implicit(command), command=True)
        self._pdata(cx.context_id, dataset, command=False)
        return self._read_response()

    def _read_response(self) -> Dataset:
        fragments: list[bytes] = []
        while True:
            pdu_type, data = self._read_pdu()
            if pdu_type == _ABORT:
                self.open = False
                raise UpperLayerError(f"{self.peer} aborted the association")
            if pdu_type != _P_DATA:
                self.abort()
                raise UpperLayerError(f"{self.peer} sent PDU type {pdu_type} instead of a C-STORE response")
            pos = 6
            while pos + 6 <= len(data):
                (item_length,) = struct.unpack_from(">L", data, pos)
                control = data[pos + 5]
                fragments.append(data[pos + 6:pos + 4 + item_length])
                pos += 4 + item_length
                if control & 0x01 and control & 0x02:  # last fragment of a command
                    ds = read_dataset(BytesIO(b"".join(fragments)), True, True)
                    if int(ds.get("CommandField", 0)) != 0x8001:
                        self.abort()
                        raise UpperLayerError(f"{self.peer} answered with command 0x{ds.CommandField:04X}")
                    return ds

    # -- ending -------------------------------------------------------------------------------------

    def release(self) -> None:
        if self.open:
            self.open = False
            try:
                self._send(struct.pack(">BBLL", _RELEASE_RQ, 0, 4, 0))
                self.sock.settimeout(min(self.timeout, 10.0))
                pdu_type, _ = self._read_pdu()
                if pdu_type != _RELEASE_RP:
                    raise UpperLayerError("no release response")
            except UpperLayerError:
                pass
        self.sock.close()

    def abort(self) -> None:
        if self.open:
            self.open = False
            try:
                self.sock.sendall(struct.pack(">BBLBBBB", _ABORT, 0, 4, 0, 0, 0, 0))
            except OSError:
                pass
        self.sock.close()
