"""A lean DICOM upper-layer acceptor for the receive hot path: a thread per association, blocking reads,
no reactor.

pynetdicom moves every PDU between a reader thread and the association thread through polled queues;
on a 300-instance CT that costs more than storing and indexing the instances (bench/README.md). Here one
thread reads a PDU, reassembles the message and calls the handler. Association negotiation follows PS3.8
(A-ASSOCIATE-RQ/AC/RJ, release, abort) with pynetdicom's PDU classes doing the encoding.

Until its A-ASSOCIATE-RQ is whole a connection belongs to the gate (gate.py: one thread, one deadline,
its own caps), so callers that never finish a request cost no thread and hold no association slot. A
C-STORE's dataset is never held whole: its fragments go to the sink `open_store` gives (the listener
checks and writes them to disk as they arrive); command sets and the few datasets kept in memory
(Storage Commitment reports) are bounded.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext

from imex.dicom.gate import Gate, Tally
from imex.dicom.net import printable  # (importing it escapes pynetdicom's log records too)
from imex.dicom.responder import (
    C_CANCEL,
    MAX_IDENTIFIER,
    QUERY_RETRIEVE,
    SERVICES,
    UNABLE_TO_PROCESS,
    Final,
    QueryRequest,
    Responder,
)
from imex.dicom.upper_layer import (
    ABORT,
    APPLICATION_CONTEXT,
    ASSOCIATE_RJ,
    ASSOCIATE_RQ,
    MAX_COMMAND,
    MIN_PEER_PDU,
    OWN_MAX_PDU,
    P_DATA,
    RELEASE_RP,
    RELEASE_RQ,
    Command,
    PduStream,
    PeerTimeout,
    UpperLayerError,
    decode_command,
    encode_command,
    max_length_of,
    pdvs,
    user_information,
)

log = logging.getLogger("imex.dicom.acceptor")

VERIFICATION = "1.2.840.10008.1.1"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"  # its N-EVENT-REPORTs go to `on_event_report` (commitment.py)
# PS3.8 9.3.3.2 presentation context results
_ACCEPTANCE, _ABSTRACT_SYNTAX_NOT_SUPPORTED, _TRANSFER_SYNTAXES_NOT_SUPPORTED = 0, 3, 4
# A-ABORT source 2 (service provider) reasons
_UNRECOGNIZED_PDU, _UNEXPECTED_PDU, _INVALID_PARAMETER = 1, 2, 6
MAX_REQUEST = 1 << 20  # the largest A-ASSOCIATE-RQ read
MAX_DATASET = 4 << 30  # a C-STORE dataset (streamed to disk, never held)
MAX_HELD_DATASET = 16 << 20  # a dataset held in memory (a Storage Commitment report)


class DatasetSink(Protocol):
    """Where a C-STORE dataset goes as it arrives, fragment by fragment."""

    def write(self, fragment: memoryview) -> None: ...

    def discard(self) -> None:
        """The association ended before the dataset was whole: leave nothing behind."""


@dataclass(frozen=True)
class Request:
    """A C-STORE (or N-EVENT-REPORT) as the handler sees it. A C-STORE's dataset went to `sink` as it
    arrived; `dataset` holds the bytes of the messages kept in memory."""

    calling_aet: str
    called_aet: str
    peer: str
    abstract_syntax: str  # of the presentation context it came on
    transfer_syntax: str
    command: Command
    dataset: bytes = b""
    sink: DatasetSink | None = None


# A-ASSOCIATE-RJ (result, source, reason), PS3.8 9.3.4: rejected-permanent by the DICOM UL service-user
CALLING_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x03)
CALLED_AE_NOT_RECOGNIZED = (0x01, 0x01, 0x07)
NO_REASON_GIVEN = (0x01, 0x01, 0x01)
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)  # rejected-transient by the service provider (presentation)

# (calling AE title, called AE title, peer address) -> None to accept, or the rejection to send; over TLS
# the peer's certificate (SSLSocket.getpeercert()) comes fourth
Policy = Callable[..., "tuple[int, int, int] | None"]
StoreHandler = Callable[[Request], "tuple[int, str]"]
# answers a C-FIND, C-MOVE or C-GET: pending responses through the Responder, the final one returned
QueryHandler = Callable[[QueryRequest, Responder], Final]
OpenStore = Callable[[Request], DatasetSink]


class Acceptor:
    """Listens, negotiates associations with `policy`, answers C-ECHO, hands C-STOREs to `open_store` (the
    dataset as it arrives) and `on_store` (once it is whole)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        policy: Policy,
        open_store: OpenStore,
        on_store: StoreHandler,
        storage_syntaxes: dict[str, tuple[str, ...]],
        max_associations: int,
        acse_timeout: float,
        network_timeout: float,
        max_pdu: int,
        tls: Callable[[], ssl.SSLContext] | None = None,
        per_caller_limit: Callable[[str], int] | None = None,
        on_event_report: StoreHandler | None = None,
        on_query: QueryHandler | None = None,
        max_negotiating: int = 64,
        max_negotiating_per_address: int = 16,
    ) -> None:
        self.policy = policy
        # Storage Commitment results a destination sends on a new association, proposing the SCP role
        self.on_event_report = on_event_report
        # Query/Retrieve (C-FIND, C-MOVE, C-GET) by registered nodes; None: the models are not offered
        self.on_query = on_query
        self.per_caller_limit = per_caller_limit  # most associations at once per calling AE title (0: any)
        self._callers: dict[str, int] = {}
        self.open_store = open_store
        self.on_store = on_store
        self.supported = dict(storage_syntaxes)
        # the SOP classes the hub stores, and so sends back as C-GET sub-operations
        self.storage_classes = frozenset(storage_syntaxes) - {VERIFICATION, STORAGE_COMMITMENT}
        if on_query is not None:
            for model in QUERY_RETRIEVE:
                self.supported[model] = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
        self.max_associations = max_associations
        self.network_timeout = network_timeout
        self.max_pdu = max_pdu if max_pdu else OWN_MAX_PDU * 64
        self._active: set[socket.socket] = set()  # associations past the gate, each with its thread
        self._lock = threading.Lock()
        self._tally = Tally()
        self._closing = False
        self.sock = socket.create_server((host, port), reuse_port=False, backlog=128)
        self.server_address = self.sock.getsockname()
        self.gate = Gate(
            self.sock,
            self._on_request,
            deadline=acse_timeout,
            max_pending=max_negotiating,
            max_per_address=max_negotiating_per_address,
            max_request=MAX_REQUEST,
            tls=tls,
        )

    @property
    def active_associations(self) -> list[socket.socket]:
        """Connections being served (an association, or one still negotiating)."""
        with self._lock:
            active = list(self._active)
        return self.gate.pending + active

    def _on_request(self, conn: socket.socket, peer: str, pdu: bytes) -> None:
        """On the gate's thread: the first PDU of a connection is whole. An association request gets a
        thread of its own, unless `max_associations` are open already."""
        try:
            stream = PduStream(conn, peer, self.network_timeout)
        except OSError:  # reset meanwhile
            conn.close()
            return
        if pdu[0] != ASSOCIATE_RQ:
            stream.abort(0x02, _UNEXPECTED_PDU if 1 <= pdu[0] <= 7 else _UNRECOGNIZED_PDU)
            stream.close()
            return
        with self._lock:
            full = self._closing or len(self._active) >= self.max_associations
            if not full:
                self._active.add(conn)
        if full:
            self._tally.note("limit", f"rejected associations: {self.max_associations} associations open", peer)
            try:
                stream.send(struct.pack(">BBLBBBB", ASSOCIATE_RJ, 0, 4, 0, *LOCAL_LIMIT_EXCEEDED))
            except UpperLayerError:
                pass
            stream.close()
            return
        threading.Thread(target=self._serve, args=(stream, peer, pdu), daemon=True, name=f"dicom-{peer}").start()

    def shutdown(self) -> None:
        self._closing = True
        self.gate.close()
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            active = list(self._active)
        for conn in active:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- one association ------------------------------------------------------------------------------

    def admit(self, calling: str) -> bool:
        """Count an association from `calling`; False when its per-node limit is reached."""
        limit = self.per_caller_limit(calling) if self.per_caller_limit else 0
        with self._lock:
            if limit and self._callers.get(calling, 0) >= limit:
                return False
            self._callers[calling] = self._callers.get(calling, 0) + 1
            return True

    def _release(self, calling: str) -> None:
        with self._lock:
            left = self._callers.get(calling, 0) - 1
            if left > 0:
                self._callers[calling] = left
            else:
                self._callers.pop(calling, None)

    def _serve(self, stream: PduStream, peer: str, request: bytes) -> None:
        association = _Association(self, stream, peer)
        try:
            association.run(request)
        except UpperLayerError as exc:
            log.debug("association from %s ended: %s", printable(peer), printable(exc))
        except Exception:
            log.exception("association from %s failed", printable(peer))
            stream.abort(0x02, 0x00)
        finally:
            association.discard()
            stream.close()
            if association.admitted:
                self._release(association.calling)
            with self._lock:
                self._active.discard(stream.sock)


class _Association:
    def __init__(self, acceptor: Acceptor, stream: PduStream, peer: str) -> None:
        self.acceptor = acceptor
        self.stream = stream
        self.peer = peer
        self.contexts: dict[int, tuple[str, str]] = {}
        self.peer_max = 0
        self.calling = self.called = ""
        self.admitted = False
        self.sink: DatasetSink | None = None  # the C-STORE dataset now arriving goes here
        self.held: list[memoryview] | None = None  # or here, for a dataset kept in memory
        self.held_limit = MAX_HELD_DATASET
        self.scp_roles: set[str] = set()  # storage SOP classes the caller is SCP for (C-GET sub-operations)

    def _reject(self, result: int, source: int, reason: int) -> None:
        self.stream.send(struct.pack(">BBLBBBB", ASSOCIATE_RJ, 0, 4, 0, result, source, reason))

    def _refuse(self, why: str) -> None:
        """Abort the association for a message the hub will not take in (invalid PDU parameter)."""
        log.warning("aborted the association from %s (%s): %s", printable(self.calling), printable(self.peer), why)
        self.stream.abort(0x02, _INVALID_PARAMETER)

    def discard(self) -> None:
        if self.sink is not None:
            sink, self.sink = self.sink, None
            sink.discard()

    def run(self, request: bytes) -> None:
        if not self._associate(request):
            return
        command_parts: list[memoryview] = []
        command_size = data_size = 0
        command: Command | None = None
        context_id = 0
        while True:
            try:
                pdu_type, pdu = self.stream.read_pdu(self.acceptor.max_pdu + 1024)
            except PeerTimeout:
                self.stream.abort(0x02, 0x00)  # idle too long: ARTIM expired
                raise
            if pdu_type == RELEASE_RQ:
                self.stream.send(struct.pack(">BBLL", RELEASE_RP, 0, 4, 0))
                return
            if pdu_type == ABORT:
                return
            if pdu_type != P_DATA:
                self.stream.abort(0x02, _UNEXPECTED_PDU if 1 <= pdu_type <= 7 else _UNRECOGNIZED_PDU)
                return
            try:
                items = pdvs(pdu)
            except UpperLayerError:
                self.stream.abort(0x02, _INVALID_PARAMETER)
                return
            for cx_id, control, fragment in items:
                if cx_id not in self.contexts or (command is not None and cx_id != context_id):
                    # a message on a context that was not accepted (PS3.8 9.3.5): nothing sensible to answer
                    self.stream.abort(0x02, _INVALID_PARAMETER)
                    return
                context_id = cx_id
                if control & 0x01:
                    command_size += len(fragment)
                    if command_size > MAX_COMMAND:
                        self._refuse(f"a command set longer than {MAX_COMMAND} bytes")
                        return
                    command_parts.append(fragment)
                    if control & 0x02:
                        try:
                            command = decode_command(b"".join(command_parts))
                        except ValueError:
                            self.stream.abort(0x02, _INVALID_PARAMETER)
                            return
                        command_parts, command_size, data_size = [], 0, 0
                        self.discard()  # a new command while a dataset was still due: that one is abandoned
                        if int(command.get("CommandDataSetType", 0x0101)) == 0x0101:
                            self._dispatch(context_id, command)
                            command = None
                        else:
                            self._expect_dataset(context_id, command)
                else:
                    if command is None:
                        self.stream.abort(0x02, _INVALID_PARAMETER)  # a dataset before its command
                        return
                    data_size += len(fragment)
                    if self.sink is not None:
                        if data_size > MAX_DATASET:
                            self._refuse(f"a dataset longer than {MAX_DATASET} bytes")
                            return
                        self.sink.write(fragment)
                    elif self.held is not None:
                        if data_size > self.held_limit:
                            self._refuse(
                                f"a {int(command.CommandField):#06x} dataset longer than {self.held_limit} bytes"
                            )
                            return
                        self.held.append(fragment)
                    if control & 0x02:
                        self._dispatch(context_id, command)
                        command = None

    def _expect_dataset(self, context_id: int, command: Command) -> None:
        """Where the dataset announced by `command` goes: a C-STORE's to the store's sink, a Storage
        Commitment report's into memory; any other is read and dropped (the answer refuses it)."""
        abstract, ts = self.contexts[context_id]
        field = int(command.CommandField)
        self.held = None
        if field == 0x0001 and abstract != VERIFICATION:
            self.sink = self.acceptor.open_store(Request(self.calling, self.called, self.peer, abstract, ts, command))
        elif field == 0x0100 and abstract == STORAGE_COMMITMENT and self.acceptor.on_event_report is not None:
            self.held, self.held_limit = [], MAX_HELD_DATASET
        elif field in SERVICES and abstract in QUERY_RETRIEVE and self.acceptor.on_query is not None:
            self.held, self.held_limit = [], MAX_IDENTIFIER

    def _associate(self, pdu: bytes) -> bool:
        try:
            rq = A_ASSOCIATE_RQ()
            rq.decode(pdu)
            primitive = rq.to_primitive()
            self.calling = (primitive.calling_ae_title or "").strip()
            self.called = (primitive.called_ae_title or "").strip()
        except Exception:
            self.stream.abort(0x02, _INVALID_PARAMETER)
            return False
        if isinstance(self.stream.sock, ssl.SSLSocket):
            verdict = self.acceptor.policy(self.calling, self.called, self.peer, self.stream.sock.getpeercert())
        else:
            verdict = self.acceptor.policy(self.calling, self.called, self.peer)
        if verdict is not None:
            self._reject(*verdict)
            return False
        peer_max = max_length_of(primitive.user_information)
        if 0 < peer_max < MIN_PEER_PDU:
            # 6 bytes or fewer leave no room for any data in a P-DATA-TF: answering would never end
            log.warning(
                "rejected association from %s (%s): it receives PDUs of at most %d bytes, fewer than "
                "the %d the hub needs",
                printable(self.calling),
                printable(self.peer),
                peer_max,
                MIN_PEER_PDU,
            )
            self._reject(*NO_REASON_GIVEN)
            return False
        if not self.acceptor.admit(self.calling):
            log.warning(
                "rejected association from %s (%s): its node's association limit is reached",
                printable(self.calling),
                printable(self.peer),
            )
            self._reject(*LOCAL_LIMIT_EXCEEDED)
            return False
        self.admitted = True
        self.peer_max = peer_max
        results = []
        # the hub takes Storage Commitment reports only from a caller proposing the SCP role for it (PS3.4
        # J.3.3); it is no Storage Commitment SCP for others
        reporting = {
            str(item.sop_class_uid)
            for item in primitive.user_information
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.scp_role
        }
        for cx in primitive.presentation_context_definition_list:
            result = PresentationContext()
            result.context_id = cx.context_id
            proposed = [str(ts) for ts in cx.transfer_syntax]
            allowed = self.acceptor.supported.get(str(cx.abstract_syntax))
            if str(cx.abstract_syntax) == STORAGE_COMMITMENT and STORAGE_COMMITMENT not in reporting:
                allowed = None
            chosen = next((ts for ts in proposed if allowed and ts in allowed), None)
            if allowed is None:
                result.result = _ABSTRACT_SYNTAX_NOT_SUPPORTED
            elif chosen is None:
                result.result = _TRANSFER_SYNTAXES_NOT_SUPPORTED
            else:
                result.result = _ACCEPTANCE
                # a decoded item always carries its (one byte) ID; None is only pynetdicom's unset default
                if cx.context_id is not None:
                    self.contexts[cx.context_id] = (str(cx.abstract_syntax), chosen)
            result.transfer_syntax = [chosen or (proposed[0] if proposed else "1.2.840.10008.1.2")]
            results.append(result)
        ac = A_ASSOCIATE()
        user_info = user_information(self.acceptor.max_pdu) + self._roles(primitive.user_information)
        ac.application_context_name = APPLICATION_CONTEXT
        ac.calling_ae_title = primitive.calling_ae_title
        ac.called_ae_title = primitive.called_ae_title
        ac.result = 0
        ac.presentation_context_definition_results_list = results
        ac.user_information = user_info
        pdu_ac = A_ASSOCIATE_AC()
        pdu_ac.from_primitive(ac)
        self.stream.send(pdu_ac.encode())
        return True

    def _roles(self, proposed: list) -> list:
        """Accept the SCP role a destination proposes for Storage Commitment (PS3.4 J.3.3: it opens the
        association to send the N-EVENT-REPORT as SCP), and the SCP role a C-GET caller proposes for the
        storage SOP classes it wants sent back (PS3.4 C.4.3.1); other role proposals get the default roles."""
        replies = []
        for item in proposed:
            if not isinstance(item, SCP_SCU_RoleSelectionNegotiation):
                continue
            sop_class = str(item.sop_class_uid)
            commitment = sop_class == STORAGE_COMMITMENT and self.acceptor.on_event_report is not None
            retrieve = (
                sop_class in self.acceptor.storage_classes and self.acceptor.on_query is not None and item.scp_role
            )
            if commitment or retrieve:
                if retrieve:
                    self.scp_roles.add(sop_class)
                reply = SCP_SCU_RoleSelectionNegotiation()
                reply.sop_class_uid = item.sop_class_uid
                reply.scu_role = bool(item.scu_role)
                reply.scp_role = bool(item.scp_role)
                replies.append(reply)
        return replies

    def _query(self, context_id: int, command: Command, abstract: str, ts: str, identifier: bytes) -> None:
        """Hand a C-FIND, C-MOVE or C-GET to the handler; its pending responses go out as it finds them."""
        assert self.acceptor.on_query is not None
        request = QueryRequest(self.calling, self.called, self.peer, abstract, ts, command, identifier)
        responder = Responder(self.stream, context_id, request, self.peer_max, self.contexts, self.scp_roles)
        try:
            final = self.acceptor.on_query(request, responder)
        except UpperLayerError:
            raise  # the association is gone: nothing more to send
        except Exception:
            log.exception("query/retrieve from %s failed", printable(self.calling))
            final = Final(UNABLE_TO_PROCESS, "the hub could not process the request")
        responder.final(final)

    def _respond(self, context_id: int, command: Command, field: int, status: int, comment: str = "") -> None:
        rsp = Command(
            AffectedSOPClassUID=command.get("AffectedSOPClassUID", ""),
            CommandField=field,
            MessageIDBeingRespondedTo=command.get("MessageID", 0),
            CommandDataSetType=0x0101,
            Status=status,
        )
        if "AffectedSOPInstanceUID" in command:
            rsp["AffectedSOPInstanceUID"] = command["AffectedSOPInstanceUID"]
        if "EventTypeID" in command:
            rsp["EventTypeID"] = command["EventTypeID"]
        if comment:
            rsp["ErrorComment"] = comment[:64]
        self.stream.send_message(context_id, encode_command(rsp), True, self.peer_max)

    def _dispatch(self, context_id: int, command: Command) -> None:
        """Answer a whole message: its command and, when one came, its dataset (in the sink or held)."""
        abstract, ts = self.contexts[context_id]
        field = int(command.CommandField)
        dataset = b"".join(self.held) if self.held is not None else b""
        self.held = None
        if field == 0x0030:  # C-ECHO-RQ
            self._respond(context_id, command, 0x8030, 0x0000)
        elif field == C_CANCEL:
            pass  # for a request already answered (PS3.7 9.3.2.3): nothing to stop, no response
        elif (
            field in SERVICES
            and self.acceptor.on_query is not None
            and QUERY_RETRIEVE.get(abstract, ("", ""))[1] == SERVICES[field][0]
        ):
            self._query(context_id, command, abstract, ts, dataset)
        elif field == 0x0001 and abstract != VERIFICATION:  # C-STORE-RQ
            request = Request(self.calling, self.called, self.peer, abstract, ts, command)
            sink = self.sink if self.sink is not None else self.acceptor.open_store(request)  # no dataset came
            self.sink = sink
            status, comment = self.acceptor.on_store(
                Request(self.calling, self.called, self.peer, abstract, ts, command, sink=sink)
            )
            self.sink = None  # stored, or refused and discarded by the handler
            self._respond(context_id, command, 0x8001, status, comment)
        elif field == 0x0001:
            self._respond(context_id, command, 0x8001, 0x0122, "SOP class not supported")
        elif field == 0x0100 and abstract == STORAGE_COMMITMENT and self.acceptor.on_event_report is not None:
            status, comment = self.acceptor.on_event_report(
                Request(self.calling, self.called, self.peer, abstract, ts, command, dataset)
            )
            self._respond(context_id, command, 0x8100, status, comment)
        else:
            # a DIMSE service the hub does not provide on this context: "unrecognized operation"
            self._respond(context_id, command, field | 0x8000, 0x0211, "operation not supported")
