"""DICOM Part 10 files (PS3.10 7.1): the preamble, 'DICM' and the file meta group around a dataset.

The hub stores each instance as a Part 10 file whose dataset bytes are exactly those received; this
module writes the header in front of them (without pydicom's generic writer, which costs more than the
rest of the receive path together) and finds where the dataset starts when sending a file.
"""
from __future__ import annotations

import struct
import uuid

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from imex import __version__

# A UUID-derived UID (PS3.5 B.2: 2.25 and the UUID as an integer) from a name-based UUID, so it is the same
# in every process and installation: stored headers of the same instance must not differ.
IMPLEMENTATION_CLASS_UID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_OID, "imex.dicom.implementation").int)
IMPLEMENTATION_VERSION = f"IMEX_{__version__}"[:16]
_PREFIX = b"\x00" * 128 + b"DICM"


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB",):
        return struct.pack("<HH2sHL", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def _text(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_aet: str = "") -> bytes:
    """Preamble, prefix and file meta group for a dataset stored as received."""
    body = b"".join((
        _element(0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, b"UI", _text(sop_class_uid, b"\x00")),
        _element(0x0003, b"UI", _text(sop_instance_uid, b"\x00")),
        _element(0x0010, b"UI", _text(transfer_syntax_uid, b"\x00")),
        _element(0x0012, b"UI", _text(IMPLEMENTATION_CLASS_UID, b"\x00")),
        _element(0x0013, b"SH", _text(IMPLEMENTATION_VERSION, b" ")),
        *((_element(0x0016, b"AE", _text(source_aet.strip(), b" ")),) if source_aet.strip() else ()),
    ))
    return _PREFIX + _element(0x0000, b"UL", struct.pack("<L", len(body))) + body


def dataset_offset(data: bytes | memoryview) -> int:
    """Where the dataset starts in a Part 10 file: after the preamble, 'DICM' and the file meta group
    (read element by element, so files without a group length are handled too)."""
    if bytes(data[128:132]) != b"DICM":
        raise ValueError("not a DICOM Part 10 file (no DICM prefix)")
    pos = 132
    while pos + 8 <= len(data):
        group, _element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = bytes(data[pos + 4:pos + 6])
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            (length,) = struct.unpack_from("<L", data, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8 + length
    return pos




def encode_dataset(ds: Dataset, implicit: bool = False, little: bool = True) -> bytes:
    """A dataset's encoding without file meta, as it travels in a C-STORE."""
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds)
    return fp.getvalue()
