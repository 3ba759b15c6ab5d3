"""Read what the index needs from an encoded dataset, and refuse datasets that are broken.

The stored bytes are never re-encoded: this module only looks at them. pydicom reads a truncated
dataset without complaint (it returns a short value), so `check_structure` walks the element headers
first and proves every length fits, including sequences and encapsulated pixel data.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import UID

# PS3.4 C.4.2.1.4 / B.2.3: C-STORE failure statuses the hub answers with.
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_DATASET_MISMATCH = 0xA900
STATUS_OUT_OF_RESOURCES = 0xA700

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UR", b"UT", b"UN", b"SV", b"UV"}
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 64

# A deflated dataset is inflated in memory to be checked. Deflate reaches ratios above 1000:1, so
# without a bound a peer could make the hub allocate gigabytes with a few megabytes on the wire.
# Read at call time, so a deployment (or a test) can change it.
MAX_INFLATED_BYTES = 512 * 1024 * 1024


class InvalidInstance(ValueError):
    """A dataset the hub refuses; `status` is the DICOM status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class IndexFields:
    """The attributes the index, the router and the search need."""

    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    accession_number: str
    study_date: str
    study_time: str
    study_description: str
    referring_physician: str
    modality: str
    series_description: str
    series_number: int | None
    body_part: str
    instance_number: int | None
    routing_codes: tuple[str, ...]


def attribute_tag(spec: str) -> int | None:
    """A tag from a keyword (`RequestingService`) or `gggg,eeee`; None for an empty spec."""
    spec = spec.strip().strip("()")
    if not spec:
        return None
    if "," in spec:
        group, element = spec.split(",", 1)
        return int(Tag(int(group, 16), int(element, 16)))
    tag = tag_for_keyword(spec)
    if tag is None:
        raise ValueError(f"{spec!r} is neither a DICOM keyword nor a gggg,eeee tag")
    return int(tag)


def _truncated(what: str, need: int, have: int) -> InvalidInstance:
    return InvalidInstance(
        STATUS_CANNOT_UNDERSTAND, f"dataset truncated: {what} needs {need} bytes, only {have} remain"
    )


class _Walker:
    """Walks element headers of a little/big endian dataset, checking that every length fits."""

    def __init__(self, buf: bytes, implicit: bool, little: bool) -> None:
        self.buf = buf
        self.implicit = implicit
        self.e = "<" if little else ">"

    def _tag(self, pos: int) -> int:
        group, element = struct.unpack_from(self.e + "HH", self.buf, pos)
        return (group << 16) | element

    def dataset(self, pos: int, end: int, implicit: bool, depth: int, until_item_end: bool) -> int:
        if depth > _MAX_DEPTH:
            raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, "sequences nested too deeply")
        buf = self.buf
        while pos < end:
            if end - pos < 8:
                raise _truncated(f"element header at offset {pos}", 8, end - pos)
            tag = self._tag(pos)
            if tag == _ITEM_END:
                if not until_item_end:
                    raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"unexpected item delimiter at {pos}")
                return pos + 8
            if implicit:
                vr = b""
                (length,) = struct.unpack_from(self.e + "L", buf, pos + 4)
                pos += 8
            else:
                vr = buf[pos + 4 : pos + 6]
                if vr in _LONG_VRS:
                    if end - pos < 12:
                        raise _truncated(f"element header at offset {pos}", 12, end - pos)
                    (length,) = struct.unpack_from(self.e + "L", buf, pos + 8)
                    pos += 12
                else:
                    (length,) = struct.unpack_from(self.e + "H", buf, pos + 6)
                    pos += 8
            if length == _UNDEFINED:
                if tag == 0x7FE00010 and not implicit:
                    pos = self.fragments(pos, end)
                else:
                    inner_implicit = implicit or vr == b"UN"
                    pos = self.sequence(pos, end, inner_implicit, depth + 1)
            else:
                if length > end - pos:
                    raise _truncated(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X})", length, end - pos)
                if vr == b"SQ":
                    self.sequence(pos, pos + length, implicit, depth + 1, defined=True)
                pos += length
        if until_item_end:
            raise _truncated("item without its delimiter", 8, 0)
        return pos

    def _item_header(self, pos: int, end: int) -> tuple[int, int]:
        if end - pos < 8:
            raise _truncated(f"item header at offset {pos}", 8, end - pos)
        tag = self._tag(pos)
        (length,) = struct.unpack_from(self.e + "L", self.buf, pos + 4)
        return tag, length

    def sequence(self, pos: int, end: int, implicit: bool, depth: int, defined: bool = False) -> int:
        """Walk the items of a sequence: up to its delimiter, or (defined=True) exactly to `end`."""
        while not defined or pos < end:
            tag, length = self._item_header(pos, end)
            pos += 8
            if tag == _SEQ_END and not defined:
                return pos
            if tag != _ITEM:
                raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"expected a sequence item at offset {pos - 8}")
            if length == _UNDEFINED:
                pos = self.dataset(pos, end, implicit, depth, until_item_end=True)
            else:
                if length > end - pos:
                    raise _truncated("sequence item", length, end - pos)
                self.dataset(pos, pos + length, implicit, depth, until_item_end=False)
                pos += length
        return pos

    def fragments(self, pos: int, end: int) -> int:
        while True:
            tag, length = self._item_header(pos, end)
            pos += 8
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM or length == _UNDEFINED:
                raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"bad pixel data fragment at offset {pos - 8}")
            if length > end - pos:
                raise _truncated("pixel data fragment", length, end - pos)
            pos += length


def _inflate(dataset: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        # Never produce more than limit + 1 bytes: enough to tell that the limit is exceeded.
        plain = inflater.decompress(dataset, limit + 1)
        if len(plain) <= limit and not inflater.unconsumed_tail:
            plain += inflater.flush()  # all input consumed: nothing more than buffered output
    except zlib.error as exc:
        raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"deflated dataset is corrupt: {exc}") from None
    if len(plain) > limit or inflater.unconsumed_tail:
        raise InvalidInstance(STATUS_OUT_OF_RESOURCES, f"deflated dataset inflates to more than {limit} bytes")
    if not inflater.eof:
        raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, "deflated dataset is truncated")
    return plain


def decode_layout(
    dataset: bytes, transfer_syntax: str, max_inflated: int | None = None
) -> tuple[bytes, bool, bool]:
    """The dataset as plain bytes (inflated if deflated) and whether it is implicit VR / little endian.

    A deflated dataset inflating to more than `max_inflated` bytes (default MAX_INFLATED_BYTES) is
    refused with Out of Resources before the whole of it is inflated."""
    ts = UID(transfer_syntax)
    try:
        known = ts.is_transfer_syntax
        deflated = known and ts.is_deflated
    except ValueError:  # pydicom raises for UIDs that are not transfer syntaxes at all
        known = deflated = False
    if not known:
        raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"unknown transfer syntax {transfer_syntax}")
    if deflated:
        limit = MAX_INFLATED_BYTES if max_inflated is None else max_inflated
        return _inflate(dataset, limit), False, True
    return dataset, ts.is_implicit_VR, ts.is_little_endian


def check_structure(plain: bytes, implicit: bool, little: bool) -> None:
    """Raise InvalidInstance unless every element of the dataset is complete."""
    if not plain:
        raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, "empty dataset")
    try:
        _Walker(plain, implicit, little).dataset(0, len(plain), implicit, 0, until_item_end=False)
    except struct.error:
        raise _truncated("element header", 8, 0) from None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip().replace("\x00", "")


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


_UID_PART = re.compile(r"[0-9]+", re.ASCII)


def _valid_uid(value: str) -> bool:
    # ASCII digits only: str.isdigit() also accepts "²" or "٣", which a UI value decodes to from
    # bytes above 0x7F. Leading zeros are tolerated (common in the field, though not conformant).
    return 0 < len(value) <= 64 and all(_UID_PART.fullmatch(part) for part in value.split("."))


def _codes(value: object) -> tuple[str, ...]:
    """Routing codes from an attribute value: one per value, upper case, empty ones dropped."""
    if value is None or isinstance(value, Sequence):
        return ()
    if isinstance(value, (bytes, bytearray)):
        # A private or unknown attribute read as UN (always so in implicit VR): the raw text.
        items: list[object] = list(bytes(value).decode("latin-1").split("\\"))
    elif isinstance(value, (MultiValue, list, tuple)):
        items = list(value)
    else:
        items = [value]
    codes = (str(v).replace("\x00", "").strip().upper() for v in items)
    return tuple(c for c in codes if c)


def read_instance(
    dataset: bytes,
    transfer_syntax: str,
    *,
    expected_sop_class: str | None = None,
    expected_sop_uid: str | None = None,
    code_tag: int | None = None,
) -> IndexFields:
    """Validate an encoded dataset and extract its index fields; raises InvalidInstance with the status."""
    plain, implicit, little = decode_layout(dataset, transfer_syntax)
    check_structure(plain, implicit, little)
    try:
        ds = read_dataset(BytesIO(plain), implicit, little)
        sop_class = _text(ds, "SOPClassUID")
        sop_uid = _text(ds, "SOPInstanceUID")
        study_uid = _text(ds, "StudyInstanceUID")
        series_uid = _text(ds, "SeriesInstanceUID")
    except InvalidInstance:
        raise
    except Exception as exc:  # pydicom raises many types for bad values
        raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"dataset cannot be decoded: {exc}") from None
    for label, value in (("SOP Instance UID (0008,0018)", sop_uid), ("Study Instance UID (0020,000D)", study_uid),
                         ("Series Instance UID (0020,000E)", series_uid), ("SOP Class UID (0008,0016)", sop_class)):
        if not value:
            raise InvalidInstance(STATUS_DATASET_MISMATCH, f"no {label}: the hub cannot index or route it")
        if not _valid_uid(value):
            raise InvalidInstance(STATUS_DATASET_MISMATCH, f"{label} {value[:80]!r} is not a valid UID")
    if expected_sop_class and sop_class != expected_sop_class:
        raise InvalidInstance(
            STATUS_DATASET_MISMATCH,
            f"dataset SOP Class UID {sop_class} does not match the request's {expected_sop_class}",
        )
    if expected_sop_uid and sop_uid != expected_sop_uid:
        raise InvalidInstance(
            STATUS_DATASET_MISMATCH,
            f"dataset SOP Instance UID {sop_uid} does not match the request's {expected_sop_uid}",
        )
    # pydicom converts values lazily: a malformed value (e.g. a VR whose length is no multiple of its
    # size) raises only here, and must be answered like any other undecodable dataset.
    try:
        return IndexFields(
            sop_class_uid=sop_class,
            sop_uid=sop_uid,
            study_uid=study_uid,
            series_uid=series_uid,
            patient_id=_text(ds, "PatientID")[:64],
            issuer=_text(ds, "IssuerOfPatientID")[:64],
            patient_name=_text(ds, "PatientName")[:320],
            birth_date=_text(ds, "PatientBirthDate")[:8],
            sex=_text(ds, "PatientSex")[:16],
            accession_number=_text(ds, "AccessionNumber")[:64],
            study_date=_text(ds, "StudyDate")[:8],
            study_time=_text(ds, "StudyTime")[:32],
            study_description=_text(ds, "StudyDescription")[:128],
            referring_physician=_text(ds, "ReferringPhysicianName")[:320],
            modality=_text(ds, "Modality")[:16],
            series_description=_text(ds, "SeriesDescription")[:128],
            series_number=_int(ds, "SeriesNumber"),
            body_part=_text(ds, "BodyPartExamined")[:64],
            instance_number=_int(ds, "InstanceNumber"),
            routing_codes=_codes(ds[code_tag].value) if code_tag is not None and code_tag in ds else (),
        )
    except Exception as exc:
        raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"dataset cannot be decoded: {exc}") from None
