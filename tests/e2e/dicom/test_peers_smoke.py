"""The peer helpers work on their own (no imex), so a failing hub test is the hub's fault."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

import peers
from imex.samples import compress_jpeg_lossless, compress_rle, make_study

needs_dcmtk = pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk not installed")
needs_orthanc = pytest.mark.skipif(not peers.have_orthanc(), reason="Orthanc not installed")


@pytest.fixture
def study(tmp_path: Path) -> list[Path]:
    return make_study(tmp_path / "study", series=2, instances_per_series=3)


def pixels_by_uid(paths: list[Path]) -> dict[str, bytes]:
    result = {}
    for path in paths:
        ds = dcmread(path)
        result[str(ds.SOPInstanceUID)] = bytes(ds.PixelData)
    return result


def test_make_study_instances_are_distinct(study: list[Path]) -> None:
    datasets = [dcmread(p) for p in study]
    assert [p.relative_to(study[0].parent.parent).as_posix() for p in study[:2]] == [
        "001/00001.dcm",
        "001/00002.dcm",
    ]
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 2
    assert len({ds.SOPInstanceUID for ds in datasets}) == 6
    assert len({bytes(ds.PixelData) for ds in datasets}) == 6
    assert datasets[0].file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert datasets[0].pixel_array.shape == (64, 64)


@needs_dcmtk
def test_storescu_to_storescp(tmp_path: Path, study: list[Path]) -> None:
    with peers.StoreSCP(tmp_path / "dest", aet="DEST") as scp:
        result = peers.storescu(study, scp.port, "DEST")
        assert result.ok, result.output[-3000:]
        assert result.statuses == [0] * 6
        received = scp.wait_for(6, timeout=10)
    assert pixels_by_uid(received) == pixels_by_uid(study)
    assert sorted(scp.sop_uids()) == sorted(pixels_by_uid(study))


@needs_dcmtk
def test_storescp_restart_and_compressed(tmp_path: Path, study: list[Path]) -> None:
    """A destination can go down and come back on its port; compressed copies go through."""
    rle = compress_rle(study[:2], tmp_path / "rle")
    jpeg = compress_jpeg_lossless(study[2:4], tmp_path / "jpeg")
    scp = peers.StoreSCP(tmp_path / "dest", aet="DEST", unique_filenames=True)
    with scp:
        scp.stop()
        down = peers.storescu(study[:1], scp.port, "DEST")
        assert down.returncode != 0 and down.statuses == []
        scp.start()
        assert peers.echoscu(scp.port, "DEST").returncode == 0
        assert peers.storescu(rle, scp.port, "DEST", extra_args=["-xr"]).ok
        assert peers.storescu(jpeg, scp.port, "DEST", extra_args=["-xs"]).ok
        assert peers.storescu(jpeg[:1], scp.port, "DEST", extra_args=["-xs"]).ok  # again
        received = scp.wait_for(5, timeout=10)
    syntaxes = sorted(str(dcmread(p).file_meta.TransferSyntaxUID) for p in received)
    assert syntaxes == ["1.2.840.10008.1.2.4.70"] * 3 + ["1.2.840.10008.1.2.5"] * 2
    assert len(set(scp.sop_uids())) == 4  # +uf kept the duplicate as a separate file


@pytest.fixture
def failing_scp() -> Iterator[int]:
    """A pynetdicom SCP answering Success, Out of Resources, Success, ... (per instance)."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    answers = iter([0x0000, 0xA700, 0x0000, 0xB000, 0xC001, 0x0000] * 10)
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        with lock:
            return next(answers)

    ae = AE(ae_title="FAILING")
    ae.supported_contexts = AllStoragePresentationContexts
    port = peers.free_port()
    handlers = [(evt.EVT_C_STORE, on_store)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        yield port
    finally:
        server.shutdown()


@needs_dcmtk
def test_storescu_reports_failure_statuses(study: list[Path], failing_scp: int) -> None:
    result = peers.storescu(study, failing_scp, "FAILING")
    assert result.returncode == 0  # storescu's exit code does not show failures
    assert result.statuses == [0x0000, 0xA700, 0x0000, 0xB000, 0xC001, 0x0000]
    assert [uid for uid, _ in result.responses] == [str(dcmread(p).SOPInstanceUID) for p in study]
    assert not result.ok


@needs_dcmtk
@needs_orthanc
def test_orthanc_receives_and_forwards(tmp_path: Path, study: list[Path]) -> None:
    with (
        peers.StoreSCP(tmp_path / "dest", aet="DEST") as scp,
        peers.Orthanc(
            tmp_path / "orthanc", aet="PACS", modalities={"DEST": ("DEST", "127.0.0.1", scp.port)}
        ) as orthanc,
    ):
        instance_id = orthanc.upload(study[0])
        assert orthanc.instances() == [instance_id]
        assert orthanc.get_file(instance_id) == study[0].read_bytes()

        result = peers.storescu(study, orthanc.dicom_port, "PACS")  # first one is a duplicate
        assert result.ok, result.output[-3000:]
        assert orthanc.statistics()["CountInstances"] == 6
        assert sorted(orthanc.instance_sop_uids()) == sorted(pixels_by_uid(study))

        assert orthanc.echo("DEST")
        orthanc.store_to("DEST", orthanc.study_ids())
        received = scp.wait_for(6, timeout=20)
    assert pixels_by_uid(received) == pixels_by_uid(study)
