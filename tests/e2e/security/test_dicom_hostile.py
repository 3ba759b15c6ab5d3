"""Hostile DICOM clients against a running hub: slow-loris and idle connections before an association
exists, a Maximum Length Received too small to carry data (inbound and outbound), command sets without
an end, datasets larger than memory, log forging through the wire's values, and native Pixel Data
shorter than its image.

After each hostile input the hub still answers dcmtk's echoscu, still stores a valid instance from
dcmtk's storescu byte for byte, and holds nothing from the bad input. Every connection is to 127.0.0.1;
hostile clients bind other loopback source addresses (127.0.0.2, ...) when the hub must tell them apart
from the registered node, which is at 127.0.0.1.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext
from sqlalchemy import func
from sqlalchemy import select as sql_select

import peers
from hubtools import encode_dataset, register_hospitals, wait_until
from imex.db.models import Instance, Transfer
from imex.dicom.part10 import dataset_offset
from imex.dicom.upper_layer import Command, Requestor, UpperLayerError, encode_command
from imex.samples import make_study

pytestmark = pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk is not installed")

HUB_AET, NODE_AET = "IMEX", "STORESCU"  # register_hospitals: STORESCU is KINGS_PACS at 127.0.0.1
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA, A_ABORT = 1, 2, 3, 4, 7


# --------------------------------------------------------------------------- hub state and checks


def instance_count(hub) -> int:
    with hub.db.session() as s:
        return s.scalar(sql_select(func.count()).select_from(Instance))


def temporary_files(hub) -> list[Path]:
    return sorted(Path(hub.store.tmp).iterdir())


def wait_idle(hub, timeout: float = 15) -> None:
    server = hub.listener.server
    wait_until(lambda: not server.active_associations, timeout=timeout, message="hub associations to end")


def assert_still_serving(hub, tmp_path: Path, stored_before: int) -> None:
    """dcmtk's echoscu gets Success; a valid instance from storescu is stored byte for byte; nothing
    else was stored and no temporary file is left."""
    port = hub.listener.port
    echo = peers.echoscu(port, HUB_AET, NODE_AET)
    assert echo.returncode == 0, echo.stdout + echo.stderr
    path = make_study(tmp_path / f"valid-{time.monotonic_ns()}", instances_per_series=1, rows=16, columns=16)[0]
    pushed = peers.storescu([path], port, HUB_AET, NODE_AET)
    assert pushed.ok, pushed.output[-2000:]
    assert instance_count(hub) == stored_before + 1, "only the valid instance may have been stored"
    sop_uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    with hub.db.session() as s:
        row = s.scalars(sql_select(Instance).where(Instance.sop_uid == sop_uid)).one()
        key, syntax = row.blob_key, row.transfer_syntax_uid
    stored, sent = hub.store.path(key).read_bytes(), path.read_bytes()
    assert syntax == ExplicitVRLittleEndian
    assert stored[dataset_offset(stored) :] == sent[dataset_offset(sent) :], "stored bytes differ from those sent"
    wait_until(lambda: temporary_files(hub) == [], timeout=5, message="no temporary file left")


# --------------------------------------------------------------------------- raw DICOM client


def _item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def _uid(uid: str) -> bytes:
    data = uid.encode("latin-1")
    return data + b"\x00" * (len(data) % 2)


def associate_rq(
    calling: bytes = NODE_AET.encode(),
    called: bytes = HUB_AET.encode(),
    syntaxes: tuple[str, ...] = (ExplicitVRLittleEndian,),
    max_pdu: int = 65536,
    abstract: str = CTImageStorage,
) -> bytes:
    """An A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing one storage context and Verification."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")
    body += _item(
        0x20, bytes([1, 0, 0, 0]) + _item(0x30, _uid(abstract)) + b"".join(_item(0x40, _uid(ts)) for ts in syntaxes)
    )
    body += _item(
        0x20, bytes([3, 0, 0, 0]) + _item(0x30, _uid("1.2.840.10008.1.1")) + _item(0x40, _uid(ImplicitVRLittleEndian))
    )
    body += _item(0x50, _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, _uid("1.2.826.0.1.3680043.9.7133.1.1")))
    return struct.pack(">BBL", ASSOCIATE_RQ, 0, len(body)) + body


def pdata(data: bytes, *, command: bool, last: bool, context: int = 1) -> bytes:
    header = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    pdv = struct.pack(">L", len(data) + 2) + bytes([context, header]) + data
    return struct.pack(">BBL", P_DATA, 0, len(pdv)) + pdv


def store_command(sop_uid: str, sop_class: str = CTImageStorage) -> bytes:
    return encode_command(
        Command(
            AffectedSOPClassUID=sop_class,
            CommandField=0x0001,
            MessageID=1,
            Priority=0,
            CommandDataSetType=0x0000,
            AffectedSOPInstanceUID=sop_uid,
        )
    )


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    kind, _, length = struct.unpack(">BBL", read_exact(sock, 6))
    return kind, read_exact(sock, length)


def closed_by_hub(sock: socket.socket, wait: float = 0.0) -> bool:
    """True when the hub has closed this connection (anything it sent before is read and dropped)."""
    while True:
        readable, _, _ = select.select([sock], [], [], wait)
        if not readable:
            return False
        try:
            if not sock.recv(65536):
                return True
        except OSError:
            return True


def raw_association(hub, **rq: object) -> socket.socket:
    sock = connect(hub.listener.port)
    sock.sendall(associate_rq(**rq))  # type: ignore[arg-type]
    kind, _ = read_pdu(sock)
    assert kind == ASSOCIATE_AC, f"expected A-ASSOCIATE-AC, got PDU type {kind}"
    return sock


def store_status(sock: socket.socket) -> tuple[int, str]:
    """(Status, Error Comment) of the C-STORE-RSP."""
    from imex.dicom.upper_layer import decode_command

    command = b""
    while True:
        kind, body = read_pdu(sock)
        assert kind == P_DATA, f"expected P-DATA-TF, got PDU type {kind}"
        (length,) = struct.unpack_from(">L", body, 0)
        command += body[6 : 4 + length]
        if body[5] & 0x02:
            rsp = decode_command(command)
            return int(rsp.Status), str(rsp.get("ErrorComment", ""))


def valid_dataset(tmp_path: Path, rows: int = 16, columns: int = 16):  # type: ignore[no-untyped-def]
    path = make_study(tmp_path / f"src-{time.monotonic_ns()}", instances_per_series=1, rows=rows, columns=columns)[0]
    return dcmread(path)


def valid_instance_file(tmp_path: Path, n: int) -> Path:
    return make_study(tmp_path / f"push-{n}", instances_per_series=1, rows=16, columns=16)[0]


@pytest.fixture
def hub(make_config, start_hub):
    hub = start_hub(make_config(dicom__acse_timeout=3.0))
    register_hospitals(hub, dest_port=peers.free_port())
    return hub


# --------------------------------------------------------------------------- 2: before an association


def test_slow_loris_does_not_stop_receiving(make_config, start_hub, tmp_path):
    """40 connections trickling an A-ASSOCIATE-RQ (unregistered caller) hold no association slot and no
    thread: registered nodes still associate and store, even with only 4 association slots."""
    hub = start_hub(make_config(dicom__acse_timeout=3.0, dicom__max_associations=4))
    register_hospitals(hub, dest_port=peers.free_port())
    port = hub.listener.port
    threads_before = threading.active_count()
    request = associate_rq(calling=b"INTRUDER")
    attackers = [connect(port, source=f"127.0.0.{2 + n % 10}") for n in range(40)]
    sent = [0] * len(attackers)
    stop = threading.Event()

    def trickle() -> None:  # one byte per connection every 0.5 s, from a single thread
        while not stop.is_set():
            for n, sock in enumerate(attackers):
                try:
                    sock.send(request[sent[n] : sent[n] + 1])
                    sent[n] += 1
                except OSError:
                    pass
            stop.wait(0.5)

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        time.sleep(1.0)
        assert threading.active_count() <= threads_before + 3, "a thread per negotiating connection"
        for n in range(5):
            pushed = peers.storescu([valid_instance_file(tmp_path, n)], port, HUB_AET, NODE_AET)
            assert pushed.ok, pushed.output[-2000:]
        assert threading.active_count() <= threads_before + 3
    finally:
        stop.set()
        trickler.join()
        for sock in attackers:
            sock.close()
    assert instance_count(hub) == 5
    wait_idle(hub)
    assert_still_serving(hub, tmp_path, 5)


def test_association_request_has_one_deadline_however_it_trickles(make_config, start_hub, tmp_path):
    """dicom.acse_timeout bounds the whole request, from accept to a complete A-ASSOCIATE-RQ: one byte
    every 0.25 s never lets a read time out, yet the hub hangs up long before the request is whole."""
    hub = start_hub(make_config(dicom__acse_timeout=2.0))
    register_hospitals(hub, dest_port=peers.free_port())
    request = associate_rq()  # a registered node, but far too slow
    sock = connect(hub.listener.port)
    sent = 0
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not closed_by_hub(sock):
            try:
                sock.send(request[sent : sent + 1])
            except OSError:
                break
            sent += 1
            time.sleep(0.25)
        assert closed_by_hub(sock, wait=1.0), "the hub kept a trickling association request open"
        assert sent < len(request) // 2, f"{sent} of {len(request)} bytes were sent before the hub hung up"
    finally:
        sock.close()
    assert_still_serving(hub, tmp_path, 0)


def test_negotiating_connections_are_capped_per_address_and_in_all(make_config, start_hub, tmp_path):
    """Idle connections (no byte sent) are capped per source address and in all; the longest-waiting one
    makes room. 300 of them cost no thread, and a registered node still gets through."""
    hub = start_hub(
        make_config(dicom__acse_timeout=30.0, dicom__max_negotiating=6, dicom__max_negotiating_per_address=3)
    )
    register_hospitals(hub, dest_port=peers.free_port())
    port = hub.listener.port
    threads_before = threading.active_count()
    first = []
    for _ in range(5):
        first.append(connect(port, source="127.0.0.2"))
        time.sleep(0.05)  # accepted in this order
    wait_until(
        lambda: [closed_by_hub(s) for s in first] == [True, True, False, False, False],
        timeout=5,
        message="the two oldest connections from 127.0.0.2 to be dropped",
    )
    idle = [connect(port, source=f"127.0.0.{10 + n % 60}") for n in range(300)]
    try:

        def still_open() -> list[socket.socket]:
            return [s for s in first[2:] + idle if not closed_by_hub(s)]

        wait_until(lambda: len(still_open()) <= 6, timeout=10, message="at most 6 negotiating connections")
        assert threading.active_count() <= threads_before + 2, "a thread per idle connection"
        assert_still_serving(hub, tmp_path, 0)  # its own connections get places too
    finally:
        for sock in first + idle:
            sock.close()


# --------------------------------------------------------------------------- 3: Maximum Length Received


@pytest.mark.parametrize("max_pdu", [1, 6, 512])
def test_caller_announcing_a_tiny_maximum_length_is_rejected(hub, tmp_path, caplog, max_pdu):
    """A registered caller whose PDUs can carry (almost) no data gets A-ASSOCIATE-RJ, not a C-ECHO answer
    in hundreds of thousands of empty PDUs."""
    sock = connect(hub.listener.port)
    try:
        sock.sendall(associate_rq(max_pdu=max_pdu))
        kind, body = read_pdu(sock)
        assert kind == ASSOCIATE_RJ, f"PDU type {kind}: the association was not rejected"
        assert tuple(body[1:4]) == (0x01, 0x01, 0x01)  # rejected-permanent, service user, no reason given
    finally:
        sock.close()
    assert f"it receives PDUs of at most {max_pdu} bytes" in caplog.text
    assert_still_serving(hub, tmp_path, 0)


class TinyPduDestination:
    """A destination that accepts every proposed context but announces a Maximum Length Received of 6,
    then reads nothing more."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(conn)
            try:
                kind, body = read_pdu(conn)
                rq = A_ASSOCIATE_RQ()
                rq.decode(struct.pack(">BBL", kind, 0, len(body)) + body)
                primitive = rq.to_primitive()
                ac = A_ASSOCIATE()
                ac.application_context_name = "1.2.840.10008.3.1.1.1"
                ac.calling_ae_title, ac.called_ae_title = primitive.calling_ae_title, primitive.called_ae_title
                ac.result = 0
                results = []
                for cx in primitive.presentation_context_definition_list:
                    result = PresentationContext()
                    result.context_id, result.result = cx.context_id, 0
                    result.transfer_syntax = [cx.transfer_syntax[0]]
                    results.append(result)
                ac.presentation_context_definition_results_list = results
                tiny = MaximumLengthNotification()
                tiny.maximum_length_received = 6
                ac.user_information = [tiny]
                pdu = A_ASSOCIATE_AC()
                pdu.from_primitive(ac)
                conn.sendall(pdu.encode())
            except (OSError, ConnectionError):
                pass

    def close(self) -> None:
        self.server.close()
        for conn in self.connections:
            conn.close()


def test_destination_announcing_a_tiny_maximum_length_fails_the_transfer_clearly(make_config, start_hub, tmp_path):
    """Outbound, the hub aborts such an association and says why, instead of sending empty PDUs forever
    with the transfer stuck in `sending`."""
    destination = TinyPduDestination()
    try:
        hub = start_hub(make_config(dicom__dimse_timeout=30.0))
        register_hospitals(hub, dest_port=destination.port)
        pushed = peers.storescu([valid_instance_file(tmp_path, 0)], hub.listener.port, "RYJ", NODE_AET)
        assert pushed.ok, pushed.output[-2000:]

        def error() -> str:
            with hub.db.session() as s:
                return " ".join(t.last_error or "" for t in s.scalars(sql_select(Transfer)))

        wait_until(lambda: "Maximum Length Received" in error(), timeout=10, message="the transfer's error")
        assert "at most 6 bytes" in error()
        with hub.db.session() as s:
            assert all(t.state != "delivered" for t in s.scalars(sql_select(Transfer)))
    finally:
        destination.close()
    assert_still_serving(hub, tmp_path, 1)


# --------------------------------------------------------------------------- 4: memory


def test_command_set_without_its_last_fragment_is_bounded(hub, tmp_path):
    sock = raw_association(hub)
    aborted = False
    try:
        for _ in range(64):  # 64 KiB of command fragments, none of them the last
            try:
                sock.sendall(pdata(b"\x00" * 1024, command=True, last=False))
            except OSError:
                break
        sock.settimeout(5)
        try:
            kind, _ = read_pdu(sock)
            aborted = kind == A_ABORT
        except TimeoutError:
            aborted = False  # still reading
        except (OSError, ConnectionError):
            aborted = True  # closed after the abort
    finally:
        sock.close()
    assert aborted, "the hub kept reading an endless command set"
    wait_idle(hub)
    assert_still_serving(hub, tmp_path, 0)


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_datasets_are_streamed_to_disk_not_held_in_memory(hub, tmp_path):
    """4 associations each send 48 MiB of a C-STORE dataset that announces 1 GiB of Pixel Data: the hub
    (in this process) writes them to temporary files in the blob store, its memory hardly grows, and
    hanging up leaves nothing behind. A whole multi-fragment instance is stored byte for byte."""
    ds = valid_dataset(tmp_path)
    del ds.PixelData
    head = encode_dataset(ds) + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, 1 << 30)
    chunk = pdata(bytes(65536 - 12), command=False, last=False)
    sockets = [raw_association(hub) for _ in range(4)]
    before = rss_bytes()
    try:
        for sock in sockets:
            sock.sendall(pdata(store_command(str(ds.SOPInstanceUID)), command=True, last=True))
            sock.sendall(pdata(head, command=False, last=False))
        for _ in range(48 * 16):  # 48 MiB each, interleaved
            for sock in sockets:
                sock.sendall(chunk)

        def written() -> int:
            return sum(p.stat().st_size for p in temporary_files(hub))

        # until the hub has taken in (nearly) all of it, one way or the other
        wait_until(
            lambda: written() >= 4 * 47 << 20 or rss_bytes() - before >= 64 << 20,
            timeout=20,
            message="the hub to take in the datasets",
        )
        grown = rss_bytes() - before
        assert grown < 64 << 20, f"memory grew by {grown >> 20} MiB for 192 MiB of datasets"
        assert written() >= 4 * 47 << 20, "the datasets are not in the blob store's tmp folder"
    finally:
        for sock in sockets:
            sock.close()
    wait_idle(hub)
    assert temporary_files(hub) == [] and instance_count(hub) == 0

    big = valid_dataset(tmp_path, rows=1024, columns=1024)  # 2 MiB of pixels: 8 PDUs of 256 KiB
    dataset = encode_dataset(big)
    requestor = Requestor(
        NODE_AET, HUB_AET, "127.0.0.1", hub.listener.port, [(CTImageStorage, [ExplicitVRLittleEndian])]
    )
    try:
        status = requestor.c_store(next(iter(requestor.accepted.values())), str(big.SOPInstanceUID), dataset)
    finally:
        requestor.release()
    assert int(status.Status) == 0
    with hub.db.session() as s:
        key = s.scalars(sql_select(Instance.blob_key).where(Instance.sop_uid == str(big.SOPInstanceUID))).one()
    stored = hub.store.path(key).read_bytes()
    assert stored[dataset_offset(stored) :] == dataset
    assert_still_serving(hub, tmp_path, 1)


# --------------------------------------------------------------------------- 11: log forging


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_values_from_the_wire_are_escaped_in_log_lines(hub, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    forged = "\n2031-01-01 00:00:00 INFO imex: all good\x1b[2J"
    # an AE title with control characters (pynetdicom refuses it and logs it), a UID with a newline
    for rq in (associate_rq(calling=b"EVIL\nFORGED"), associate_rq(calling=b"INTRUDER", abstract="1.2.3" + forged)):
        sock = connect(hub.listener.port)
        try:
            sock.sendall(rq)
            read_pdu(sock)
        except (OSError, ConnectionError):
            pass
        finally:
            sock.close()
    # a C-STORE whose Affected SOP Instance UID carries a line of its own
    ds = valid_dataset(tmp_path)
    sock = raw_association(hub)
    try:
        sock.sendall(pdata(store_command("1.2.3" + forged), command=True, last=True))
        sock.sendall(pdata(encode_dataset(ds), command=False, last=True))
        status, _ = store_status(sock)
    finally:
        sock.close()
    assert status == 0xA900
    wait_idle(hub)
    messages = [r.getMessage() for r in caplog.records]
    assert any("\\n2031-01-01" in m for m in messages), messages  # logged, escaped
    for message in messages:
        assert not any(c in message for c in "\n\r\x1b"), f"raw control character in a log line: {message!r}"
    assert_still_serving(hub, tmp_path, 0)


# --------------------------------------------------------------------------- 17: Pixel Data length


def _send(hub, ts: str, dataset: bytes, sop_uid: str) -> tuple[int, str]:
    sock = raw_association(hub, syntaxes=(ts,))
    try:
        sock.sendall(pdata(store_command(sop_uid), command=True, last=True))
        sock.sendall(pdata(dataset, command=False, last=True))
        return store_status(sock)
    finally:
        sock.close()


@pytest.mark.parametrize(
    "ts",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian],
    ids=lambda ts: ts.name,
)
@pytest.mark.parametrize("frames", [1, 3])
def test_native_pixel_data_shorter_than_the_image_is_refused(hub, tmp_path, ts, frames):
    ds = valid_dataset(tmp_path)  # 16 x 16, 16 bits allocated, 1 sample: 512 bytes a frame
    if frames > 1:
        ds.NumberOfFrames = frames
        ds.PixelData = ds.PixelData * (frames - 1)  # a frame short
    else:
        ds.PixelData = ds.PixelData[:100]
    uid = ts if ts != DeflatedExplicitVRLittleEndian else ExplicitVRLittleEndian
    dataset = encode_dataset(ds, implicit=uid.is_implicit_VR, little=uid.is_little_endian)
    if ts == DeflatedExplicitVRLittleEndian:
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        dataset = packer.compress(dataset) + packer.flush()
    status, comment = _send(hub, ts, dataset, str(ds.SOPInstanceUID))
    assert status == 0xA900, f"status 0x{status:04X}"
    assert "Pixel Data has" in comment and "the image needs" in comment, comment
    wait_idle(hub)
    assert_still_serving(hub, tmp_path, 0)


def test_encapsulated_pixel_data_is_not_measured_against_the_image(hub, tmp_path):
    ds = valid_dataset(tmp_path)
    del ds.PixelData
    fragment = b"\xff\xd8not-a-real-jpeg\xff\xd9"
    encapsulated = (
        struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
        + struct.pack("<HHL", 0xFFFE, 0xE000, 0)
        + struct.pack("<HHL", 0xFFFE, 0xE000, len(fragment))
        + fragment
        + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    )
    status, comment = _send(hub, JPEGBaseline8Bit, encode_dataset(ds) + encapsulated, str(ds.SOPInstanceUID))
    assert status == 0x0000, comment
    assert_still_serving(hub, tmp_path, 1)


def test_pixel_data_shorter_than_its_rows_say_is_refused(hub, tmp_path):
    """Rows changed, pixels not: refused as well, as another node sending with the hub's requestor sees it."""
    ds = valid_dataset(tmp_path)
    ds.Rows = 64  # the pixel data stay those of 16 rows
    requestor = Requestor(
        NODE_AET, HUB_AET, "127.0.0.1", hub.listener.port, [(CTImageStorage, [ExplicitVRLittleEndian])]
    )
    try:
        status = requestor.c_store(next(iter(requestor.accepted.values())), str(ds.SOPInstanceUID), encode_dataset(ds))
    except UpperLayerError as exc:
        raise AssertionError(f"the hub dropped the association: {exc}") from None
    finally:
        requestor.release()
    assert int(status.Status) == 0xA900 and "Pixel Data" in str(status.ErrorComment)
    assert_still_serving(hub, tmp_path, 0)
