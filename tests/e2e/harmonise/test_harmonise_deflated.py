"""A study stored in Deflated Explicit VR Little Endian and harmonised for its destination goes out
deflated again, padded to an even length as PS3.5 A.5 requires, and dcmtk's storescp takes every
instance (it refuses an odd-length deflated dataset and aborts the association)."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian
from sqlalchemy import select

import peers
from hubtools import register_hospitals, transfer_states, wait_until
from imex.db.models import Instance
from imex.samples import make_study

pytestmark = pytest.mark.skipif(not peers.have_dcmtk(), reason="dcmtk is not installed")
RULE = {
    "name": "NHS number and prefix",
    "destination": ["RYJ"],
    "nhs_number": "use",
    "accession_prefix": "{source_ods}-",
}
COUNT = 8  # deflated lengths vary with the UIDs: with eight, some are odd before padding


def test_harmonised_deflated_study_reaches_storescp(make_config, start_hub, storescp, tmp_path: Path) -> None:
    dest = storescp("RYJPACS")  # +xa: accepts the deflated syntax, so the hub sends it deflated
    config = make_config()
    config.harmonise = [RULE]
    hub = start_hub(config)
    register_hospitals(hub, dest_port=dest.port)
    files = make_study(
        tmp_path / "plain",
        instances_per_series=COUNT,
        patient_id="9434765919",
        accession="A9",
        extra={"IssuerOfPatientID": "NHS"},
    )
    sent = {str(d.SOPInstanceUID): d for d in map(dcmread, files)}
    result = peers.storescu(files, hub.listener.port, "RYJ", "STORESCU", extra_args=["-xd"])
    assert result.statuses == [0] * COUNT, result.output[-2000:]
    with hub.db.sessions() as s:
        assert set(s.scalars(select(Instance.transfer_syntax_uid))) == {DeflatedExplicitVRLittleEndian}

    wait_until(
        lambda: transfer_states(hub) == [("delivered", COUNT, COUNT)],
        timeout=60,
        message=f"delivery of {COUNT} harmonised deflated instances",
    )
    received = [dcmread(p) for p in dest.wait_for(COUNT)]
    assert "Odd Fragment Length" not in dest.log()
    assert len(received) == COUNT
    for ds in received:
        assert ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
        assert ds.AccessionNumber == "RJZ-A9" and ds.PatientID == "9434765919"
        assert ds.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].AccessionNumber == "A9"
        assert ds.PixelData == sent[str(ds.SOPInstanceUID)].PixelData
    # storescp +B wrote the bytes received: every deflated dataset is of even length and inflates whole
    for path in dest.files():
        data = path.read_bytes()
        offset = 132 + 12 + int.from_bytes(data[140:144], "little")  # preamble, DICM, group length element
        body = data[offset:]
        assert len(body) % 2 == 0, path.name
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        inflater.decompress(body)
        assert inflater.eof and inflater.unused_data in (b"", b"\x00")
