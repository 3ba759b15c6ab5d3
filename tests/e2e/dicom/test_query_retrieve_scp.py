"""The hub as Query/Retrieve SCP: a hospital's PACS searches what was shared with it and pulls it, with
dcmtk's findscu, movescu and getscu, and pynetdicom where a test needs the exact DIMSE statuses.

King's (RJZ) sends study S1 to Imperial (RYJ) and keeps S2 to itself. Imperial's PACS finds S1 and not
S2 at every level, retrieves S1 byte for byte by C-MOVE and by C-GET, and cannot reach S2 or move to
King's node; bad identifiers get the standard's failure statuses, and every query is in the audit."""

from __future__ import annotations

import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import AuditEvent, Node, Transfer, TransferEvent
from imex.dicom.part10 import dataset_offset, encode_dataset
from imex.dicom.upper_layer import Requestor, decode_command, encode_command, pdvs
from imex.directory import add_node
from imex.folders.manage import add_folder
from imex.samples import make_study

pytestmark = pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk is not installed")

IMPLICIT = "1.2.840.10008.1.2"
PACS = "RYJPACS"  # Imperial's PACS: a storescp, and the calling AE title of its queries


def _dataset_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[dataset_offset(data) :]


def _delivered(hub, count: int) -> bool:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return len([t for t in s.scalars(select(Transfer)) if t.state == "delivered"]) >= count


def _findscu(hub, out: Path, *keys: str, root: str = "-S", calling: str = PACS) -> list[Dataset]:  # type: ignore[no-untyped-def]
    out.mkdir(parents=True, exist_ok=True)
    args = [root, "-X", "-od", str(out), "-aet", calling, "-aec", "IMEX"]
    for key in keys:
        args += ["-k", key]
    proc = peers.run_dcmtk("findscu", [*args, "127.0.0.1", str(hub.listener.port)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared(request, make_config, storescp, tmp_path):  # type: ignore[no-untyped-def]
    """A hub where S1 went from King's to Imperial's PACS (then emptied) and S2 stayed at King's, on
    SQLite and on PostgreSQL."""
    pacs = storescp(aet=PACS)
    database = {"database__url": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    hub = request.getfixturevalue("start_hub")(make_config(**database))  # stopped before the database goes
    register_hospitals(hub, dest_port=pacs.port, dest_aet=PACS)
    s1 = make_study(tmp_path / "s1", series=2, instances_per_series=3, patient_name="JONES^ALAN", patient_id="P1")
    s2 = make_study(tmp_path / "s2", instances_per_series=2, patient_name="JONES^ANN", patient_id="P2")
    assert peers.storescu(s1, hub.listener.port, "RYJ").statuses == [0] * 6  # routed to Imperial
    assert peers.storescu(s2, hub.listener.port, "IMEX").statuses == [0] * 2  # no rule: stays at King's
    pacs.wait_for(6)
    wait_until(lambda: _delivered(hub, 1), message="S1 delivered to Imperial")
    pacs.clear()
    return hub, pacs, s1, s2


def test_pacs_finds_moves_and_gets_only_what_was_shared(shared, tmp_path):
    hub, pacs, s1, s2 = shared
    s1_uid = str(dcmread(s1[0]).StudyInstanceUID)
    s2_uid = str(dcmread(s2[0]).StudyInstanceUID)

    # C-FIND at study level (Study Root): S1 with its attributes, never S2, even by wildcard name
    found = _findscu(
        hub,
        tmp_path / "f1",
        "QueryRetrieveLevel=STUDY",
        "PatientName=jones*",
        "StudyInstanceUID",
        "PatientID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "StudyDate",
    )
    assert [str(d.StudyInstanceUID) for d in found] == [s1_uid]
    assert str(found[0].PatientName) == "JONES^ALAN" and found[0].PatientID == "P1"
    assert found[0].ModalitiesInStudy == "CT"
    assert int(found[0].NumberOfStudyRelatedInstances) == 6
    # S2 by its own UID: zero matches, no hint it exists
    assert _findscu(hub, tmp_path / "f2", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={s2_uid}") == []
    # Patient Root at patient level, series and image levels under S1
    patients = _findscu(hub, tmp_path / "f3", "QueryRetrieveLevel=PATIENT", "PatientID", "PatientName", root="-P")
    assert [p.PatientID for p in patients] == ["P1"]
    series = _findscu(
        hub, tmp_path / "f4", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={s1_uid}", "SeriesInstanceUID"
    )
    assert len(series) == 2 and all(d.StudyInstanceUID == s1_uid for d in series)
    images = _findscu(
        hub,
        tmp_path / "f5",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={s1_uid}",
        f"SeriesInstanceUID={series[0].SeriesInstanceUID}",
        "SOPInstanceUID",
    )
    assert len(images) == 3

    # C-MOVE of S1 to Imperial's own PACS: every instance arrives byte for byte
    proc = peers.run_dcmtk(
        "movescu",
        ["-S", "-aet", PACS, "-aec", "IMEX", "-aem", PACS, "-k", "QueryRetrieveLevel=STUDY"]
        + ["-k", f"StudyInstanceUID={s1_uid}", "127.0.0.1", str(hub.listener.port)],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    received = pacs.wait_for(6)
    sent = {str(dcmread(p).SOPInstanceUID): _dataset_bytes(p) for p in s1}
    assert {str(dcmread(p).SOPInstanceUID): _dataset_bytes(p) for p in received} == sent
    with hub.db.session() as s:
        assert "retrieve" in [e.event for e in s.scalars(select(TransferEvent))]
    pacs.clear()

    # C-GET of S1 over the PACS's own association
    out = tmp_path / "got"
    out.mkdir()
    proc = peers.run_dcmtk(
        "getscu",
        ["-S", "-aet", PACS, "-aec", "IMEX", "-od", str(out), "-k", "QueryRetrieveLevel=STUDY"]
        + ["-k", f"StudyInstanceUID={s1_uid}", "127.0.0.1", str(hub.listener.port)],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {str(dcmread(p).SOPInstanceUID): _dataset_bytes(p) for p in out.iterdir()} == sent

    # S2 cannot be moved or got: nothing matches in Imperial's scope
    ae = AE(ae_title=PACS)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", hub.listener.port, ae_title="IMEX")
    assert assoc.is_established
    try:
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = s2_uid
        final = list(assoc.send_c_move(ident, PACS, StudyRootQueryRetrieveInformationModelMove))[-1][0]
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 0
        # to King's node (another institution's) or an unknown AE title: move destination unknown
        ident.StudyInstanceUID = s1_uid
        for destination in ("STORESCU", "NOSUCHAE"):
            final = list(assoc.send_c_move(ident, destination, StudyRootQueryRetrieveInformationModelMove))[-1][0]
            assert final.Status == 0xA801
            assert "not a node of your institution" in final.ErrorComment
        # a study-level move without StudyInstanceUID would mean "everything": refused
        bare = Dataset()
        bare.QueryRetrieveLevel = "STUDY"
        bare.StudyInstanceUID = ""
        final = list(assoc.send_c_move(bare, PACS, StudyRootQueryRetrieveInformationModelMove))[-1][0]
        assert final.Status == 0xA900 and "needs StudyInstanceUID" in final.ErrorComment
    finally:
        assoc.release()
    assert pacs.files() == []

    # the audit trail names the node, its institution and the keys of each query
    with hub.db.session() as s:
        finds = [e for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "dicom.find"))]
        moves = [e for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "dicom.move"))]
    assert len(finds) == 5 and all(e.username == f"node:{PACS}" for e in finds)
    assert "PatientName=jones*" in finds[0].detail and "1 matches" in finds[0].detail
    assert f"StudyInstanceUID={s2_uid}" in finds[1].detail and "0 matches" in finds[1].detail
    assert {e.institution_id for e in finds} == {2}
    assert [e.outcome for e in moves].count("denied") == 2
    assert any(e.study_uid == s1_uid and e.outcome == "success" for e in moves)


class RawFinder:
    """An association that sends C-FIND and C-CANCEL requests byte for byte as the test writes them (the
    hub's own upper-layer requestor as a plain client: pynetdicom would re-encode or drop them)."""

    def __init__(self, hub) -> None:  # type: ignore[no-untyped-def]
        self.assoc = Requestor(
            PACS,
            "IMEX",
            "127.0.0.1",
            hub.listener.port,
            [(str(StudyRootQueryRetrieveInformationModelFind), [IMPLICIT])],
        )
        self.cx = self.assoc.accepted[(str(StudyRootQueryRetrieveInformationModelFind), IMPLICIT)].context_id

    def send(self, command: dict, identifier: bytes | None = None) -> None:
        self.assoc.stream.send_message(self.cx, encode_command(command), True, self.assoc.peer_max_pdu)
        if identifier is not None:
            self.assoc.stream.send_message(self.cx, identifier, False, self.assoc.peer_max_pdu)

    def find(self, identifier: bytes, message_id: int = 1) -> None:
        command = dict(
            AffectedSOPClassUID=str(StudyRootQueryRetrieveInformationModelFind),
            CommandField=0x0020,
            MessageID=message_id,
            Priority=2,
            CommandDataSetType=0x0000,
        )
        self.send(command, identifier)

    def responses(self) -> list:  # type: ignore[type-arg]
        """Response command sets up to the final one (identifiers are read and dropped)."""
        answers, parts = [], []
        while True:
            pdu_type, pdu = self.assoc.stream.read_pdu(1 << 20)
            assert pdu_type == 0x04, f"expected P-DATA-TF, got PDU type {pdu_type:#04x}"
            for _cx, control, fragment in pdvs(pdu):
                if not control & 0x01:
                    continue
                parts.append(bytes(fragment))
                if control & 0x02:
                    answers.append(decode_command(b"".join(parts)))
                    parts = []
                    if answers[-1]["Status"] not in (0xFF00, 0xFF01):
                        return answers

    def close(self) -> None:
        self.assoc.release()


def _implicit(ds: Dataset) -> bytes:
    return encode_dataset(ds, implicit=True)


def test_bad_queries_get_the_standards_failure_statuses(shared, tmp_path):
    hub, pacs, s1, _ = shared
    s1_uid = str(dcmread(s1[0]).StudyInstanceUID)
    ae = AE(ae_title=PACS)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", hub.listener.port, ae_title="IMEX")
    assert assoc.is_established
    try:

        def find(ds: Dataset, model=StudyRootQueryRetrieveInformationModelFind) -> list:  # type: ignore[no-untyped-def]
            return list(assoc.send_c_find(ds, model))

        wrong_level = Dataset()
        wrong_level.QueryRetrieveLevel = "FRAME"
        status = find(wrong_level)[-1][0]
        assert status.Status == 0xA900 and "FRAME" in status.ErrorComment
        patient_in_study_root = Dataset()
        patient_in_study_root.QueryRetrieveLevel = "PATIENT"
        assert find(patient_in_study_root)[-1][0].Status == 0xA900
        bad_date = Dataset()
        bad_date.QueryRetrieveLevel = "STUDY"
        bad_date.StudyDate = "2026XX01-"
        status = find(bad_date)[-1][0]
        assert status.Status == 0xA900 and "Date" in status.ErrorComment
        wildcard_uid = Dataset()
        wildcard_uid.QueryRetrieveLevel = "STUDY"
        wildcard_uid.StudyInstanceUID = "1.2.*"
        assert find(wildcard_uid)[-1][0].Status == 0xA900

    finally:
        assoc.release()

    raw = RawFinder(hub)
    try:
        # an identifier that is not a dataset at all (an element cut short)
        raw.find(b"\x08\x00\x52\x00\x06\x00\x00\x00STU")
        answers = raw.responses()
        assert [a["Status"] for a in answers] == [0xA900]
        assert "identifier cannot be read" in answers[0]["ErrorComment"]
        # C-FIND followed at once by its C-CANCEL: the hub sees the cancel before its first match
        ident = Dataset()
        ident.QueryRetrieveLevel = "IMAGE"
        ident.StudyInstanceUID = s1_uid
        ident.SOPInstanceUID = ""
        raw.find(_implicit(ident), message_id=7)
        raw.send(dict(CommandField=0x0FFF, MessageIDBeingRespondedTo=7, CommandDataSetType=0x0101))
        answers = raw.responses()
        assert [a["Status"] for a in answers] == [0xFE00]
        # the same association still serves: the query without a cancel answers its 6 images
        raw.find(_implicit(ident), message_id=8)
        answers = raw.responses()
        assert [a["Status"] for a in answers] == [0xFF00] * 6 + [0x0000]
    finally:
        raw.close()

    assoc = ae.associate("127.0.0.1", hub.listener.port, ae_title="IMEX")
    try:
        # the association still serves: a good query answers
        good = Dataset()
        good.QueryRetrieveLevel = "STUDY"
        good.StudyInstanceUID = s1_uid
        answers = find(good)
        assert answers[-1][0].Status == 0x0000 and answers[0][1].StudyInstanceUID == s1_uid
    finally:
        assoc.release()

    # a node whose institution turned C-FIND off for it is refused, not answered
    add_node(hub.db, "IMPERIAL_PACS", PACS, "127.0.0.1", pacs.port, "RYJ", update=True, allow_find=False)
    hub.nodes.invalidate()
    assoc = ae.associate("127.0.0.1", hub.listener.port, ae_title="IMEX")
    try:
        good = Dataset()
        good.QueryRetrieveLevel = "STUDY"
        good.StudyInstanceUID = ""
        status = list(assoc.send_c_find(good, StudyRootQueryRetrieveInformationModelFind))[-1][0]
        assert status.Status == 0x0124 and "may not use C-FIND" in status.ErrorComment
    finally:
        assoc.release()
    with hub.db.session() as s:
        outcomes = [e.outcome for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "dicom.find"))]
    assert outcomes.count("failure") >= 5 and outcomes[-1] == "denied"


@pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")
def test_orthanc_as_a_hospital_pacs_queries_and_retrieves_through_its_rest_api(make_config, start_hub, tmp_path):
    """Orthanc is Imperial's PACS: it receives S1 from King's, loses it, finds it on the hub with
    /modalities/{id}/query and pulls it back with C-MOVE to itself; S2 stays invisible."""
    config = make_config()
    orthanc = peers.Orthanc(
        tmp_path / "orthanc", aet="RYJORTHANC", modalities={"hub": ("IMEX", "127.0.0.1", config["dicom.port"])}
    ).start()
    try:
        hub = start_hub(config)
        register_hospitals(hub, dest_port=orthanc.dicom_port, dest_aet="RYJORTHANC")
        s1 = make_study(tmp_path / "s1", instances_per_series=4, patient_name="JONES^ALAN", patient_id="P1")
        s2 = make_study(tmp_path / "s2", instances_per_series=2, patient_name="JONES^ANN", patient_id="P2")
        assert peers.storescu(s1, hub.listener.port, "RYJ").statuses == [0] * 4
        assert peers.storescu(s2, hub.listener.port, "IMEX").statuses == [0] * 2
        wait_until(lambda: len(orthanc.instances()) == 4, message="S1 in Orthanc")
        for study in orthanc.study_ids():
            orthanc.request("DELETE", f"/studies/{study}")
        assert orthanc.instances() == []

        query = orthanc.post("/modalities/hub/query", {"Level": "Study", "Query": {"PatientName": "JONES*"}})
        answers = orthanc.get(f"/queries/{query['ID']}/answers?expand&simplify")
        s1_uid = str(dcmread(s1[0]).StudyInstanceUID)
        assert [a["StudyInstanceUID"] for a in answers] == [s1_uid]
        assert answers[0]["PatientName"] == "JONES^ALAN"

        orthanc.post(f"/queries/{query['ID']}/retrieve", {"TargetAet": "RYJORTHANC", "Synchronous": True})
        wait_until(lambda: len(orthanc.instances()) == 4, message="S1 retrieved into Orthanc")
        sent = {str(dcmread(p).SOPInstanceUID): _dataset_bytes(p) for p in s1}
        got = {}
        for instance in orthanc.instances():
            data = orthanc.get_file(instance)
            got[str(dcmread(BytesIO(data)).SOPInstanceUID)] = data[dataset_offset(data) :]
        assert got == sent

        s2_uid = str(dcmread(s2[0]).StudyInstanceUID)
        none = orthanc.post("/modalities/hub/query", {"Level": "Study", "Query": {"StudyInstanceUID": s2_uid}})
        assert orthanc.get(f"/queries/{none['ID']}/answers") == []
    finally:
        orthanc.stop()


def _move(port: int, study_uid: str, destination: str):  # type: ignore[no-untyped-def]
    ae = AE(ae_title=PACS)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="IMEX")
    assert assoc.is_established
    try:
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = study_uid
        return [
            status for status, _ in assoc.send_c_move(ident, destination, StudyRootQueryRetrieveInformationModelMove)
        ]
    finally:
        assoc.release()


def test_held_studies_folder_imports_and_a_destination_that_is_down(make_config, start_hub, storescp, tmp_path):
    pacs = storescp(aet=PACS)
    config = make_config()
    config.harmonise = [{"name": "Imperial files by NHS number", "destination": ["RYJ"], "nhs_number": "require"}]
    hub = start_hub(config)
    register_hospitals(hub, dest_port=pacs.port, dest_aet=PACS)
    add_folder(hub.db, "Emergency", "emergency", alias="EMERGENCY", institutions_ods=["RJZ", "RYJ"])
    hub.nodes.invalidate()

    # sent to Imperial under a local ID only: held for reconciliation, so not retrievable yet
    held = make_study(tmp_path / "held", instances_per_series=2, patient_id="LOCAL77")
    assert peers.storescu(held, hub.listener.port, "RYJ").statuses == [0, 0]
    wait_until(lambda: [s for s, _, _ in transfer_states(hub)] == ["held"], message="held")
    held_uid = str(dcmread(held[0]).StudyInstanceUID)
    final = _move(hub.listener.port, held_uid, PACS)[-1]
    assert final.Status == 0xC000 and "reconciliation" in final.ErrorComment

    # a study shared in the emergency folder: Imperial's PACS pulls it, which imports it (a transfer)
    shared = make_study(tmp_path / "shared", instances_per_series=3, patient_id="9434765919")
    assert peers.storescu(shared, hub.listener.port, "EMERGENCY").statuses == [0] * 3
    shared_uid = str(dcmread(shared[0]).StudyInstanceUID)
    wait_until(
        lambda: _findscu(
            hub, tmp_path / f"q{time.monotonic_ns()}", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={shared_uid}"
        ),
        message="the folder study is visible",
    )
    statuses = _move(hub.listener.port, shared_uid, PACS)
    assert statuses[-1].Status == 0x0000 and statuses[-1].NumberOfCompletedSuboperations == 3
    assert {str(dcmread(p).SOPInstanceUID) for p in pacs.wait_for(3)} == {
        str(dcmread(p).SOPInstanceUID) for p in shared
    }
    with hub.db.session() as s:
        imported = s.scalars(select(Transfer).where(Transfer.reason.like("retrieved by IMPERIAL_PACS%"))).all()
        assert [(t.state, t.instances_sent) for t in imported] == [("delivered", 3)]

    # a workstation of Imperial that is down: the move answers with what failed and why; the hub keeps
    # the transfer and retries by itself
    add_node(hub.db, "IMPERIAL_WS", "RYJWS", "127.0.0.1", peers.free_port(), "RYJ", destination=False)
    hub.nodes.invalidate()
    final = _move(hub.listener.port, shared_uid, "RYJWS")[-1]
    assert final.Status == 0xA702 and final.NumberOfFailedSuboperations == 3
    assert final.ErrorComment
    with hub.db.session() as s:
        ws = s.scalar(
            select(Transfer).join(Node, Node.id == Transfer.destination_node_id).where(Node.ae_title == "RYJWS")
        )
        assert ws.state == "pending" and ws.attempts >= 1 and ws.last_error
