"""Malformed and hostile input against a running hub.

Each test checks three things: the precise DICOM answer in protocol terms (A-ASSOCIATE-RJ
result/source/reason, presentation context result, C-STORE status, A-ABORT), that the hub keeps
serving afterwards (C-ECHO and a valid C-STORE on a new association), and that the bad input left
nothing behind (no Instance or Study row, no blob, no partial file in the store's tmp folder).

dcmtk's storescu refuses to send a truncated or non-DICOM file, so broken bytes are sent with
pynetdicom (from a file whose meta header names the request's SOP class and instance and whose
dataset bytes are sent as they are) or with the small raw-socket client below, which speaks just
enough of the DICOM upper layer to negotiate, send P-DATA-TF PDUs and hang up wherever we like.
"""

from __future__ import annotations

import random
import socket
import struct
import time
import zlib
from io import BytesIO
from pathlib import Path

import pynetdicom
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)
from pynetdicom import AE
from pynetdicom.sop_class import (
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    Verification,
)
from sqlalchemy import func, select

import peers
from hubtools import encode_dataset, register_hospitals, wait_until
from imex.db.models import Instance, Study
from imex.dicom import parse
from imex.samples import make_study

HUB_AET = "IMEX"  # the default dicom.ae_title
SOURCE_AET = "STORESCU"  # registered by register_hospitals for institution RJZ at 127.0.0.1

# A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 = rejected-permanent, source 1 = DICOM UL service-user,
# reason 3 = calling AE title not recognized, reason 7 = called AE title not recognized.
REJECTED_PERMANENT, SERVICE_USER = 0x01, 0x01
CALLING_AE_NOT_RECOGNIZED, CALLED_AE_NOT_RECOGNIZED = 0x03, 0x07
# Presentation context result (PS3.8 9.3.3.2): 3 = abstract syntax not supported.
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
# C-STORE statuses (PS3.4 B.2.3)
CANNOT_UNDERSTAND, DATASET_MISMATCH, OUT_OF_RESOURCES = 0xC000, 0xA900, 0xA700
# PDU types (PS3.8 9.3.1)
ASSOCIATE_RQ, ASSOCIATE_AC, P_DATA_TF, A_ABORT = 0x01, 0x02, 0x04, 0x07


# --------------------------------------------------------------------------- hub state


def instance_count(hub) -> int:
    with hub.db.session() as s:
        return s.scalar(select(func.count()).select_from(Instance))


def study_count(hub) -> int:
    with hub.db.session() as s:
        return s.scalar(select(func.count()).select_from(Study))


def blobs(hub) -> list[Path]:
    """Blob files in the store, outside its tmp folder."""
    root = Path(hub.store.root)
    tmp = Path(hub.store.tmp)
    return sorted(p for p in root.rglob("*") if p.is_file() and tmp not in p.parents)


def partial_files(hub) -> list[Path]:
    return sorted(Path(hub.store.tmp).iterdir())


def wait_idle(hub, timeout: float = 15) -> None:
    """Until the listener has no association left: whatever the hub does with the input is done."""
    server = hub.listener.server
    wait_until(lambda: not server.active_associations, timeout=timeout, message="hub associations to end")


def assert_nothing_stored(hub, instances: int = 0, studies: int = 0) -> None:
    assert instance_count(hub) == instances
    assert study_count(hub) == studies
    assert len(blobs(hub)) == instances
    assert partial_files(hub) == []


# --------------------------------------------------------------------------- pynetdicom requestor


def requestor(aet: str = SOURCE_AET, contexts: list[tuple[str, list[str]]] | None = None) -> AE:
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    for abstract, syntaxes in contexts or [
        (Verification, [ImplicitVRLittleEndian]),
        (CTImageStorage, [ExplicitVRLittleEndian]),
    ]:
        ae.add_requested_context(abstract, syntaxes)
    return ae


def associate(hub, aet: str = SOURCE_AET, called: str = HUB_AET, contexts=None):
    return requestor(aet, contexts).associate("127.0.0.1", hub.listener.port, ae_title=called)


def valid_instance(tmp_path: Path) -> Path:
    folder = tmp_path / f"valid-{time.monotonic_ns()}"
    return make_study(folder, instances_per_series=1, rows=16, columns=16)[0]


def assert_still_serving(hub, tmp_path: Path, aet: str = SOURCE_AET) -> None:
    """A new association: C-ECHO answers Success, a valid instance is stored and indexed."""
    before = instance_count(hub)
    assoc = associate(hub, aet)
    assert assoc.is_established, "hub no longer accepts associations"
    try:
        assert assoc.send_c_echo().Status == 0x0000
        status = assoc.send_c_store(dcmread(valid_instance(tmp_path)))
        assert status.Status == 0x0000, status
    finally:
        assoc.release()
    assert instance_count(hub) == before + 1
    assert len(blobs(hub)) == before + 1


def assert_rejected(assoc, reason: int) -> None:
    assert assoc.is_rejected, "association was not rejected"
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (REJECTED_PERMANENT, SERVICE_USER, reason)


def dataset_bytes(path: Path) -> tuple[Dataset, bytes]:
    """A sample file's dataset and its exact explicit VR little endian encoding."""
    ds = dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    return ds, encode_dataset(ds)


@pytest.fixture
def send_bytes(tmp_path, monkeypatch):
    """Send any bytes as the dataset of a C-STORE with pynetdicom; returns the response status.

    pynetdicom sends a file's dataset without decoding it when STORE_SEND_CHUNKED_DATASET is on:
    the request's SOP class/instance and the transfer syntax come from the file meta header."""
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    counter = iter(range(10_000))

    def send(assoc, raw: bytes, sop_class: str, sop_uid: str, ts: str = ExplicitVRLittleEndian) -> Dataset:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ts
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = tmp_path / f"raw-{next(counter)}.dcm"
        with open(path, "wb") as fh:
            fh.write(b"\x00" * 128 + b"DICM")
            write_file_meta_info(fh, meta)
            fh.write(raw)
        return assoc.send_c_store(path)

    return send


# --------------------------------------------------------------------------- raw socket requestor


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _uid(uid: str) -> bytes:
    data = uid.encode()
    return data + b"\x00" * (len(data) % 2)


def associate_rq(called: str, calling: str, contexts: list[tuple[int, str, list[str]]], max_pdu: int = 65536) -> bytes:
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) for (context id, abstract syntax, transfer syntaxes)."""
    body = struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16) + b"\x00" * 32
    body += _item(0x10, b"1.2.840.10008.3.1.1.1")
    for cid, abstract, syntaxes in contexts:
        sub = _item(0x30, _uid(abstract)) + b"".join(_item(0x40, _uid(ts)) for ts in syntaxes)
        body += _item(0x20, bytes([cid, 0, 0, 0]) + sub)
    user = _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, _uid("1.2.826.0.1.3680043.9.7133.1.1"))
    body += _item(0x50, user)
    return struct.pack(">BBL", ASSOCIATE_RQ, 0, len(body)) + body


def pdata(cid: int, data: bytes, *, command: bool, last: bool) -> bytes:
    """A P-DATA-TF PDU holding one PDV (PS3.8 9.3.5, E.2)."""
    header = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    pdv = struct.pack(">L", len(data) + 2) + bytes([cid, header]) + data
    return struct.pack(">BBL", P_DATA_TF, 0, len(pdv)) + pdv


def store_command(sop_class: str, sop_uid: str, message_id: int = 1) -> bytes:
    """A C-STORE-RQ command set, implicit VR little endian, group length first (PS3.7 9.3.1.1)."""
    cmd = Dataset()
    cmd.AffectedSOPClassUID = sop_class
    cmd.CommandField = 0x0001
    cmd.MessageID = message_id
    cmd.Priority = 0
    cmd.CommandDataSetType = 0x0000  # anything but 0x0101: a dataset follows
    cmd.AffectedSOPInstanceUID = sop_uid
    rest = encode_dataset(cmd, implicit=True)
    cmd.CommandGroupLength = len(rest)
    return encode_dataset(cmd, implicit=True)


class RawPeer:
    """A TCP connection to the hub speaking raw PDUs."""

    def __init__(self, hub) -> None:
        self.sock = socket.create_connection(("127.0.0.1", hub.listener.port), timeout=10)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(out)} of {n} bytes")
            out += chunk
        return bytes(out)

    def read_pdu(self) -> tuple[int, bytes]:
        pdu_type, _, length = struct.unpack(">BBL", self._exact(6))
        return pdu_type, self._exact(length)

    def closed_by_peer(self, timeout: float = 10) -> bool:
        """True once the hub closes the connection (reads and drops anything it still sends)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def associate(
        self, contexts: list[tuple[int, str, list[str]]], calling: str = SOURCE_AET, called: str = HUB_AET
    ) -> dict[int, int]:
        """Negotiate; returns {context id: result} from the A-ASSOCIATE-AC."""
        self.send(associate_rq(called, calling, contexts))
        pdu_type, body = self.read_pdu()
        assert pdu_type == ASSOCIATE_AC, f"expected A-ASSOCIATE-AC, got PDU type {pdu_type:#04x}"
        results: dict[int, int] = {}
        pos = 68  # protocol version, reserved, AE titles, reserved (PS3.8 Table 9-17)
        while pos < len(body):
            item_type, _, length = struct.unpack_from(">BBH", body, pos)
            if item_type == 0x21:
                results[body[pos + 4]] = body[pos + 6]
            pos += 4 + length
        return results

    def store_status(self) -> int:
        """Read the C-STORE-RSP command and return its Status."""
        command = b""
        while True:
            pdu_type, body = self.read_pdu()
            assert pdu_type == P_DATA_TF, f"expected P-DATA-TF, got PDU type {pdu_type:#04x}"
            (length,) = struct.unpack_from(">L", body, 0)
            command += body[6 : 4 + length]
            if body[5] & 0x02:
                break
        return read_dataset(BytesIO(command), True, True).Status

    def close(self) -> None:
        self.sock.close()


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# --------------------------------------------------------------------------- fixtures


# After an A-ABORT, or a connection that never sent an A-ASSOCIATE-RQ, pynetdicom's acceptor thread
# lingers until the ACSE timeout (30 s by default): a short one lets tests wait for the hub to be idle.
ACSE_TIMEOUT = 3.0


def bad_input_hub(make_config, start_hub, **register):
    hub = start_hub(make_config(dicom__acse_timeout=ACSE_TIMEOUT))
    register_hospitals(hub, dest_port=peers.free_port(), **register)
    return hub


@pytest.fixture
def hub(make_config, start_hub):
    return bad_input_hub(make_config, start_hub)


# --------------------------------------------------------------------------- association policy


def test_unknown_calling_ae_title_is_rejected(hub, tmp_path):
    assoc = associate(hub, aet="INTRUDER")
    assert_rejected(assoc, CALLING_AE_NOT_RECOGNIZED)
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


def test_unknown_calling_ae_title_as_dcmtk_sees_it(hub):
    if not peers.have_dcmtk():
        pytest.skip("dcmtk is not installed")
    result = peers.echoscu(hub.listener.port, HUB_AET, "INTRUDER")
    assert result.returncode != 0
    assert "Association Rejected" in result.stdout + result.stderr
    assert "Result: Rejected Permanent, Source: Service User" in result.stdout + result.stderr
    assert "Reason: Calling AE Title Not Recognized" in result.stdout + result.stderr
    ok = peers.echoscu(hub.listener.port, HUB_AET, SOURCE_AET)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_known_ae_title_from_the_wrong_address_is_rejected(make_config, start_hub, tmp_path, caplog):
    from imex.directory import add_node

    hub = bad_input_hub(make_config, start_hub, source_host="10.255.255.1")
    assoc = associate(hub, aet=SOURCE_AET)  # from 127.0.0.1
    assert_rejected(assoc, CALLING_AE_NOT_RECOGNIZED)
    # same reason code as an unknown AE title: the log tells which check refused it
    assert "'STORESCU' connected from 127.0.0.1, but node KINGS_PACS is at 10.255.255.1" in caplog.text
    assert_nothing_stored(hub)
    # the hub still serves a node registered at the address it connects from
    add_node(hub.db, "KINGS_CT", "KINGSCT", "127.0.0.1", 104, "RJZ", destination=False)
    hub.nodes.invalidate()
    assert_still_serving(hub, tmp_path, aet="KINGSCT")
    # and the misplaced node stays refused
    assert_rejected(associate(hub, aet=SOURCE_AET), CALLING_AE_NOT_RECOGNIZED)


def test_unknown_called_ae_title_is_rejected(hub, tmp_path):
    assoc = associate(hub, called="NOTAHUB")
    assert_rejected(assoc, CALLED_AE_NOT_RECOGNIZED)
    if peers.have_dcmtk():
        out = peers.echoscu(hub.listener.port, "NOTAHUB", SOURCE_AET)
        assert "Reason: Called AE Title Not Recognized" in out.stdout + out.stderr
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


# --------------------------------------------------------------------------- broken datasets


@pytest.mark.parametrize(
    "cut", ["inside-pixel-data", "inside-element-header", "inside-long-header", "inside-first-value"]
)
def test_truncated_dataset_is_refused(hub, tmp_path, send_bytes, cut):
    ds, raw = dataset_bytes(valid_instance(tmp_path))
    pixel_at = raw.rindex(b"\xe0\x7f\x10\x00OW")
    series_at = raw.index(b"\x20\x00\x11\x00IS")  # Series Number
    keep = {
        "inside-pixel-data": len(raw) - 100,
        "inside-element-header": series_at + 5,
        "inside-long-header": pixel_at + 10,  # OW header needs 12 bytes
        "inside-first-value": 11,  # the first element's header and 3 bytes of its value
    }[cut]
    assoc = associate(hub)
    assert assoc.is_established
    try:
        status = send_bytes(assoc, raw[:keep], ds.SOPClassUID, ds.SOPInstanceUID)
        assert status.Status == CANNOT_UNDERSTAND
        assert "truncated" in status.ErrorComment
        assert_nothing_stored(hub)
        # the same association goes on working
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert instance_count(hub) == 1
    assert_still_serving(hub, tmp_path)


def test_dataset_shorter_than_an_element_header_is_refused(hub, tmp_path):
    """pynetdicom cannot send a dataset of under 8 bytes from a file: the raw client does."""
    ds, raw = dataset_bytes(valid_instance(tmp_path))
    peer = RawPeer(hub)
    try:
        assert peer.associate([(1, CTImageStorage, [ExplicitVRLittleEndian])]) == {1: 0x00}
        peer.send(
            pdata(1, store_command(ds.SOPClassUID, ds.SOPInstanceUID), command=True, last=True)
            + pdata(1, raw[:7], command=False, last=True)
        )
        assert peer.store_status() == CANNOT_UNDERSTAND
        # the association is still usable: the whole dataset is accepted on it
        peer.send(
            pdata(1, store_command(ds.SOPClassUID, ds.SOPInstanceUID, 2), command=True, last=True)
            + pdata(1, raw, command=False, last=True)
        )
        assert peer.store_status() == 0x0000
    finally:
        peer.close()
    wait_idle(hub)
    assert instance_count(hub) == 1
    assert_still_serving(hub, tmp_path)


def test_storescu_refuses_to_send_a_truncated_file(hub, tmp_path):
    """Why the tests above send with pynetdicom: dcmtk never puts truncated bytes on the wire."""
    if not peers.have_dcmtk():
        pytest.skip("dcmtk is not installed")
    path = valid_instance(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    result = peers.storescu([path], hub.listener.port, HUB_AET, SOURCE_AET)
    assert result.statuses == [], result.output[-2000:]
    wait_idle(hub)
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


def test_truncated_deflated_dataset_is_refused(hub, tmp_path, send_bytes):
    ds, raw = dataset_bytes(valid_instance(tmp_path))
    z = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = z.compress(raw) + z.flush()
    assoc = associate(hub, contexts=[(CTImageStorage, [DeflatedExplicitVRLittleEndian])])
    assert assoc.is_established
    try:
        status = send_bytes(
            assoc, deflated[: len(deflated) // 2], ds.SOPClassUID, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian
        )
        assert (status.Status, status.ErrorComment) == (CANNOT_UNDERSTAND, "deflated dataset is truncated")
        assert_nothing_stored(hub)
        # the whole stream is accepted on the same context
        ok = send_bytes(assoc, deflated, ds.SOPClassUID, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian)
        assert ok.Status == 0x0000
    finally:
        assoc.release()
    assert instance_count(hub) == 1
    assert_still_serving(hub, tmp_path)


def test_deflate_bomb_is_refused_with_out_of_resources(hub, tmp_path, send_bytes, monkeypatch):
    """32 MiB of zero pixels deflate to ~32 KiB; above the inflate limit the hub answers A700."""
    monkeypatch.setattr(parse, "MAX_INFLATED_BYTES", 8 << 20)
    ds = dcmread(valid_instance(tmp_path))
    ds.Rows, ds.Columns = 4096, 4096
    ds.PixelData = bytes(4096 * 4096 * 2)
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = z.compress(encode_dataset(ds)) + z.flush()
    assert len(bomb) < 64 << 10
    assoc = associate(hub, contexts=[(CTImageStorage, [DeflatedExplicitVRLittleEndian])])
    assert assoc.is_established
    try:
        status = send_bytes(assoc, bomb, ds.SOPClassUID, ds.SOPInstanceUID, DeflatedExplicitVRLittleEndian)
    finally:
        assoc.release()
    assert status.Status == OUT_OF_RESOURCES
    assert "inflates to more than" in status.ErrorComment
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


@pytest.mark.parametrize("kind", ["random", "text", "zeros-then-random"])
def test_garbage_dataset_is_refused(hub, tmp_path, send_bytes, kind):
    rng = random.Random(42)
    garbage = {
        "random": rng.randbytes(8192),
        "text": b"GET /wado?requestType=WADO HTTP/1.1\r\nHost: hub\r\n\r\n" * 20,
        # (0000,0000) elements of length 0 parse fine; then the random part must be caught
        "zeros-then-random": bytes(64) + rng.randbytes(4096),
    }[kind]
    uid = "1.2.826.0.1.3680043.9.7133.3.1"
    assoc = associate(
        hub,
        contexts=[
            (CTImageStorage, [ts])
            for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian)
        ],
    )
    assert assoc.is_established
    try:
        for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
            status = send_bytes(assoc, garbage, CTImageStorage, uid, ts)
            assert status.Status == CANNOT_UNDERSTAND, (ts.name, status)
            assert status.ErrorComment
    finally:
        assoc.release()
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


def test_malformed_attribute_value_is_refused(hub, tmp_path, send_bytes):
    """Patient Name encoded with VR US and an odd length: pydicom fails only when reading the value."""
    ds, raw = dataset_bytes(valid_instance(tmp_path))
    name_at = raw.index(b"\x10\x00\x10\x00PN")
    (length,) = struct.unpack_from("<H", raw, name_at + 6)
    bad = raw[:name_at] + b"\x10\x00\x10\x00US\x03\x00abc" + raw[name_at + 8 + length :]
    assoc = associate(hub)
    assert assoc.is_established
    try:
        status = send_bytes(assoc, bad, ds.SOPClassUID, ds.SOPInstanceUID)
    finally:
        assoc.release()
    assert status.Status == CANNOT_UNDERSTAND, status
    assert "cannot be decoded" in status.ErrorComment
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


# --------------------------------------------------------------------------- identity of the instance


def test_dataset_without_study_uid_is_refused(hub, tmp_path):
    files = make_study(
        tmp_path / "nostudy", instances_per_series=2, rows=16, columns=16, extra={"StudyInstanceUID": None}
    )
    assert "StudyInstanceUID" not in dcmread(files[0])
    assoc = associate(hub)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dcmread(files[0]))
    finally:
        assoc.release()
    assert status.Status == DATASET_MISMATCH
    assert "Study Instance UID" in status.ErrorComment
    assert_nothing_stored(hub)
    if peers.have_dcmtk():  # storescp would store it: the hub must refuse it itself, for dcmtk too
        result = peers.storescu(files, hub.listener.port, HUB_AET, SOURCE_AET)
        assert result.statuses == [DATASET_MISMATCH, DATASET_MISMATCH], result.output[-2000:]
        assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


def test_sop_instance_uid_differing_from_the_request_is_refused(hub, tmp_path, send_bytes):
    ds, raw = dataset_bytes(valid_instance(tmp_path))
    other_uid = ds.SOPInstanceUID[:-1] + ("2" if ds.SOPInstanceUID.endswith("1") else "1")
    assoc = associate(hub)
    assert assoc.is_established
    try:
        status = send_bytes(assoc, raw, ds.SOPClassUID, other_uid)
        assert status.Status == DATASET_MISMATCH
        assert "SOP Instance UID" in status.ErrorComment
        assert_nothing_stored(hub)  # under neither UID
        # the same bytes with a matching request are fine
        assert send_bytes(assoc, raw, ds.SOPClassUID, ds.SOPInstanceUID).Status == 0x0000
    finally:
        assoc.release()
    assert instance_count(hub) == 1
    assert_still_serving(hub, tmp_path)


def test_sop_class_differing_from_the_request_is_refused(hub, tmp_path, send_bytes):
    ds, raw = dataset_bytes(valid_instance(tmp_path))  # a CT instance
    assoc = associate(hub, contexts=[(MRImageStorage, [ExplicitVRLittleEndian])])
    assert assoc.is_established
    try:
        status = send_bytes(assoc, raw, MRImageStorage, ds.SOPInstanceUID)
    finally:
        assoc.release()
    assert status.Status == DATASET_MISMATCH
    assert "SOP Class UID" in status.ErrorComment
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


# --------------------------------------------------------------------------- non-storage SOP classes


def test_non_storage_sop_classes_are_not_accepted(hub, tmp_path):
    assoc = associate(
        hub,
        contexts=[
            (Verification, [ImplicitVRLittleEndian]),
            (ModalityWorklistInformationFind, [ImplicitVRLittleEndian, ExplicitVRLittleEndian]),
            (StorageCommitmentPushModel, [ImplicitVRLittleEndian]),
            (CTImageStorage, [ExplicitVRLittleEndian]),
        ],
    )
    assert assoc.is_established
    try:
        rejected = {cx.abstract_syntax: cx.result for cx in assoc.rejected_contexts}
        assert rejected == {
            ModalityWorklistInformationFind: ABSTRACT_SYNTAX_NOT_SUPPORTED,
            StorageCommitmentPushModel: ABSTRACT_SYNTAX_NOT_SUPPORTED,
        }
        assert {cx.abstract_syntax for cx in assoc.accepted_contexts} == {Verification, CTImageStorage}
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert_still_serving(hub, tmp_path)


def test_c_store_on_a_rejected_presentation_context_aborts(hub, tmp_path):
    ds, raw = dataset_bytes(valid_instance(tmp_path))
    peer = RawPeer(hub)
    try:
        results = peer.associate(
            [
                (1, ModalityWorklistInformationFind, [ExplicitVRLittleEndian]),
                (3, CTImageStorage, [ExplicitVRLittleEndian]),
            ]
        )
        assert results == {1: ABSTRACT_SYNTAX_NOT_SUPPORTED, 3: 0x00}
        # a C-STORE of a valid instance, but on the rejected context 1
        peer.send(
            pdata(1, store_command(ds.SOPClassUID, ds.SOPInstanceUID), command=True, last=True)
            + pdata(1, raw, command=False, last=True)
        )
        pdu_type, _ = peer.read_pdu()
        assert pdu_type == A_ABORT
        assert peer.closed_by_peer()
    finally:
        peer.close()
    wait_idle(hub)
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


def test_c_store_of_a_worklist_sop_class_on_a_storage_context_is_refused(hub, tmp_path):
    ds, _ = dataset_bytes(valid_instance(tmp_path))
    ds.SOPClassUID = ModalityWorklistInformationFind
    peer = RawPeer(hub)
    try:
        assert peer.associate([(1, CTImageStorage, [ExplicitVRLittleEndian])]) == {1: 0x00}
        peer.send(
            pdata(1, store_command(ModalityWorklistInformationFind, ds.SOPInstanceUID), command=True, last=True)
            + pdata(1, encode_dataset(ds), command=False, last=True)
        )
        status = peer.store_status()
    finally:
        peer.close()
    assert status == 0x0122  # SOP class not supported (on this context)
    wait_idle(hub)
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


def test_c_store_of_another_storage_class_than_negotiated_is_refused(hub, tmp_path):
    """An MR instance sent on the context negotiated for CT Image Storage (PS3.7 9.1.1: a DIMSE
    message uses the presentation context of its SOP class)."""
    ds, _ = dataset_bytes(valid_instance(tmp_path))
    ds.SOPClassUID = MRImageStorage
    peer = RawPeer(hub)
    try:
        assert peer.associate([(1, CTImageStorage, [ExplicitVRLittleEndian])]) == {1: 0x00}
        peer.send(
            pdata(1, store_command(MRImageStorage, ds.SOPInstanceUID), command=True, last=True)
            + pdata(1, encode_dataset(ds), command=False, last=True)
        )
        status = peer.store_status()
    finally:
        peer.close()
    assert status & 0xF000 in (0xA000, 0xC000) or status == 0x0122, f"status {status:#06x}"
    wait_idle(hub)
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


# --------------------------------------------------------------------------- transport-level junk


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: hub\r\n\r\n", id="http-request"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32), id="tls-client-hello"),
        pytest.param(struct.pack(">BBL", ASSOCIATE_RQ, 0, 40) + random.Random(1).randbytes(40), id="bad-associate-rq"),
        pytest.param(pdata(1, b"\x00" * 16, command=True, last=True), id="p-data-before-association"),
    ],
)
def test_junk_on_the_socket_is_aborted(hub, tmp_path, junk):
    peer = RawPeer(hub)
    try:
        peer.send(junk)
        pdu_type, body = peer.read_pdu()
        assert pdu_type == A_ABORT, f"PDU type {pdu_type:#04x}"
        assert len(body) == 4
        # the hub now waits (ARTIM timer, PS3.8 Sta13) for this side to close the connection
    finally:
        peer.close()
    wait_idle(hub)
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


HUGE = 256 << 20  # a 256 MiB PDU, 1000 times the hub's maximum PDU size


def test_huge_declared_pdu_length_then_close(hub, tmp_path):
    peer = RawPeer(hub)
    peer.send(struct.pack(">BBL", ASSOCIATE_RQ, 0, HUGE) + b"\x00\x01\x00\x00")
    peer.close()
    wait_idle(hub)
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)


def test_huge_declared_pdu_length_costs_no_memory(hub, tmp_path):
    """An unauthenticated peer declaring a huge PDU and sending nothing more must not make the hub
    hold memory in proportion to the declared length."""
    before = rss_bytes()
    peer = RawPeer(hub)
    try:
        peer.send(struct.pack(">BBL", ASSOCIATE_RQ, 0, HUGE) + b"\x00\x01\x00\x00")
        time.sleep(0.5)  # the hub is now blocked reading the rest of the PDU
        grown = rss_bytes() - before
    finally:
        peer.close()
    wait_idle(hub)
    assert grown < 32 << 20, f"hub memory grew by {grown >> 20} MiB for a {HUGE >> 20} MiB declared PDU"
    assert_still_serving(hub, tmp_path)


@pytest.mark.parametrize("how", ["close-after-partial-pdv", "close-inside-pdu", "abort-after-partial-pdv"])
def test_hang_up_mid_dataset_stores_nothing(hub, tmp_path, how):
    ds, raw = dataset_bytes(valid_instance(tmp_path))
    half = len(raw) // 2
    peer = RawPeer(hub)
    try:
        assert peer.associate([(1, CTImageStorage, [ExplicitVRLittleEndian])]) == {1: 0x00}
        peer.send(pdata(1, store_command(ds.SOPClassUID, ds.SOPInstanceUID), command=True, last=True))
        if how == "close-inside-pdu":
            whole = pdata(1, raw, command=False, last=True)
            peer.send(whole[: 6 + half])  # the PDU header announces everything; half follows
        else:
            peer.send(pdata(1, raw[:half], command=False, last=False))  # first fragment, not the last
        if how == "abort-after-partial-pdv":
            peer.send(struct.pack(">BBLBBBB", A_ABORT, 0, 4, 0, 0, 0, 0))
            assert peer.closed_by_peer()
        time.sleep(0.2)
    finally:
        peer.close()
    wait_idle(hub)
    assert_nothing_stored(hub)
    assert_still_serving(hub, tmp_path)
    # the same instance, sent whole afterwards, is stored: the partial one left no trace
    assoc = associate(hub)
    try:
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert instance_count(hub) == 2


def test_association_limit_rejects_with_local_limit_exceeded_then_recovers(make_config, start_hub, tmp_path):
    hub = start_hub(make_config(dicom__acse_timeout=ACSE_TIMEOUT, dicom__max_associations=1))
    register_hospitals(hub, dest_port=peers.free_port())
    first = associate(hub)
    assert first.is_established
    try:
        second = associate(hub)
        assert second.is_rejected
        rj = second.acceptor.primitive
        # rejected-transient, DICOM UL service provider (presentation), local limit exceeded (PS3.8 9.3.4)
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)
    finally:
        first.release()
    wait_idle(hub)
    assert_still_serving(hub, tmp_path)
