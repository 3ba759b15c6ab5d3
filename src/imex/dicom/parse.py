"""Read what the index needs from an encoded dataset, and refuse datasets that are broken.

The stored bytes are never re-encoded: this module only looks at them. pydicom reads a truncated
dataset without complaint (it returns a short value), so the walker follows the element headers and
proves every length fits, including sequences and encapsulated pixel data. It works on the bytes as they
arrive (`InstanceReader`), so the listener streams a dataset to disk while it is checked, and native
Pixel Data must be as long as the image it describes.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import tag_for_keyword
from pydicom.tag import Tag
from pydicom.uid import UID

# PS3.4 C.4.2.1.4 / B.2.3: C-STORE failure statuses the hub answers with.
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_DATASET_MISMATCH = 0xA900
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_NOT_AUTHORIZED = 0x0124  # Refused: Not Authorized (PS3.7 C.5)

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


# what a walker frame reads: elements (a dataset or an item), items of a sequence, pixel data fragments
_DATASET, _SEQUENCE, _FRAGMENTS = 0, 1, 2
_PIXEL_DATA = 0x7FE00010
# a wanted element's value is kept up to this many bytes (a UID is 64, a name 320): a peer cannot make
# the hub hold a value of gigabytes however long the element it declares
CAPTURE_LIMIT = 64 * 1024


class _Frame:
    """One open container. `end` is where it must stop (its own defined length, or the nearest enclosing
    one; None: the end of the stream). `what`, `start` and `length` name a container with a defined
    length, for the message when the stream ends inside it."""

    __slots__ = ("depth", "end", "flag", "implicit", "kind", "length", "start", "what")

    def __init__(
        self,
        kind: int,
        end: int | None,
        implicit: bool,
        depth: int,
        flag: bool,
        what: str = "",
        start: int = 0,
        length: int = 0,
    ) -> None:
        self.kind, self.end, self.implicit, self.depth, self.flag = kind, end, implicit, depth, flag
        self.what, self.start, self.length = what, start, length


class _Walker:
    """Walks the element headers of a little or big endian dataset as its bytes arrive, chunk by chunk,
    checking that every length fits (sequences, items, encapsulated fragments included) and keeping the
    values of the wanted top-level elements. Values are skipped, never buffered, so memory stays small
    whatever the size of the dataset; `feed` raises InvalidInstance as soon as the bytes cannot be a
    dataset, `finish` when the stream ended inside something."""

    def __init__(self, implicit: bool, little: bool, wanted: frozenset[int] = frozenset()) -> None:
        self.wanted = wanted
        self.found: dict[int, tuple[bytes, bytes]] = {}  # tag -> (VR, or b"" in implicit VR; value)
        self.pixel: tuple[bytes, int] | None = None  # top-level Pixel Data: (VR, length)
        self.e = "<" if little else ">"
        self.stack = [_Frame(_DATASET, None, implicit, 0, False)]
        self.pos = 0  # offset of the next byte not yet consumed
        self.pending = b""  # the start of a header still incomplete
        self.skip = 0  # bytes of the current value still to come
        self.skip_tag, self.skip_length = 0, 0  # its tag (0: a pixel data fragment) and length
        self.capture: bytearray | None = None  # the wanted value being kept
        self.capture_tag, self.capture_vr, self.capture_left = 0, b"", 0

    def feed(self, chunk: bytes | memoryview) -> None:
        n = len(chunk)
        if not n:
            return
        i = 0
        if self.pending:  # complete the pending header with the first bytes of the chunk (12 at most)
            old = len(self.pending)
            buf = self.pending + bytes(chunk[: 12 - old])
            used = self._run(buf, 0, len(buf), False)
            if used < old:  # still short of a whole header: the chunk was smaller than what is missing
                self.pending = buf
                return
            self.pending = b""
            i = used - old
        end = self._run(chunk, i, n, False)
        if end < n:
            self.pending = bytes(chunk[end:])

    def finish(self) -> dict[int, tuple[bytes, bytes]]:
        total = self.pos + len(self.pending)
        if total == 0:
            raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, "empty dataset")
        for frame in self.stack:  # the outermost container the stream ended inside
            if frame.what and frame.end is not None and frame.end > total:
                raise _truncated(frame.what, frame.length, total - frame.start)
        if self.skip:
            tag = self.skip_tag
            what = f"element ({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag else "pixel data fragment"
            raise _truncated(what, self.skip_length, self.skip_length - self.skip)
        self._run(self.pending, 0, len(self.pending), True)
        self.pending = b""
        return self.found

    def _value(self, buf: bytes | memoryview, i: int, n: int, tag: int, vr: bytes, length: int) -> int:
        """Skip (and keep, when wanted) a value of defined length that is not a sequence; returns where
        it ends in buf, or n when the rest of it is still to come."""
        wanted = len(self.stack) == 1 and tag in self.wanted
        if i + length <= n:  # the common case: the whole value is here
            if wanted:
                self.found[tag] = (vr, bytes(buf[i : i + min(length, CAPTURE_LIMIT)]))
            self.pos += length
            return i + length
        self.skip, self.skip_tag, self.skip_length = length, tag, length
        if wanted:
            self.capture, self.capture_tag, self.capture_vr = bytearray(), tag, vr
            self.capture_left = min(length, CAPTURE_LIMIT)
        return self._skip(buf, i, n)

    def _skip(self, buf: bytes | memoryview, i: int, n: int) -> int:
        """Go on skipping the current value through buf[i:n]."""
        k = min(self.skip, n - i)
        if self.capture is not None and self.capture_left:
            c = min(k, self.capture_left)
            self.capture += buf[i : i + c]
            self.capture_left -= c
        self.pos += k
        self.skip -= k
        if not self.skip and self.capture is not None:
            self.found[self.capture_tag] = (self.capture_vr, bytes(self.capture))
            self.capture = None
        return i + k

    def _run(self, buf: bytes | memoryview, i: int, n: int, eof: bool) -> int:
        """Consume buf[i:n]; returns where it stopped (a header not yet whole). At `eof` the stream ends
        at n, and whatever is still open or incomplete is a truncation."""
        e = self.e
        tag_vr, ul, us, item = e + "HH2s", e + "L", e + "H", e + "HHL"
        stack = self.stack
        unpack = struct.unpack_from
        if self.skip:
            i = self._skip(buf, i, n)
            if self.skip:
                return i
        while True:
            frame = stack[-1]
            pos = self.pos
            avail = n - i
            end = frame.end if frame.end is not None or not eof else pos + avail
            room = None if end is None else end - pos
            if frame.kind == _DATASET:
                if room == 0:
                    if frame.flag:
                        raise _truncated("item without its delimiter", 8, 0)
                    if len(stack) == 1:
                        return i
                    stack.pop()
                    continue
                if room is not None and room < 8:
                    raise _truncated(f"element header at offset {pos}", 8, room)
                if avail < 8:
                    return i
                group, element, vr = unpack(tag_vr, buf, i)
                tag = (group << 16) | element
                if tag == _ITEM_END:
                    if not frame.flag:
                        raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"unexpected item delimiter at {pos}")
                    i += 8
                    self.pos = pos + 8
                    stack.pop()
                    continue
                if frame.implicit:
                    vr = b""
                    (length,) = unpack(ul, buf, i + 4)
                    header = 8
                else:
                    if vr in _LONG_VRS:
                        if room is not None and room < 12:
                            raise _truncated(f"element header at offset {pos}", 12, room)
                        if avail < 12:
                            return i
                        (length,) = unpack(ul, buf, i + 8)
                        header = 12
                    else:
                        (length,) = unpack(us, buf, i + 6)
                        header = 8
                i += header
                pos = self.pos = pos + header
                top = len(stack) == 1
                if length == _UNDEFINED:
                    if top and tag == _PIXEL_DATA:
                        self.pixel = (vr, length)
                    if tag == _PIXEL_DATA and not frame.implicit:
                        stack.append(_Frame(_FRAGMENTS, frame.end, False, frame.depth, False))
                    else:
                        stack.append(
                            _Frame(_SEQUENCE, frame.end, frame.implicit or vr == b"UN", frame.depth + 1, False)
                        )
                    continue
                if room is not None and length > room - header:
                    raise _truncated(f"element ({group:04X},{element:04X})", length, room - header)
                if top and tag == _PIXEL_DATA:
                    self.pixel = (vr, length)
                if vr == b"SQ":
                    if top and tag in self.wanted:
                        self.found[tag] = (vr, b"")
                    stack.append(
                        _Frame(
                            _SEQUENCE,
                            pos + length,
                            frame.implicit,
                            frame.depth + 1,
                            True,
                            f"element ({group:04X},{element:04X})",
                            pos,
                            length,
                        )
                    )
                elif length:
                    i = self._value(buf, i, n, tag, vr, length)
                    if self.skip:
                        return i
                elif top and tag in self.wanted:
                    self.found[tag] = (vr, b"")
                continue
            # a sequence's items, or pixel data fragments: both are item headers
            if frame.kind == _SEQUENCE and frame.flag and room == 0:
                stack.pop()
                continue
            if room is not None and room < 8:
                raise _truncated(f"item header at offset {pos}", 8, room)
            if avail < 8:
                return i
            group, element, length = unpack(item, buf, i)
            tag = (group << 16) | element
            i += 8
            self.pos = pos + 8
            if room is not None:
                room -= 8
            if frame.kind == _FRAGMENTS:
                if tag == _SEQ_END:
                    stack.pop()
                elif tag != _ITEM or length == _UNDEFINED:
                    raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"bad pixel data fragment at offset {pos}")
                elif room is not None and length > room:
                    raise _truncated("pixel data fragment", length, room)
                elif length:
                    i = self._value(buf, i, n, 0, b"", length)
                    if self.skip:
                        return i
                continue
            if tag == _SEQ_END and not frame.flag:
                stack.pop()
                continue
            if tag != _ITEM:
                raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"expected a sequence item at offset {pos}")
            if frame.depth > _MAX_DEPTH:
                raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, "sequences nested too deeply")
            if length == _UNDEFINED:
                stack.append(_Frame(_DATASET, frame.end, frame.implicit, frame.depth, True))
            else:
                if room is not None and length > room:
                    raise _truncated("sequence item", length, room)
                stack.append(
                    _Frame(
                        _DATASET, pos + 8 + length, frame.implicit, frame.depth, False, "sequence item", pos + 8, length
                    )
                )


class _Inflater:
    """Inflates a deflated dataset as it arrives, a bounded piece at a time; more than `limit` bytes in
    all is refused with Out of Resources (deflate reaches ratios above 1000:1)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)

    def _check(self, plain: bytes) -> bytes:
        self.total += len(plain)
        if self.total > self.limit:
            raise InvalidInstance(STATUS_OUT_OF_RESOURCES, f"deflated dataset inflates to more than {self.limit} bytes")
        return plain

    def feed(self, data: bytes | memoryview) -> Iterator[bytes]:
        inflater = self.inflater
        while data and not inflater.eof:
            try:
                plain = inflater.decompress(data, 1 << 20)
            except zlib.error as exc:
                raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"deflated dataset is corrupt: {exc}") from None
            yield self._check(plain)
            data = inflater.unconsumed_tail

    def finish(self) -> bytes:
        try:
            rest = self._check(self.inflater.flush())
        except zlib.error as exc:
            raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"deflated dataset is corrupt: {exc}") from None
        if not self.inflater.eof:
            raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, "deflated dataset is truncated")
        return rest


def _inflate(dataset: bytes, limit: int) -> bytes:
    inflater = _Inflater(limit)
    return b"".join(inflater.feed(dataset)) + inflater.finish()


def _layout(transfer_syntax: str) -> tuple[bool, bool, bool, bool]:
    """(deflated, implicit VR, little endian, native pixel data) of a transfer syntax; InvalidInstance
    for a UID that is not one."""
    ts = UID(transfer_syntax)
    try:
        known = ts.is_transfer_syntax
    except ValueError:  # pydicom raises for UIDs that are not transfer syntaxes at all
        known = False
    if not known:
        raise InvalidInstance(STATUS_CANNOT_UNDERSTAND, f"unknown transfer syntax {transfer_syntax}")
    if ts.is_deflated:
        return True, False, True, True
    return False, ts.is_implicit_VR, ts.is_little_endian, not ts.is_encapsulated


def decode_layout(dataset: bytes, transfer_syntax: str, max_inflated: int | None = None) -> tuple[bytes, bool, bool]:
    """The dataset as plain bytes (inflated if deflated) and whether it is implicit VR / little endian.

    A deflated dataset inflating to more than `max_inflated` bytes (default MAX_INFLATED_BYTES) is
    refused with Out of Resources before the whole of it is inflated."""
    deflated, implicit, little, _native = _layout(transfer_syntax)
    if deflated:
        limit = MAX_INFLATED_BYTES if max_inflated is None else max_inflated
        return _inflate(dataset, limit), False, True
    return dataset, implicit, little


def check_structure(
    plain: bytes, implicit: bool, little: bool, wanted: frozenset[int] = frozenset()
) -> dict[int, tuple[bytes, bytes]]:
    """Raise InvalidInstance unless every element of the dataset is complete; returns the wanted
    top-level elements: tag -> (VR, value)."""
    walker = _Walker(implicit, little, wanted)
    walker.feed(plain)
    return walker.finish()


_UID_PART = re.compile(r"[0-9]+", re.ASCII)


def _valid_uid(value: str) -> bool:
    # ASCII digits only: str.isdigit() also accepts "²" or "٣", which a UI value decodes to from
    # bytes above 0x7F. Leading zeros are tolerated (common in the field, though not conformant).
    return 0 < len(value) <= 64 and all(_UID_PART.fullmatch(part) for part in value.split("."))


_TEXT_VRS = {
    b"AE",
    b"AS",
    b"CS",
    b"DA",
    b"DS",
    b"DT",
    b"IS",
    b"LO",
    b"LT",
    b"PN",
    b"SH",
    b"ST",
    b"TM",
    b"UC",
    b"UI",
    b"UR",
    b"UT",
    b"UN",
    b"",
}
_CHARSET = 0x00080005
# the attributes the index reads: keyword -> tag
_FIELDS = {
    keyword: int(tag_for_keyword(keyword))  # type: ignore[arg-type]
    for keyword in (
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "PatientID",
        "IssuerOfPatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyDate",
        "StudyTime",
        "StudyDescription",
        "ReferringPhysicianName",
        "Modality",
        "SeriesDescription",
        "SeriesNumber",
        "BodyPartExamined",
        "InstanceNumber",
    )
}
_PERSON_NAMES = {_FIELDS["PatientName"], _FIELDS["ReferringPhysicianName"]}
# what native Pixel Data must hold: keyword -> tag
_IMAGE = {
    keyword: int(tag_for_keyword(keyword))  # type: ignore[arg-type]
    for keyword in (
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "BitsAllocated",
        "NumberOfFrames",
        "PhotometricInterpretation",
    )
}
# PS3.3 C.7.6.3.1.2: uncompressed 4:2:2 YBR holds two samples per pixel, not three
_HALF_CHROMA = {"YBR_FULL_422", "YBR_PARTIAL_422"}


class _Values:
    """Decodes the collected elements' text, in the dataset's character set, without building a pydicom
    Dataset (which costs more than the rest of receiving an instance)."""

    def __init__(self, found: dict[int, tuple[bytes, bytes]], little: bool = True) -> None:
        self.found = found
        self.e = "<" if little else ">"
        self.encodings = ["iso8859"]
        if _CHARSET in found:
            terms = [t.strip() for t in self.raw(_CHARSET).decode("ascii", "replace").split("\\")]
            try:
                self.encodings = convert_encodings(terms)
            except LookupError:
                pass

    def raw(self, tag: int) -> bytes:
        return self.found[tag][1]

    def text(self, tag: int) -> str:
        if tag not in self.found:
            return ""
        vr = self.found[tag][0]
        if vr not in _TEXT_VRS:
            raise InvalidInstance(
                STATUS_CANNOT_UNDERSTAND,
                f"dataset cannot be decoded: ({tag >> 16:04X},{tag & 0xFFFF:04X}) has VR {vr.decode(errors='replace')}",
            )
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

    def us(self, tag: int) -> int | None:
        """The first value of an unsigned short (US; no VR in implicit VR), None when absent or too short."""
        found = self.found.get(tag)
        if found is None or len(found[1]) < 2 or found[0] not in (b"US", b""):
            return None
        return int(struct.unpack_from(self.e + "H", found[1])[0])

    def codes(self, tag: int) -> tuple[str, ...]:
        """Routing codes: one per value, upper case, empty ones dropped; none from a sequence."""
        if tag not in self.found or self.found[tag][0] == b"SQ":
            return ()
        text = self.raw(tag).decode("latin-1")
        return tuple(c for c in (v.replace("\x00", "").strip().upper() for v in text.split("\\")) if c)


@functools.lru_cache(maxsize=16)
def _wanted(code_tag: int | None) -> frozenset[int]:
    """The top-level elements read: the index fields, the image description, the character set and the
    routing code attribute."""
    return frozenset({*_FIELDS.values(), *_IMAGE.values(), _CHARSET, *((code_tag,) if code_tag is not None else ())})


class InstanceReader:
    """Reads an encoded dataset as it arrives: `feed` each fragment (it raises InvalidInstance as soon as
    the bytes cannot be a valid instance), then `finish` for the index fields. Nothing but element headers
    and the few values the index needs is kept, so a receiver can stream the bytes to disk meanwhile and
    never read them back."""

    def __init__(self, transfer_syntax: str, *, code_tag: int | None = None, max_inflated: int | None = None) -> None:
        deflated, implicit, little, self.native = _layout(transfer_syntax)
        self.code_tag = code_tag
        self.walker = _Walker(implicit, little, _wanted(code_tag))
        self.little = little
        self.inflater = _Inflater(MAX_INFLATED_BYTES if max_inflated is None else max_inflated) if deflated else None

    def feed(self, chunk: bytes | memoryview) -> None:
        if self.inflater is None:
            self.walker.feed(chunk)
        else:
            for plain in self.inflater.feed(chunk):
                self.walker.feed(plain)

    def finish(self, expected_sop_class: str | None = None, expected_sop_uid: str | None = None) -> IndexFields:
        if self.inflater is not None:
            self.walker.feed(self.inflater.finish())
        values = _Values(self.walker.finish(), self.little)
        fields = _index_fields(values, expected_sop_class, expected_sop_uid, self.code_tag)
        if self.native and self.walker.pixel is not None:
            _check_pixel_data(values, *self.walker.pixel)
        return fields


def _check_pixel_data(values: _Values, vr: bytes, length: int) -> None:
    """Native (uncompressed) Pixel Data must hold Rows x Columns x Samples per Pixel x Bits Allocated / 8
    bytes per frame: shorter pixel data would be forwarded to hospitals as a broken image."""
    if length == _UNDEFINED:
        raise InvalidInstance(
            STATUS_CANNOT_UNDERSTAND, "Pixel Data is encapsulated but the transfer syntax is uncompressed"
        )
    rows, columns, bits = values.us(_IMAGE["Rows"]), values.us(_IMAGE["Columns"]), values.us(_IMAGE["BitsAllocated"])
    if rows is None or columns is None or bits is None:
        raise InvalidInstance(STATUS_DATASET_MISMATCH, "Pixel Data without Rows, Columns and Bits Allocated")
    samples = values.us(_IMAGE["SamplesPerPixel"]) or 1
    if samples == 3 and values.text(_IMAGE["PhotometricInterpretation"]).upper() in _HALF_CHROMA:
        samples = 2
    frames = max(values.number(_IMAGE["NumberOfFrames"]) or 1, 1)
    expected = (rows * columns * samples * bits * frames + 7) // 8
    if length < expected:
        raise InvalidInstance(STATUS_DATASET_MISMATCH, f"Pixel Data has {length} bytes, the image needs {expected}")


def _index_fields(
    values: _Values, expected_sop_class: str | None, expected_sop_uid: str | None, code_tag: int | None
) -> IndexFields:
    text = values.text
    sop_class = text(_FIELDS["SOPClassUID"])
    sop_uid = text(_FIELDS["SOPInstanceUID"])
    study_uid = text(_FIELDS["StudyInstanceUID"])
    series_uid = text(_FIELDS["SeriesInstanceUID"])
    for label, value in (
        ("SOP Instance UID (0008,0018)", sop_uid),
        ("Study Instance UID (0020,000D)", study_uid),
        ("Series Instance UID (0020,000E)", series_uid),
        ("SOP Class UID (0008,0016)", sop_class),
    ):
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


def read_instance(
    dataset: bytes | memoryview,
    transfer_syntax: str,
    *,
    expected_sop_class: str | None = None,
    expected_sop_uid: str | None = None,
    code_tag: int | None = None,
) -> IndexFields:
    """Validate an encoded dataset and extract its index fields; raises InvalidInstance with the status."""
    reader = InstanceReader(transfer_syntax, code_tag=code_tag)
    reader.feed(dataset)
    return reader.finish(expected_sop_class, expected_sop_uid)
