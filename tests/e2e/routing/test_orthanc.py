"""Orthanc as a hospital PACS: once sending studies to the hub, once receiving them from it.

Orthanc is an independent DICOM implementation with its own negotiation habits (it proposes several
transfer syntaxes, keeps its own SCU settings), so these tests catch what a pynetdicom-only or
dcmtk-only test cannot. Orthanc listens on all interfaces; we only ever talk to it on 127.0.0.1.
"""

from __future__ import annotations

import threading
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread

import peers
from hubtools import transfer_states, wait_until
from imex.directory import add_institution, add_node
from imex.samples import make_study

pytestmark = pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc is not installed")

ORTHANC_SOURCE_AET = "KINGSORTHANC"
ORTHANC_DEST_AET = "IMPORTHANC"


def _pixels_by_uid_from_files(paths: list[Path]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for p in paths:
        ds = dcmread(p)
        out[str(ds.SOPInstanceUID)] = bytes(ds.PixelData)
    return out


def _pixels_by_uid_in_orthanc(orthanc: peers.Orthanc) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for instance_id in orthanc.instances():
        ds = dcmread(BytesIO(orthanc.get_file(instance_id)))
        out[str(ds.SOPInstanceUID)] = bytes(ds.PixelData)
    return out


def _hospitals(hub, *, source_aet: str, dest_aet: str, dest_port: int) -> None:  # type: ignore[no-untyped-def]
    """King's (RJZ) sends from source_aet at 127.0.0.1; Imperial (RYJ) receives at dest_aet."""
    add_institution(hub.db, "RJZ", "King's College Hospital", contact_email="pacs@kings.test")
    add_institution(hub.db, "RYJ", "Imperial College Healthcare", contact_email="pacs@imperial.test")
    add_node(hub.db, "KINGS_PACS", source_aet, "127.0.0.1", 11112, "RJZ", destination=False)
    add_node(hub.db, "IMPERIAL_PACS", dest_aet, "127.0.0.1", dest_port, "RYJ")
    hub.nodes.invalidate()


@pytest.fixture
def orthanc_factory(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[peers.Orthanc] = []

    def start(name: str, aet: str, **kwargs: object) -> peers.Orthanc:
        orthanc = peers.Orthanc(tmp_path / f"orthanc-{name}", aet=aet, **kwargs)  # type: ignore[arg-type]
        orthanc.start()
        started.append(orthanc)
        return orthanc

    yield start
    # Orthanc takes about 3 s to shut down: stop them side by side
    stoppers = [threading.Thread(target=o.stop) for o in started]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()


@pytest.mark.parametrize("destination", ["storescp", "orthanc"])
def test_orthanc_as_source_study_routed_by_called_alias(
    destination, make_config, start_hub, storescp, orthanc_factory, tmp_path
):
    files = make_study(tmp_path / "study", series=2, instances_per_series=4, rows=64, columns=64, accession="ORTH001")
    expected = _pixels_by_uid_from_files(files)

    if destination == "storescp":
        dest_scp = storescp("RYJPACS")
        dest_aet, dest_port, dest_orthanc = "RYJPACS", dest_scp.port, None
    else:
        dest_orthanc = orthanc_factory("dest", ORTHANC_DEST_AET)
        dest_aet, dest_port, dest_scp = ORTHANC_DEST_AET, dest_orthanc.dicom_port, None

    hub = start_hub(make_config())
    _hospitals(hub, source_aet=ORTHANC_SOURCE_AET, dest_aet=dest_aet, dest_port=dest_port)

    source = orthanc_factory("source", ORTHANC_SOURCE_AET)
    instance_ids = [source.upload(p) for p in files]
    assert len(set(instance_ids)) == len(files)
    study_ids = source.study_ids()
    assert len(study_ids) == 1
    # the hub, seen from King's Orthanc: the called AE title "RYJ" names Imperial as the destination
    source.add_modality("IMEXHUB", "RYJ", "127.0.0.1", hub.listener.port)
    assert source.echo("IMEXHUB"), source.log()[-2000:]
    source.store_to("IMEXHUB", study_ids)

    wait_until(
        lambda: transfer_states(hub) == [("delivered", len(files), len(files))],
        timeout=30,
        message="transfer delivered",
    )
    if dest_scp is not None:
        received = dest_scp.wait_for(len(files))
        assert len(received) == len(files)
        assert _pixels_by_uid_from_files(received) == expected
    else:
        assert dest_orthanc is not None
        wait_until(
            lambda: dest_orthanc.statistics()["CountInstances"] == len(files),
            message="instances in destination Orthanc",
        )
        assert sorted(dest_orthanc.instance_sop_uids()) == sorted(expected)
        assert _pixels_by_uid_in_orthanc(dest_orthanc) == expected
    # the study is attributed to King's, sent by its Orthanc node
    from sqlalchemy import select

    from imex.db.models import Instance, Institution, Study

    with hub.db.session() as s:
        study = s.scalars(select(Study)).one()
        assert s.get(Institution, study.institution_id).ods_code == "RJZ"
        calling = set(s.scalars(select(Instance.calling_aet)))
        called = set(s.scalars(select(Instance.called_aet)))
    assert calling == {ORTHANC_SOURCE_AET}
    assert called == {"RYJ"}


def test_orthanc_as_destination_receives_identical_instances(make_config, start_hub, orthanc_factory, tmp_path):
    if not peers.have_dcmtk():
        pytest.skip("dcmtk is not installed")
    dest = orthanc_factory("dest", ORTHANC_DEST_AET)
    assert dest.statistics()["CountInstances"] == 0
    hub = start_hub(make_config())
    _hospitals(hub, source_aet="STORESCU", dest_aet=ORTHANC_DEST_AET, dest_port=dest.dicom_port)
    files = make_study(tmp_path / "study", series=3, instances_per_series=3, rows=96, columns=80, accession="ORTH002")
    expected = _pixels_by_uid_from_files(files)

    result = peers.storescu(files, hub.listener.port, "RYJ", "STORESCU")
    assert result.statuses == [0] * len(files), result.output[-2000:]

    wait_until(
        lambda: transfer_states(hub) == [("delivered", len(files), len(files))],
        timeout=30,
        message="transfer delivered",
    )
    wait_until(lambda: dest.statistics()["CountInstances"] == len(files), message="instances in Orthanc")
    assert sorted(dest.instance_sop_uids()) == sorted(expected)
    assert _pixels_by_uid_in_orthanc(dest) == expected
    # the whole study arrived as one study with its series intact
    assert len(dest.study_ids()) == 1
    assert dest.statistics()["CountSeries"] == 3
