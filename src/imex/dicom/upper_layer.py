"""A lean DICOM upper-layer requestor for the delivery hot path: one blocking socket, no threads.

pynetdicom sends each P-DATA PDU through a queue to a reactor thread that polls; with a destination
that accepts 16 KiB PDUs (dcmtk's default), a 512 KiB CT slice is 32 PDUs and the queueing, polling and
GIL hand-offs cost about 10 ms per instance (measured in bench/). Here the stored file's dataset bytes
go straight from the file to the socket, fragmented to the peer's maximum PDU length, and the C-STORE
response is read on the same thread. pynetdicom's PDU classes still encode and decode the association
PDUs (PS3.8 9.3), so negotiation is not reimplemented.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from dataclasses import dataclass

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

from imex.dicom.net import printable  # (importing it escapes pynetdicom's log records too)
from imex.dicom.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

log = logging.getLogger("imex.dicom.upper_layer")

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA, RELEASE_RQ, RELEASE_RP, ABORT = 1, 2, 3, 4, 5, 6, 7
# Our own limit on what we accept from the peer, and the fragment size when the peer sets no limit.
OWN_MAX_PDU = 1 << 20
# The smallest Maximum Length Received the hub deals with (0 is "no limit"). At 6 bytes or fewer a PDV
# carries no data at all, so a message would never end; dcmtk never goes below 4096. Peers announcing
# less are refused, both ways, rather than flooded with tiny PDUs.
MIN_PEER_PDU = 1024
# A command set is a few hundred bytes: more, without its last fragment, is not a DIMSE command.
MAX_COMMAND = 16 << 10
_REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def reject_reason(source: int, reason: int) -> str:
    """The words for an A-ASSOCIATE-RJ source and reason (PS3.8 9.3.4)."""
    return _REJECT_REASONS.get((source, reason), f"source {source}, reason {reason}")


class UpperLayerError(ConnectionError):
    """The association could not be made or was lost; the message says what the peer did."""


class PeerTimeout(UpperLayerError):
    """The peer sent nothing for the whole timeout."""


class Rejected(UpperLayerError):
    pass


@dataclass(frozen=True)
class Accepted:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str


class PduStream:
    """PDUs over one blocking socket: read whole PDUs, send messages as P-DATA-TF, abort, close."""

    def __init__(self, sock: socket.socket, peer: str, timeout: float | None) -> None:
        self.sock = sock
        self.peer = peer
        self.timeout = timeout
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def recv_exact(self, n: int) -> bytes:
        # grows with what arrives: a declared length is not trusted with an allocation
        buffer = bytearray(min(n, 1 << 20))
        got = 0
        while got < n:
            if got == len(buffer):
                buffer.extend(bytes(min(len(buffer), n - got)))
            try:
                with memoryview(buffer) as view:
                    chunk = self.sock.recv_into(view[got:], len(buffer) - got)
            except TimeoutError:
                raise PeerTimeout(f"{self.peer} sent nothing for {self.timeout:.0f} s") from None
            except OSError as exc:
                raise UpperLayerError(f"connection to {self.peer} failed: {exc}") from None
            if not chunk:
                raise UpperLayerError(f"{self.peer} closed the connection")
            got += chunk
        return bytes(buffer)

    def read_pdu(self, max_length: int) -> tuple[int, bytes]:
        """(PDU type, the whole PDU); a PDU longer than `max_length` is refused with an A-ABORT."""
        header = self.recv_exact(6)
        pdu_type, _, length = struct.unpack(">BBL", header)
        if length > max_length:
            self.abort(0x02, 0x06)  # service provider: invalid PDU parameter value
            raise UpperLayerError(f"{self.peer} sent a PDU of {length} bytes, more than the {max_length} allowed")
        return pdu_type, header + self.recv_exact(length)

    def send(self, *parts: bytes | memoryview) -> None:
        try:
            if isinstance(self.sock, ssl.SSLSocket):  # TLS has no sendmsg: small parts in one record
                for part in (b"".join(parts),) if sum(len(p) for p in parts) < 65536 else parts:
                    self.sock.sendall(part)
                return
            total = sum(len(p) for p in parts)
            sent = self.sock.sendmsg(list(parts))
            if sent < total:  # rare partial write: finish with sendall on the joined remainder
                self.sock.sendall(b"".join(bytes(p) for p in parts)[sent:])
        except OSError as exc:
            raise UpperLayerError(f"sending to {self.peer} failed: {exc}") from None

    def send_message(self, context_id: int, payload: memoryview | bytes, command: bool, peer_max: int) -> None:
        """A command set or dataset as P-DATA-TF PDUs of one PDV each, within the peer's maximum length."""
        limit = (peer_max or OWN_MAX_PDU) - 6  # the PDV item header takes 6 bytes
        if limit < MIN_PEER_PDU - 6:  # negotiation refuses such peers; never loop on empty fragments
            raise UpperLayerError(f"{self.peer} accepts PDUs of {peer_max} bytes, fewer than {MIN_PEER_PDU}")
        view = memoryview(payload)
        total = len(view)
        offset = 0
        while True:
            chunk = view[offset : offset + limit]
            offset += len(chunk)
            control = (0x01 if command else 0x00) | (0x02 if offset >= total else 0x00)
            header = struct.pack(">BBLLBB", P_DATA, 0, len(chunk) + 6, len(chunk) + 2, context_id, control)
            self.send(header, chunk)
            if offset >= total:
                break

    def send_store(
        self, context_id: int, sop_class: str, message_id: int, sop_uid: str, dataset: memoryview | bytes, peer_max: int
    ) -> None:
        """A C-STORE-RQ and its dataset: from the hub's sender, and for C-GET's sub-operations."""
        command = Command(
            AffectedSOPClassUID=sop_class,
            CommandField=0x0001,
            MessageID=message_id,
            Priority=0x0000,
            CommandDataSetType=0x0000,
            AffectedSOPInstanceUID=sop_uid,
        )
        self.send_message(context_id, encode_command(command), True, peer_max)
        self.send_message(context_id, dataset, False, peer_max)

    def abort(self, source: int = 0x00, reason: int = 0x00) -> None:
        try:
            self.sock.sendall(struct.pack(">BBLBBBB", ABORT, 0, 4, 0, 0, source, reason))
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def pdvs(pdu: bytes) -> list[tuple[int, int, memoryview]]:
    """(context id, message control header, fragment) of each PDV item in a P-DATA-TF PDU; the fragments
    are views into the PDU, not copies."""
    items = []
    view = memoryview(pdu)
    pos = 6
    while pos + 6 <= len(pdu):
        (item_length,) = struct.unpack_from(">L", pdu, pos)
        if item_length < 2 or pos + 4 + item_length > len(pdu):
            raise UpperLayerError("malformed PDV item")
        items.append((pdu[pos + 4], pdu[pos + 5], view[pos + 6 : pos + 4 + item_length]))
        pos += 4 + item_length
    if pos != len(pdu):
        raise UpperLayerError("malformed P-DATA-TF PDU")
    return items


# DIMSE command elements (PS3.7 E.1) the hub reads and writes: keyword -> (element in group 0000, VR)
_COMMAND_ELEMENTS = {
    "AffectedSOPClassUID": (0x0002, "UI"),
    "CommandField": (0x0100, "US"),
    "MessageID": (0x0110, "US"),
    "MessageIDBeingRespondedTo": (0x0120, "US"),
    "MoveDestination": (0x0600, "AE"),
    "Priority": (0x0700, "US"),
    "CommandDataSetType": (0x0800, "US"),
    "Status": (0x0900, "US"),
    "ErrorComment": (0x0902, "LO"),
    "ErrorID": (0x0903, "US"),
    "AffectedSOPInstanceUID": (0x1000, "UI"),
    "EventTypeID": (0x1002, "US"),
    "NumberOfRemainingSuboperations": (0x1020, "US"),
    "NumberOfCompletedSuboperations": (0x1021, "US"),
    "NumberOfFailedSuboperations": (0x1022, "US"),
    "NumberOfWarningSuboperations": (0x1023, "US"),
    "MoveOriginatorApplicationEntityTitle": (0x1030, "AE"),
    "MoveOriginatorMessageID": (0x1031, "US"),
}
_BY_ELEMENT = {element: (keyword, vr) for keyword, (element, vr) in _COMMAND_ELEMENTS.items()}


class Command(dict):
    """A DIMSE command set as {keyword: value}; attribute access like a pydicom Dataset."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def encode_command(command: dict) -> bytes:
    """A command set in implicit VR little endian with its group length first, packed directly: pydicom's
    generic writer costs more than the rest of a C-STORE response."""
    parts = []
    for element, keyword in sorted((e, k) for k, (e, _vr) in _COMMAND_ELEMENTS.items() if k in command):
        vr = _COMMAND_ELEMENTS[keyword][1]
        value = command[keyword]
        if vr == "US":
            raw = struct.pack("<H", int(value))
        else:
            raw = str(value).encode("ascii", "replace")
            if len(raw) % 2:
                raw += b"\x00" if vr == "UI" else b" "
        parts.append(struct.pack("<HHL", 0x0000, element, len(raw)) + raw)
    body = b"".join(parts)
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body


def decode_command(data: bytes) -> Command:
    """Read a command set (implicit VR little endian, group 0000); ValueError when it is malformed."""
    command = Command()
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError("command set truncated")
        group, element, length = struct.unpack_from("<HHL", data, pos)
        if group != 0x0000 or pos + 8 + length > len(data):
            raise ValueError("malformed command set")
        known = _BY_ELEMENT.get(element)
        if known is not None:
            raw = data[pos + 8 : pos + 8 + length]
            keyword, vr = known
            if vr == "US":
                if length != 2:
                    raise ValueError(f"command element (0000,{element:04X}) has length {length}")
                command[keyword] = struct.unpack("<H", raw)[0]
            else:
                command[keyword] = raw.decode("ascii", "replace").strip("\x00 ")
        pos += 8 + length
    if "CommandField" not in command:
        raise ValueError("command set without Command Field")
    return command


class Requestor:
    """One association as requestor: negotiate, send C-STOREs one after another, release."""

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
        peer = f"{called_aet}@{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise UpperLayerError(f"cannot connect to {peer}: {exc.strerror or exc}") from None
        if tls is not None:  # DICOM over TLS (PS3.15 B.1): the destination's certificate must name `host`
            try:
                sock = tls.wrap_socket(sock, server_hostname=host)
            except (ssl.SSLError, ssl.CertificateError, OSError) as exc:
                sock.close()
                raise UpperLayerError(f"TLS with {peer} failed: {getattr(exc, 'verify_message', '') or exc}") from None
        self.stream = PduStream(sock, peer, timeout)
        self.peer = peer
        self.open = False
        self.message_id = 0
        try:
            self.accepted, self.peer_max_pdu = self._negotiate(calling_aet, called_aet, contexts)
        except BaseException:
            self.stream.close()
            raise
        self.open = True

    def _negotiate(
        self, calling: str, called: str, contexts: list[tuple[str, list[str]]]
    ) -> tuple[dict[tuple[str, str], Accepted], int]:
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
        rq.user_information = user_information(OWN_MAX_PDU)
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(rq)
        self.stream.send(pdu.encode())

        pdu_type, data = self.stream.read_pdu(OWN_MAX_PDU)
        if pdu_type == ASSOCIATE_RJ:
            _result, source, reason = data[7], data[8], data[9]
            raise Rejected(f"{self.peer} rejected the association ({reject_reason(source, reason)})")
        if pdu_type == ABORT:
            raise UpperLayerError(f"{self.peer} aborted the association request")
        if pdu_type != ASSOCIATE_AC:
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
        peer_max = max_length_of(primitive.user_information)
        if 0 < peer_max < MIN_PEER_PDU:
            # fragments of peer_max - 6 bytes: at 6 or fewer the first message would never end
            log.warning(
                "aborted the association with %s: it receives PDUs of at most %d bytes, fewer than "
                "the %d the hub needs",
                printable(self.peer),
                peer_max,
                MIN_PEER_PDU,
            )
            self.stream.abort()
            raise UpperLayerError(
                f"{self.peer} accepts PDUs of at most {peer_max} bytes (Maximum Length "
                f"Received), fewer than the {MIN_PEER_PDU} the hub needs; fix the node's setting"
            )
        return accepted, peer_max

    def c_store(self, cx: Accepted, sop_instance_uid: str, dataset: memoryview | bytes) -> Command:
        """Send one C-STORE-RQ with its encoded dataset; returns the C-STORE-RSP command set."""
        if not self.open:
            raise UpperLayerError(f"association with {self.peer} is closed")
        self.message_id = (self.message_id % 0xFFFF) + 1
        self.stream.send_store(
            cx.context_id, cx.abstract_syntax, self.message_id, sop_instance_uid, dataset, self.peer_max_pdu
        )
        return self._read_response()

    def _read_response(self) -> Command:
        fragments: list[memoryview] = []
        size = 0
        while True:
            pdu_type, data = self.stream.read_pdu(OWN_MAX_PDU + 1024)
            if pdu_type == ABORT:
                self.open = False
                raise UpperLayerError(f"{self.peer} aborted the association")
            if pdu_type != P_DATA:
                self.abort()
                raise UpperLayerError(f"{self.peer} sent PDU type {pdu_type} instead of a C-STORE response")
            for _cx, control, fragment in pdvs(data):
                fragments.append(fragment)
                size += len(fragment)
                if size > MAX_COMMAND:
                    self.abort()
                    raise UpperLayerError(f"{self.peer} sent a response longer than {MAX_COMMAND} bytes")
                if control & 0x01 and control & 0x02:  # last fragment of a command
                    try:
                        ds = decode_command(b"".join(fragments))
                    except ValueError as exc:
                        self.abort()
                        raise UpperLayerError(f"{self.peer} sent an unreadable response: {exc}") from None
                    if ds.CommandField != 0x8001:
                        self.abort()
                        raise UpperLayerError(f"{self.peer} answered with command 0x{ds.CommandField:04X}")
                    return ds

    def release(self) -> None:
        if self.open:
            self.open = False
            try:
                self.stream.send(struct.pack(">BBLL", RELEASE_RQ, 0, 4, 0))
                self.stream.sock.settimeout(min(self.stream.timeout or 10.0, 10.0))
                self.stream.read_pdu(1024)
            except UpperLayerError:
                pass
        self.stream.close()

    def abort(self) -> None:
        if self.open:
            self.open = False
            self.stream.abort()
        self.stream.close()


def user_information(max_pdu: int) -> list:
    """Maximum length, implementation class UID and version: the user information items both sides send."""
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION
    return [max_length, implementation, version]


def max_length_of(items: list) -> int:
    for item in items:
        if isinstance(item, MaximumLengthNotification):
            return item.maximum_length_received or 0
    return 0
