"""Part 10 headers the hub writes: readable by pydicom, and identical in every process (a re-sent
instance must hash to the same blob)."""

from __future__ import annotations

import subprocess
import sys
from io import BytesIO

from pydicom import dcmread

from imex.dicom.part10 import IMPLEMENTATION_CLASS_UID, dataset_offset, file_meta


def test_header_is_valid_and_dataset_found():
    meta = file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1", "KINGSPACS")
    dataset = b"\x08\x00\x18\x00UI\x08\x001.2.3.4\x00"
    ds = dcmread(BytesIO(meta + dataset))
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.file_meta.SourceApplicationEntityTitle == "KINGSPACS"
    assert ds.SOPInstanceUID == "1.2.3.4"
    assert dataset_offset(meta + dataset) == len(meta)


def test_header_is_the_same_in_another_process():
    code = "from imex.dicom.part10 import IMPLEMENTATION_CLASS_UID as u; print(u)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == IMPLEMENTATION_CLASS_UID and len(other) <= 64
