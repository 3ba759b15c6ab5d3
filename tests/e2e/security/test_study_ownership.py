"""No institution's node changes another institution's study through C-STORE, while studies still travel
A -> B -> C: King's (RJZ) sends a study to Imperial (RYJ); Imperial may send it on to Royal Brompton (RRV),
but Brompton's node cannot add to it, replace its instances or take over its UIDs. Real storescu and
storescp on both sides; the refusals are DICOM 0x0124 (Not Authorized)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import func, select

import peers
from hubtools import sop_uids, wait_until
from imex.db.models import Instance, Series, Study, Transfer
from imex.directory import add_institution, add_node
from imex.samples import make_study

NOT_AUTHORIZED = 0x0124


def _hospitals(hub, b_port: int, c_port: int) -> None:  # type: ignore[no-untyped-def]
    add_institution(hub.db, "RJZ", "King's College Hospital")
    add_institution(hub.db, "RYJ", "Imperial College Healthcare")
    add_institution(hub.db, "RRV", "Royal Brompton")
    add_node(hub.db, "KINGS_PACS", "KINGSPACS", "127.0.0.1", 11112, "RJZ", destination=False)
    add_node(hub.db, "IMPERIAL_PACS", "RYJPACS", "127.0.0.1", b_port, "RYJ")
    add_node(hub.db, "BROMPTON_PACS", "RRVPACS", "127.0.0.1", c_port, "RRV")
    hub.nodes.invalidate()


def _transfers(hub) -> dict[str, tuple[str, int, int]]:  # type: ignore[no-untyped-def]
    """Destination node name -> (state, sent, total)."""
    from imex.db.models import Node

    with hub.db.session() as s:
        rows = s.execute(
            select(Node.name, Transfer.state, Transfer.instances_sent, Transfer.instances_total).join(
                Node, Node.id == Transfer.destination_node_id
            )
        ).all()
    return {r.name: (r.state, r.instances_sent, r.instances_total) for r in rows}


def _index(hub) -> list[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    """(study UID, owning institution's id as text, instances) of every study."""
    with hub.db.session() as s:
        return [
            (r.study_uid, str(r.institution_id), r.num_instances)
            for r in s.execute(select(Study.study_uid, Study.institution_id, Study.num_instances))
        ]


def _blobs(hub) -> dict[str, str]:  # type: ignore[no-untyped-def]
    with hub.db.session() as s:
        return dict(s.execute(select(Instance.sop_uid, Instance.blob_key)).all())


def _copy(src: Path, dst: Path, **changes: str) -> Path:
    ds = dcmread(src)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    if "SOPInstanceUID" in changes:
        ds.file_meta.MediaStorageSOPInstanceUID = changes["SOPInstanceUID"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst)
    return dst


@pytest.fixture(params=["sqlite", "postgresql"])
def kings_to_imperial(request, make_config, storescp, tmp_path):  # type: ignore[no-untyped-def]
    """A hub (on SQLite, and on PostgreSQL) where King's study (3 instances) was delivered to Imperial."""
    imperial, brompton = storescp("RYJPACS"), storescp("RRVPACS")
    database = {} if request.param == "sqlite" else {"database__url": request.getfixturevalue("postgres_url")}
    start_hub = request.getfixturevalue("start_hub")  # after the database: stopped before it is dropped
    hub = start_hub(make_config(**database))
    _hospitals(hub, imperial.port, brompton.port)
    files = make_study(tmp_path / "kings", instances_per_series=3, patient_id="K123")
    assert peers.storescu(files, hub.listener.port, "RYJ", "KINGSPACS").statuses == [0, 0, 0]
    wait_until(lambda: _transfers(hub) == {"IMPERIAL_PACS": ("delivered", 3, 3)}, message="King's -> Imperial")
    imperial.wait_for(3)
    return hub, files, imperial, brompton


def test_another_institution_cannot_add_replace_or_move(kings_to_imperial, tmp_path):  # type: ignore[no-untyped-def]
    hub, files, imperial, brompton = kings_to_imperial
    before_index, before_blobs = _index(hub), _blobs(hub)
    study_uid = str(dcmread(files[0]).StudyInstanceUID)
    hostile = [
        # an instance of its own, inside King's study
        _copy(
            files[0],
            tmp_path / "h" / "add.dcm",
            SOPInstanceUID=generate_uid(),
            SeriesInstanceUID=generate_uid(),
            PatientID="BROMPTON1",
        ),
        # King's instance, other bytes, in a study of its own
        _copy(
            files[1],
            tmp_path / "h" / "move.dcm",
            StudyInstanceUID=generate_uid(),
            SeriesInstanceUID=generate_uid(),
            PatientID="BROMPTON1",
        ),
        # King's instance, other bytes, same study: a replacement
        _copy(files[2], tmp_path / "h" / "replace.dcm", PatientName="HOSTILE^REPLACEMENT"),
        # King's exact bytes: Brompton never received the study, so it cannot send it on either
        files[0],
        # a new study whose series UID is King's
        _copy(files[0], tmp_path / "h" / "series.dcm", StudyInstanceUID=generate_uid(), SOPInstanceUID=generate_uid()),
    ]
    result = peers.storescu(hostile, hub.listener.port, "RYJ", "RRVPACS")
    assert result.statuses == [NOT_AUTHORIZED] * len(hostile), result.output[-3000:]
    assert "another" in result.output  # the ErrorComment says why
    assert _index(hub) == before_index and _blobs(hub) == before_blobs
    assert _transfers(hub) == {"IMPERIAL_PACS": ("delivered", 3, 3)}  # nothing re-sent
    assert len(imperial.files()) == 3 and brompton.files() == []
    with hub.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Series)) == 1
    # the hub still takes King's own follow-up, and Brompton's own study
    late = _copy(files[0], tmp_path / "late.dcm", SOPInstanceUID=generate_uid())
    assert peers.storescu([late], hub.listener.port, "RYJ", "KINGSPACS").statuses == [0]
    own = make_study(tmp_path / "brompton", instances_per_series=1, patient_id="B1")
    assert peers.storescu(own, hub.listener.port, "RYJ", "RRVPACS").statuses == [0]
    index = {uid: n for uid, _, n in _index(hub)}
    assert index[study_uid] == 4 and len(index) == 2


def test_a_study_travels_on_from_its_recipient(kings_to_imperial, tmp_path):  # type: ignore[no-untyped-def]
    hub, files, imperial, brompton = kings_to_imperial
    received = sorted(imperial.files())
    # Imperial's PACS changed its copy (its own patient ID) before sending it on to Brompton
    local = [_copy(p, tmp_path / "imperial" / p.name, PatientID="IMP999") for p in received]
    result = peers.storescu(local, hub.listener.port, "RRV", "RYJPACS")
    assert result.statuses == [0, 0, 0], result.output[-3000:]
    wait_until(lambda: _transfers(hub).get("BROMPTON_PACS") == ("delivered", 3, 3), message="Imperial -> Brompton")
    # Brompton got the hub's copy of King's study, byte for byte what Imperial got (not Imperial's changed
    # copy); Imperial's transfer was not re-opened
    assert sorted(brompton.sop_uids()) == sop_uids(files)
    as_delivered = {str(dcmread(p).SOPInstanceUID): p.read_bytes() for p in received}
    for p in brompton.files():
        assert p.read_bytes() == as_delivered[str(dcmread(p).SOPInstanceUID)]
        assert dcmread(p).PatientID == "K123"
    assert _transfers(hub)["IMPERIAL_PACS"] == ("delivered", 3, 3)
    assert [n for _, _, n in _index(hub)] == [3]
    # a recipient sends the study on as received, but cannot add to it
    extra = _copy(received[0], tmp_path / "extra.dcm", SOPInstanceUID=generate_uid())
    assert peers.storescu([extra], hub.listener.port, "RRV", "RYJPACS").statuses == [NOT_AUTHORIZED]
    assert [n for _, _, n in _index(hub)] == [3]


def test_first_sender_keeps_a_uid_and_the_other_is_told(make_config, start_hub, storescp, tmp_path):  # type: ignore[no-untyped-def]
    imperial, brompton = storescp("RYJPACS"), storescp("RRVPACS")
    hub = start_hub(make_config())
    _hospitals(hub, imperial.port, brompton.port)
    files = make_study(tmp_path / "kings", instances_per_series=2, patient_id="K123")
    # Brompton's node sends one instance carrying King's study UID before King's does
    squatter = _copy(
        files[0],
        tmp_path / "sq.dcm",
        SOPInstanceUID=generate_uid(),
        SeriesInstanceUID=generate_uid(),
        PatientID="BROMPTON1",
        PatientName="OTHER^PATIENT",
    )
    assert peers.storescu([squatter], hub.listener.port, "RYJ", "RRVPACS").statuses == [0]
    result = peers.storescu(files, hub.listener.port, "RYJ", "KINGSPACS")
    assert result.statuses == [NOT_AUTHORIZED, NOT_AUTHORIZED]
    with hub.db.session() as s:
        stored = s.execute(select(Instance.sop_uid)).scalars().all()
        names = s.execute(select(Study.num_instances)).scalars().all()
    assert stored == [str(dcmread(squatter).SOPInstanceUID)] and names == [1]  # none of King's data is held
