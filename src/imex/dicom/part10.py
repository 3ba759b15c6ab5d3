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
    body = b"".join(
        (
            _element(0x0001, b"OB", b"\x00\x01"),
            _element(0x0002, b"UI", _text(sop_class_uid, b"\x00")),
            _element(0x0003, b"UI", _text(sop_instance_uid, b"\x00")),
            _element(0x0010, b"UI", _text(transfer_syntax_uid, b"\x00")),
            _element(0x0012, b"UI", _text(IMPLEMENTATION_CLASS_UID, b"\x00")),
            _element(0x0013, b"SH", _text(IMPLEMENTATION_VERSION, b" ")),
            *((_element(0x0016, b"AE", _text(source_aet.strip(), b" ")),) if source_aet.strip() else ()),
        )
    )
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
        vr = bytes(data[pos + 4 : pos + 6])
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


def read_meta(data: bytes) -> dict[int, str]:
    """The text elements of a Part 10 file's meta group by element number (0x0002 SOP class, 0x0003 SOP
    instance, 0x0010 transfer syntax); ValueError when there is no meta group."""
    if data[128:132] != b"DICM":
        raise ValueError("not a DICOM file (no DICM prefix at byte 128)")
    found, pos = {}, 132
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            (length,) = struct.unpack_from("<L", data, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            start = pos + 8
        if start + length > len(data):
            raise ValueError("the DICOM file meta group is truncated")
        if vr in (b"UI", b"AE", b"SH"):
            found[element] = data[start : start + length].decode("ascii", "replace").strip("\x00 ")
        pos = start + length
    if not found.get(0x0010):
        raise ValueError("the DICOM file meta group has no Transfer Syntax UID")
    return found


def chunks_to_store(
    data: bytes, meta: dict[int, str], sop_class_uid: str, sop_uid: str, syntax: str, calling_aet: str
) -> tuple[bytes, ...]:
    """What the blob store keeps for a posted Part 10 file: the file as it came when its meta group names
    this instance (so it is retrieved byte for byte), else its dataset behind a meta group of the hub's,
    as for DICOM arrivals."""
    if meta.get(0x0003) == sop_uid and meta.get(0x0002) == sop_class_uid:
        return (data,)
    return (file_meta(sop_class_uid, sop_uid, syntax, calling_aet), data[dataset_offset(data) :])
