"""Bounded fuzzing (hypothesis) of what arrives from the network: raw and structured DICOM PDUs, C-STOREs
of mutated datasets, and HL7 messages. The hub never crashes, no listener thread is left hanging, it
answers normally afterwards, and nothing from a rejected input is stored."""

from __future__ import annotations

import socket
import struct

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy import func, select

import peers
from hl7tools import register_ris, sample
from hubtools import register_hospitals, wait_until
from imex.db.models import Instance, reports
from imex.dicom.part10 import dataset_offset, encode_dataset
from imex.dicom.upper_layer import Requestor, UpperLayerError, decode_command, encode_command, pdvs
from imex.hl7 import client
from imex.samples import make_study

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT = str(ImplicitVRLittleEndian)


def _hub(make_config, start_hub):  # type: ignore[no-untyped-def]
    hub = start_hub(make_config(dicom__acse_timeout=2.0, dicom__network_timeout=5.0, hl7__idle_timeout=5.0))
    register_hospitals(hub, dest_port=9)  # deliveries fail; only what is stored matters here
    return hub


def _instances(hub) -> int:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return s.scalar(select(func.count()).select_from(Instance))


def _send_raw(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except OSError:
            pass  # the hub may abort and close first


def _associate_rq(calling: bytes = b"STORESCU", called: bytes = b"IMEX") -> bytes:
    """A minimal A-ASSOCIATE-RQ proposing CT storage in explicit VR little endian."""

    def item(kind: int, body: bytes) -> bytes:
        return struct.pack(">BBH", kind, 0, len(body)) + body

    context = item(0x20, bytes([1, 0, 0, 0]) + item(0x30, CT.encode()) + item(0x40, ExplicitVRLittleEndian.encode()))
    user = item(0x50, item(0x51, struct.pack(">L", 16384)))
    body = (
        struct.pack(">HH", 1, 0)
        + called.ljust(16)
        + calling.ljust(16)
        + bytes(32)
        + item(0x10, b"1.2.840.10008.3.1.1.1")
        + context
        + user
    )
    return struct.pack(">BBL", 1, 0, len(body)) + body


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBL", kind, 0, len(body)) + body


pdu_bodies = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda t, b: _pdu(t, b), st.integers(0, 255), st.binary(max_size=300)),
    # an association, then P-DATA with random PDVs (context id, control header, fragment)
    st.builds(
        lambda pdvs: (
            _associate_rq() + b"".join(_pdu(4, struct.pack(">LBB", len(f) + 2, cx, ctl) + f) for cx, ctl, f in pdvs)
        ),
        st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.binary(max_size=200)), max_size=4),
    ),
    st.builds(
        lambda calling, called: _associate_rq(calling, called),
        st.binary(min_size=0, max_size=20),
        st.binary(min_size=0, max_size=20),
    ),
    st.builds(lambda head, cut: _associate_rq()[:cut] + head, st.binary(max_size=50), st.integers(0, 80)),
)


def test_dicom_listener_survives_fuzzed_pdus(make_config, start_hub):
    hub = _hub(make_config, start_hub)
    port = hub.listener.port

    @FUZZ
    @given(pdu_bodies)
    def send(data: bytes) -> None:
        _send_raw(port, data)

    send()
    wait_until(lambda: not hub.listener.server.active_associations, timeout=15, message="no hanging association")
    assert _instances(hub) == 0
    from pynetdicom import AE

    ae = AE(ae_title="STORESCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="IMEX")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()


def test_cstore_of_mutated_datasets_stores_only_what_it_accepts(make_config, start_hub, tmp_path):
    hub = _hub(make_config, start_hub)
    source = make_study(tmp_path / "ct", instances_per_series=1, modality="CT", rows=8, columns=8)[0]
    data = source.read_bytes()
    dataset = data[dataset_offset(data) :]
    counts = {"accepted": 0, "refused": 0}
    real_uid = str(dcmread(source, stop_before_pixels=True).SOPInstanceUID)

    @settings(FUZZ, max_examples=80)
    @example([], len(dataset), real_uid)  # untouched: stored
    @example([(len(dataset) - 1, 0x55)], len(dataset), real_uid)  # a pixel changed: still a valid instance
    @example([], len(dataset), "1.2.3")  # the command names another instance: refused
    @given(
        st.lists(st.tuples(st.integers(0, len(dataset) - 1), st.integers(0, 255)), max_size=6),
        st.integers(1, len(dataset)),
        st.sampled_from([real_uid, real_uid, "1.2.3", ""]),
    )
    def store(flips: list[tuple[int, int]], cut: int, uid: str) -> None:
        mutated = bytearray(dataset[:cut])
        for pos, value in flips:
            if pos < len(mutated):
                mutated[pos] = value
        before = _instances(hub)
        try:
            requestor = Requestor(
                "STORESCU", "IMEX", "127.0.0.1", hub.listener.port, [(CT, [ExplicitVRLittleEndian])], timeout=10
            )
        except UpperLayerError as exc:
            raise AssertionError(f"the hub refused a well-formed association: {exc}") from None
        cx = next(iter(requestor.accepted.values()))
        try:
            status = int(requestor.c_store(cx, uid or "1.2.826.0.1.3680043.2.1545.1", bytes(mutated)).Status)
        except UpperLayerError:
            status = None  # aborted: also a refusal
        finally:
            requestor.release()
        after = _instances(hub)
        if status == 0:
            counts["accepted"] += 1
            assert after <= before + 1
        else:
            counts["refused"] += 1
            assert after == before, f"status {status} but an instance was stored"

    store()
    assert counts["refused"] > 0 and counts["accepted"] > 0, counts
    wait_until(lambda: not hub.listener.server.active_associations, timeout=15, message="no hanging association")


STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _find_statuses(requestor: Requestor, cx: int, identifier: bytes) -> list[tuple[int, str]]:
    """Send a C-FIND-RQ with this identifier as it is; (status, comment) of each response to the last."""
    command = dict(
        AffectedSOPClassUID=STUDY_ROOT_FIND, CommandField=0x0020, MessageID=1, Priority=0, CommandDataSetType=0
    )
    requestor.stream.send_message(cx, encode_command(command), True, requestor.peer_max_pdu)
    requestor.stream.send_message(cx, identifier, False, requestor.peer_max_pdu)
    answers: list[tuple[int, str]] = []
    parts: list[bytes] = []
    while True:
        kind, pdu = requestor.stream.read_pdu(1 << 20)
        assert kind == 4, f"expected P-DATA-TF, got PDU type {kind}"
        for _cx, control, fragment in pdvs(pdu):
            if control & 0x01:
                parts.append(bytes(fragment))
                if control & 0x02:
                    rsp = decode_command(b"".join(parts))
                    parts = []
                    answers.append((int(rsp["Status"]), str(rsp.get("ErrorComment", ""))))
                    if answers[-1][0] not in (0xFF00, 0xFF01):
                        return answers


def test_cfind_of_mutated_identifiers_is_answered_in_dicom_terms(make_config, start_hub, tmp_path):
    """Identifiers cut and changed at random: every query ends with Success (its matches first), 0xA900
    with the reason, or 0xA700; never an internal error, and the same association goes on serving."""
    hub = _hub(make_config, start_hub)
    study = make_study(tmp_path / "ct", instances_per_series=2, rows=8, columns=8)
    assert peers.storescu(study, hub.listener.port, "IMEX").statuses == [0, 0]
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.PatientName = "TEST*"
    query.StudyDate = "19000101-20991231"
    query.StudyInstanceUID = str(dcmread(study[0]).StudyInstanceUID)
    query.SOPInstanceUID = ""
    query.ModalitiesInStudy = "CT"
    identifier = encode_dataset(query, implicit=True)
    requestor = Requestor("STORESCU", "IMEX", "127.0.0.1", hub.listener.port, [(STUDY_ROOT_FIND, [IMPLICIT])])
    cx = requestor.accepted[(STUDY_ROOT_FIND, IMPLICIT)].context_id
    seen: set[int] = set()

    @settings(FUZZ, max_examples=60)
    @example([], len(identifier))  # untouched: two matches
    @given(
        st.lists(st.tuples(st.integers(0, len(identifier) - 1), st.integers(0, 255)), max_size=4),
        st.integers(0, len(identifier)),
    )
    def find(flips: list[tuple[int, int]], cut: int) -> None:
        mutated = bytearray(identifier[:cut])
        for pos, value in flips:
            if pos < len(mutated):
                mutated[pos] = value
        answers = _find_statuses(requestor, cx, bytes(mutated))
        final, comment = answers[-1]
        assert final in (0x0000, 0xA900, 0xA700), (final, comment)
        assert all(status == 0xFF00 for status, _ in answers[:-1])
        if final == 0xA900:
            assert comment
        seen.add(final)

    try:
        find()
    finally:
        requestor.release()
    assert {0x0000, 0xA900} <= seen
    wait_until(lambda: not hub.listener.server.active_associations, timeout=15, message="no hanging association")


hl7_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


def _message(msh: list[str], segments: list[str]) -> bytes:
    return ("MSH|^~\\&|" + "|".join(msh) + "\r" + "\r".join(segments)).encode("utf-8", "replace")


hl7_messages = st.one_of(
    st.binary(max_size=400),
    st.builds(_message, st.lists(hl7_text, max_size=12), st.lists(hl7_text, max_size=5)),
    # a real report with one segment replaced or cut
    st.builds(
        lambda i, seg, cut: (
            lambda parts: b"\r".join(parts[:i] + [seg.encode("utf-8", "replace")] + parts[i + 1 :])[:cut]
        )(sample("oru_v23_final.hl7").split(b"\r")),
        st.integers(0, 8),
        hl7_text,
        st.integers(10, 3000),
    ),
)


def test_mllp_listener_survives_fuzzed_messages(make_config, start_hub):
    hub = _hub(make_config, start_hub)
    register_ris(hub)
    port = hub.reports.port

    def stored() -> int:
        with hub.db.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(reports)).scalar()

    @FUZZ
    @given(hl7_messages)
    def send(message: bytes) -> None:
        before = stored()
        try:
            answer = client.send("127.0.0.1", port, message, timeout=10)
        except client.MllpError:
            answer = None  # the hub closed the connection (e.g. bytes outside a frame)
        if answer is None or not answer.accepted:
            assert stored() == before

    send()
    assert client.send("127.0.0.1", port, sample("oru_v23_final.hl7")).code == "AA"
