"""The SCP side of C-FIND, C-MOVE and C-GET on one association (PS3.4 C.4, PS3.7 9.1.2-9.1.4).

The acceptor reads the request and its identifier, then hands both to the Query/Retrieve handler with a
`Responder`: what the handler may do on the association while it answers. It sends pending responses
(matches, or sub-operation counts), sees a C-CANCEL the caller sends meanwhile, and for C-GET sends the
C-STORE sub-operations back over the same association, to the caller in the SCP role it negotiated.
Which studies match and where they go is the handler's business (imex.qr); this module speaks DIMSE only.
"""

from __future__ import annotations

import io
import select
import ssl
import struct
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID

from imex.dicom.part10 import encode_dataset
from imex.dicom.scu import NoAcceptableContext, Outgoing, encoded_for
from imex.dicom.syntaxes import UNCOMPRESSED
from imex.dicom.upper_layer import (
    ABORT,
    MAX_COMMAND,
    OWN_MAX_PDU,
    P_DATA,
    Command,
    PduStream,
    UpperLayerError,
    decode_command,
    encode_command,
    pdvs,
)

# Query/Retrieve information models (PS3.4 C.6): SOP class UID -> (root, service)
QUERY_RETRIEVE = {
    "1.2.840.10008.5.1.4.1.2.1.1": ("PATIENT", "FIND"),
    "1.2.840.10008.5.1.4.1.2.1.2": ("PATIENT", "MOVE"),
    "1.2.840.10008.5.1.4.1.2.1.3": ("PATIENT", "GET"),
    "1.2.840.10008.5.1.4.1.2.2.1": ("STUDY", "FIND"),
    "1.2.840.10008.5.1.4.1.2.2.2": ("STUDY", "MOVE"),
    "1.2.840.10008.5.1.4.1.2.2.3": ("STUDY", "GET"),
}
# request command field -> (service, response command field)
SERVICES = {0x0020: ("FIND", 0x8020), 0x0021: ("MOVE", 0x8021), 0x0010: ("GET", 0x8010)}
C_CANCEL = 0x0FFF
MAX_IDENTIFIER = 1 << 20  # a query's identifier is held in memory: a few keys, never images

PENDING = 0xFF00
CANCELLED = 0xFE00
SUCCESS = 0x0000
WARNING_SUBOPERATIONS = 0xB000  # one or more sub-operations failed or had warnings
UNABLE_TO_PROCESS = 0xC000
IDENTIFIER_DOES_NOT_MATCH = 0xA900
OUT_OF_RESOURCES_MATCHES = 0xA701  # C-MOVE/C-GET: unable to calculate number of matches
OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702
OUT_OF_RESOURCES = 0xA700  # C-FIND
MOVE_DESTINATION_UNKNOWN = 0xA801
NOT_AUTHORIZED = 0x0124  # PS3.7 C.5.21 Refused: Not Authorized


class InvalidIdentifier(ValueError):
    """The identifier could not be decoded; the message says where it broke."""


@dataclass(frozen=True)
class QueryRequest:
    """A C-FIND, C-MOVE or C-GET request as the handler sees it."""

    calling_aet: str
    called_aet: str
    peer: str
    abstract_syntax: str
    transfer_syntax: str
    command: Command
    identifier: bytes

    @property
    def root(self) -> str:
        return QUERY_RETRIEVE[self.abstract_syntax][0]

    @property
    def service(self) -> str:
        return QUERY_RETRIEVE[self.abstract_syntax][1]

    @property
    def move_destination(self) -> str:
        return str(self.command.get("MoveDestination", "")).strip()

    def decode(self) -> Dataset:
        """The identifier as a dataset; InvalidIdentifier when it is not one."""
        ts = UID(self.transfer_syntax)
        _check_lengths(self.identifier, ts.is_implicit_VR)
        try:
            ds = read_dataset(io.BytesIO(self.identifier), ts.is_implicit_VR, ts.is_little_endian)
            for element in ds:  # pydicom decodes lazily: touch every value so a broken one fails here
                _ = element.value
        except Exception as exc:
            raise InvalidIdentifier(f"the identifier cannot be read: {exc}") from None
        return ds


_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def _check_lengths(data: bytes, implicit: bool) -> None:
    """Every top-level element fits in the identifier (pydicom would read a cut-short value as it is)."""
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise InvalidIdentifier(f"the identifier cannot be read: {len(data) - pos} stray bytes at its end")
        group, element = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4 : pos + 6]
        if implicit:
            (length,), head = struct.unpack_from("<L", data, pos + 4), 8
        elif vr in _LONG_VRS:
            if pos + 12 > len(data):
                raise InvalidIdentifier(f"the identifier cannot be read: ({group:04X},{element:04X}) is cut short")
            (length,), head = struct.unpack_from("<L", data, pos + 8), 12
        else:
            (length,), head = struct.unpack_from("<H", data, pos + 6), 8
        if length == 0xFFFFFFFF:
            return  # a sequence of undefined length: pydicom reads and checks the rest
        if pos + head + length > len(data):
            raise InvalidIdentifier(
                f"the identifier cannot be read: ({group:04X},{element:04X}) declares {length} bytes, "
                f"{len(data) - pos - head} remain"
            )
        pos += head + length


@dataclass
class SubOperations:
    """C-MOVE and C-GET progress (PS3.7 9.1.3/9.1.4): counts, and the instances that failed."""

    remaining: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Final:
    """How a request ends: its status, an error comment, and for C-MOVE/C-GET the sub-operation counts."""

    status: int
    comment: str = ""
    counts: SubOperations | None = None


class Responder:
    """What a Query/Retrieve handler may do on the association while it answers one request."""

    def __init__(
        self,
        stream: PduStream,
        context_id: int,
        request: QueryRequest,
        peer_max: int,
        contexts: dict[int, tuple[str, str]],
        scp_roles: set[str],
    ) -> None:
        self.stream = stream
        self.context_id = context_id
        self.request = request
        self.peer_max = peer_max
        self.contexts = contexts  # accepted presentation contexts: id -> (abstract syntax, transfer syntax)
        self.scp_roles = scp_roles  # storage SOP classes the caller takes the SCP role for (C-GET)
        self._cancelled = False
        self._parts: list[memoryview] = []
        self._message_id = 0
        command = request.command
        self._response_field = SERVICES[int(command.CommandField)][1]

    # -- responses ---------------------------------------------------------------------------------------

    def _send(self, status: int, comment: str, counts: SubOperations | None, identifier: Dataset | None) -> None:
        command = self.request.command
        rsp = Command(
            AffectedSOPClassUID=command.get("AffectedSOPClassUID", self.request.abstract_syntax),
            CommandField=self._response_field,
            MessageIDBeingRespondedTo=command.get("MessageID", 0),
            CommandDataSetType=0x0101 if identifier is None else 0x0000,
            Status=status,
        )
        if counts is not None:
            if status == PENDING or status == CANCELLED:
                rsp["NumberOfRemainingSuboperations"] = min(counts.remaining, 0xFFFF)
            rsp["NumberOfCompletedSuboperations"] = min(counts.completed, 0xFFFF)
            rsp["NumberOfFailedSuboperations"] = min(counts.failed, 0xFFFF)
            rsp["NumberOfWarningSuboperations"] = min(counts.warning, 0xFFFF)
        if comment:
            rsp["ErrorComment"] = comment.encode("ascii", "replace").decode()[:64]
        self.stream.send_message(self.context_id, encode_command(rsp), True, self.peer_max)
        if identifier is not None:
            ts = UID(self.request.transfer_syntax)
            data = encode_dataset(identifier, implicit=ts.is_implicit_VR, little=ts.is_little_endian)
            self.stream.send_message(self.context_id, data, False, self.peer_max)

    def pending(self, identifier: Dataset | None = None, counts: SubOperations | None = None) -> None:
        """A pending response: one C-FIND match, or C-MOVE/C-GET progress."""
        self._send(PENDING, "", counts, identifier)

    def final(self, final: Final) -> None:
        """The last response. Failed SOP instances are listed in an identifier (PS3.4 C.4.2.1.6)."""
        identifier = None
        counts = final.counts
        if counts is not None and counts.failed_uids and final.status not in (SUCCESS, PENDING):
            identifier = Dataset()
            identifier.FailedSOPInstanceUIDList = counts.failed_uids[:1000]
        self._send(final.status, final.comment, counts, identifier)

    # -- C-CANCEL ----------------------------------------------------------------------------------------

    def cancelled(self) -> bool:
        """True once the caller has sent C-CANCEL for this request; reads what has arrived, never waits."""
        sock = self.stream.sock
        while not self._cancelled:
            buffered = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not buffered and not select.select([sock], [], [], 0)[0]:
                break
            self._read_one(expect_store_response=False)
        return self._cancelled

    def _read_one(self, expect_store_response: bool) -> Command | None:
        """Read one PDU: a C-CANCEL marks the request cancelled; a C-STORE response (C-GET) is returned
        when one is expected; anything else ends the association."""
        pdu_type, pdu = self.stream.read_pdu(OWN_MAX_PDU + 1024)
        if pdu_type == ABORT:
            raise UpperLayerError(f"{self.stream.peer} aborted the association")
        if pdu_type != P_DATA:
            self.stream.abort(0x02, 0x02)  # unexpected PDU while a request is answered
            raise UpperLayerError(f"{self.stream.peer} sent PDU type {pdu_type} during a query or retrieve")
        for _cx, control, fragment in pdvs(pdu):
            if not control & 0x01:
                self.stream.abort(0x02, 0x06)
                raise UpperLayerError(f"{self.stream.peer} sent a dataset during a query or retrieve")
            self._parts.append(fragment)
            if sum(len(p) for p in self._parts) > MAX_COMMAND:
                self.stream.abort(0x02, 0x06)
                raise UpperLayerError(f"{self.stream.peer} sent a command longer than {MAX_COMMAND} bytes")
            if control & 0x02:
                try:
                    command = decode_command(b"".join(self._parts))
                except ValueError as exc:
                    self.stream.abort(0x02, 0x06)
                    raise UpperLayerError(f"{self.stream.peer} sent an unreadable command: {exc}") from None
                finally:
                    self._parts = []
                field = int(command.CommandField)
                if field == C_CANCEL:
                    if command.get("MessageIDBeingRespondedTo") == self.request.command.get("MessageID"):
                        self._cancelled = True
                elif field == 0x8001 and expect_store_response:
                    return command
                else:
                    self.stream.abort(0x02, 0x02)
                    raise UpperLayerError(
                        f"{self.stream.peer} sent command 0x{field:04X} while a query or retrieve was answered"
                    )
        return None

    # -- C-GET sub-operations ----------------------------------------------------------------------------

    def _context_for(self, item: Outgoing) -> tuple[int, str] | None:
        if item.sop_class_uid not in self.scp_roles:
            return None
        for ts in (item.transfer_syntax_uid, *UNCOMPRESSED):  # as stored first, then uncompressed
            for cx_id, (abstract, accepted) in self.contexts.items():
                if abstract == item.sop_class_uid and accepted == ts:
                    return cx_id, ts
        return None

    def store(self, item: Outgoing) -> tuple[int, str]:
        """A C-STORE sub-operation to the caller: (status, error comment). NoAcceptableContext when the
        caller negotiated no context (or no SCP role) that fits; UpperLayerError when the association is lost."""
        chosen = self._context_for(item)
        if chosen is None:
            raise NoAcceptableContext(
                f"{self.request.calling_aet} took no storage role for "
                f"{UID(item.sop_class_uid).name or item.sop_class_uid} in a transfer syntax the hub can send"
            )
        cx_id, ts = chosen
        dataset, sop_uid = encoded_for(item, ts, self.request.calling_aet)
        self._message_id = (self._message_id % 0xFFFF) + 1
        self.stream.send_store(cx_id, item.sop_class_uid, self._message_id, sop_uid, dataset, self.peer_max)
        while True:
            response = self._read_one(expect_store_response=True)
            if response is not None:
                return int(response.get("Status", 0xFFFF)), str(response.get("ErrorComment", "") or "")
