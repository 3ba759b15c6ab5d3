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

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import tag_for_keyword
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

    def __init__(self, buf: bytes, implicit: bool, little: bool, wanted: frozenset[int] = frozenset()) -> None:
        self.wanted = wanted
        # top-level elements of the wanted tags: tag -> (VR, or b"" in implicit VR; value offset; length)
        self.found: dict[int, tuple[bytes, int, int]] = {}
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
                if depth == 0 and tag in self.wanted:
                    self.found[tag] = (bytes(vr), pos, length)
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


def check_structure(plain: bytes, implicit: bool, little: bool,
                    wanted: frozenset[int] = frozenset()) -> dict[int, tuple[bytes, int, int]]:
    """Raise InvalidInstance unless every element of the dataset is complete; returns where the wanted
    top-level elements are: tag -> (VR, value offset, length)."""
    if not plain:
        raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, "empty dataset")
    walker = _Walker(plain, implicit, little, wanted)
    try:
        walker.dataset(0, len(plain), implicit, 0, until_item_end=False)
    except struct.error:
        raise _truncated("element header", 8, 0) from None
    return walker.found


_UID_PART = re.compile(r"[0-9]+", re.ASCII)


def _valid_uid(value: str) -> bool:
    # ASCII digits only: str.isdigit() also accepts "²" or "٣", which a UI value decodes to from
    # bytes above 0x7F. Leading zeros are tolerated (common in the field, though not conformant).
    return 0 < len(value) <= 64 and all(_UID_PART.fullmatch(part) for part in value.split("."))


_TEXT_VRS = {b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"LT", b"PN", b"SH", b"ST", b"TM", b"UC",
             b"UI", b"UR", b"UT", b"UN", b""}
_CHARSET = 0x00080005
# the attributes the index reads: keyword -> tag
_FIELDS = {keyword: int(tag_for_keyword(keyword)) for keyword in (  # type: ignore[arg-type]
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "IssuerOfPatientID",
    "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyDate", "StudyTime",
    "StudyDescription", "ReferringPhysicianName", "Modality", "SeriesDescription", "SeriesNumber",
    "BodyPartExamined", "InstanceNumber")}
_PERSON_NAMES = {_FIELDS["PatientName"], _FIELDS["ReferringPhysicianName"]}


class _Values:
    """Decodes the collected elements' text, in the dataset's character set, without building a pydicom
    Dataset (which costs more than the rest of receiving an instance)."""

    def __init__(self, plain: bytes, found: dict[int, tuple[bytes, int, int]]) -> None:
        self.plain = plain
        self.found = found
        self.encodings = ["iso8859"]
        if _CHARSET in found:
            terms = [t.strip() for t in self.raw(_CHARSET).decode("ascii", "replace").split("\\")]
            try:
                self.encodings = convert_encodings(terms)
            except LookupError:
                pass

    def raw(self, tag: int) -> bytes:
        _vr, pos, length = self.found[tag]
        return self.plain[pos:pos + length]

    def text(self, tag: int) -> str:
        if tag not in self.found:
            return ""
        vr = self.found[tag][0]
        if vr not in _TEXT_VRS:
            raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"dataset cannot be decoded: ({tag >> 16:04X},"
                                                            f"{tag & 0xFFFF:04X}) has VR {vr.decode(errors='replace')}")
        delimiters = {0x5E, 0x3D} if tag in _PERSON_NAMES else set()
        try:
            value = decode_bytes(self.raw(tag), self.encodings, delimiters)
        except Exception:
            value = self.raw(tag).decode("latin-1")
        return value.replace("\x00", "").strip()

    def number(self, tag: int) -> int | None:
        try:
            return int(self.text(tag).split("\\")[0])
        except ValueError:  # absent (empty) or not a number
            return None

    def codes(self, tag: int) -> tuple[str, ...]:
        """Routing codes: one per value, upper case, empty ones dropped; none from a sequence."""
        if tag not in self.found or self.found[tag][0] == b"SQ":
            return ()
        text = self.raw(tag).decode("latin-1")
        return tuple(c for c in (v.replace("\x00", "").strip().upper() for v in text.split("\\")) if c)


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
    wanted = frozenset({*_FIELDS.values(), _CHARSET, *((code_tag,) if code_tag is not None else ())})
    values = _Values(plain, check_structure(plain, implicit, little, wanted))
    text = values.text
    sop_class = text(_FIELDS["SOPClassUID"])
    sop_uid = text(_FIELDS["SOPInstanceUID"])
    study_uid = text(_FIELDS["StudyInstanceUID"])
    series_uid = text(_FIELDS["SeriesInstanceUID"])
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
    return IndexFields(
        sop_class_uid=sop_class,
        sop_uid=sop_uid,
        study_uid=study_uid,
        series_uid=series_uid,
        patient_id=text(_FIELDS["PatientID"])[:64],
        issuer=text(_FIELDS["IssuerOfPatientID"])[:64],
        patient_name=text(_FIELDS["PatientName"])[:320],
        birth_date=text(_FIELDS["PatientBirthDate"])[:8],
        sex=text(_FIELDS["PatientSex"])[:16],
        accession_number=text(_FIELDS["AccessionNumber"])[:64],
        study_date=text(_FIELDS["StudyDate"])[:8],
        study_time=text(_FIELDS["StudyTime"])[:32],
        study_description=text(_FIELDS["StudyDescription"])[:128],
        referring_physician=text(_FIELDS["ReferringPhysicianName"])[:320],
        modality=text(_FIELDS["Modality"])[:16],
        series_description=text(_FIELDS["SeriesDescription"])[:128],
        series_number=values.number(_FIELDS["SeriesNumber"]),
        body_part=text(_FIELDS["BodyPartExamined"])[:64],
        instance_number=values.number(_FIELDS["InstanceNumber"]),
        routing_codes=values.codes(code_tag) if code_tag is not None else (),
    )
