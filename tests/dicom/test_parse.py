"""Unit tests of imex.dicom.parse on real encodings: every transfer syntax layout the hub accepts,
sequences and encapsulated pixel data, complete and cut at the places a broken sender cuts them."""

from __future__ import annotations

import struct
import zlib

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
)

from hubtools import encode_dataset
from imex.dicom import parse
from imex.dicom.parse import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    InvalidInstance,
    attribute_tag,
    check_structure,
    decode_layout,
    read_instance,
)

SOP_UID = "1.2.826.0.1.3680043.9.7133.2.1"
STUDY_UID = "1.2.826.0.1.3680043.9.7133.2"
SERIES_UID = "1.2.826.0.1.3680043.9.7133.2.9"
REQUESTING_SERVICE = 0x00321033

# building invalid values on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR", "ignore:The value length")

LAYOUTS = {  # transfer syntax -> (implicit VR, little endian) of its encoding
    ImplicitVRLittleEndian: (True, True),
    ExplicitVRLittleEndian: (False, True),
    ExplicitVRBigEndian: (False, False),
}


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def instance(pixels: bytes | None = b"\x01\x02" * 32, **extra: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = SOP_UID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.PatientID = "P123"
    ds.IssuerOfPatientID = "RJZ"
    ds.PatientName = "DOE^JANE"
    ds.PatientBirthDate = "19800102"
    ds.PatientSex = "F"
    ds.AccessionNumber = "ACC9"
    ds.StudyDate = "20240131"
    ds.StudyTime = "101500"
    ds.StudyDescription = "CT CHEST"
    ds.Modality = "CT"
    ds.SeriesNumber = 3
    ds.InstanceNumber = 7
    ds.BodyPartExamined = "CHEST"
    ds.RequestingService = "ryj"
    if pixels is not None:
        ds.Rows, ds.Columns, ds.BitsAllocated = 4, 8, 16
        ds.PixelData = pixels
        ds["PixelData"].VR = "OW"
    for keyword, value in extra.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def refused(data: bytes, ts: str = ExplicitVRLittleEndian, **kw: object) -> InvalidInstance:
    with pytest.raises(InvalidInstance) as info:
        read_instance(data, ts, **kw)  # type: ignore[arg-type]
    return info.value


def _split_encode(ds: Dataset, tag: int, raw_element: bytes) -> bytes:
    """Explicit VR LE encoding of `ds` with `raw_element` in place of (or inserted as) element `tag`."""
    head = Dataset({k: v for k, v in ds.items() if k < tag})
    tail = Dataset({k: v for k, v in ds.items() if k > tag})
    return encode_dataset(head) + raw_element + encode_dataset(tail)


def element_offset(data: bytes, tag: int, little: bool = True) -> int:
    """Where the top-level element `tag` starts in an explicit or implicit encoding (test helper)."""
    e = "<" if little else ">"
    needle = struct.pack(e + "HH", tag >> 16, tag & 0xFFFF)
    pos = data.find(needle)
    assert pos >= 0, f"tag {tag:08X} not in the encoding"
    return pos


# --------------------------------------------------------------------------- plain transfer syntaxes


@pytest.mark.parametrize("ts", list(LAYOUTS), ids=lambda ts: ts.name)
def test_each_layout_is_read_with_all_index_fields(ts):
    data = encode_dataset(instance(), *LAYOUTS[ts])
    fields = read_instance(
        data, ts, expected_sop_class=CTImageStorage, expected_sop_uid=SOP_UID, code_tag=REQUESTING_SERVICE
    )
    assert (fields.sop_class_uid, fields.sop_uid, fields.study_uid, fields.series_uid) == (
        CTImageStorage,
        SOP_UID,
        STUDY_UID,
        SERIES_UID,
    )
    assert (fields.patient_id, fields.issuer, fields.patient_name, fields.birth_date, fields.sex) == (
        "P123",
        "RJZ",
        "DOE^JANE",
        "19800102",
        "F",
    )
    assert (fields.accession_number, fields.study_date, fields.study_time, fields.modality) == (
        "ACC9",
        "20240131",
        "101500",
        "CT",
    )
    assert (fields.series_number, fields.instance_number, fields.body_part) == (3, 7, "CHEST")
    assert fields.routing_codes == ("RYJ",)


def test_layouts_really_differ():
    """Guard for the test itself: the three encodings are distinct byte streams."""
    encodings = {encode_dataset(instance(), *layout) for layout in LAYOUTS.values()}
    assert len(encodings) == 3


@pytest.mark.parametrize("ts", list(LAYOUTS), ids=lambda ts: ts.name)
def test_pixel_data_cut_short_is_truncation(ts):
    data = encode_dataset(instance(pixels=bytes(range(256)) * 4), *LAYOUTS[ts])
    err = refused(data[:-100], ts)
    assert err.status == STATUS_CANNOT_UNDERSTAND
    assert "truncated" in str(err) and "(7FE0,0010)" in str(err)


@pytest.mark.parametrize("ts", list(LAYOUTS), ids=lambda ts: ts.name)
@pytest.mark.parametrize("cut", [1, 3, 6, 7])
def test_cut_inside_an_element_header_is_truncation(ts, cut):
    data = encode_dataset(instance(pixels=None), *LAYOUTS[ts])
    start = element_offset(data, 0x00200011, little=LAYOUTS[ts][1])  # Series Number, after the UIDs
    err = refused(data[: start + cut], ts)
    assert err.status == STATUS_CANNOT_UNDERSTAND
    assert "truncated" in str(err)


def test_cut_inside_a_long_explicit_header_is_truncation():
    # OW header: tag(4) VR(2) reserved(2) length(4); 10 bytes are enough for a short header only
    data = encode_dataset(instance())
    start = element_offset(data, 0x7FE00010)
    with pytest.raises(InvalidInstance, match="needs 12 bytes"):
        check_structure(data[: start + 10], implicit=False, little=True)


def test_cut_exactly_between_elements_is_not_detectable_but_uids_are_required():
    # a stream cut at an element boundary is structurally complete: the UID checks catch it
    data = encode_dataset(instance(pixels=None))
    err = refused(data[: element_offset(data, 0x0020000E)])  # before Series Instance UID
    assert err.status == STATUS_DATASET_MISMATCH
    assert "Series Instance UID" in str(err)


def test_empty_dataset_is_refused():
    err = refused(b"")
    assert err.status == STATUS_CANNOT_UNDERSTAND
    assert "empty" in str(err)


def test_garbage_is_refused_with_cannot_understand():
    import random

    garbage = random.Random(7).randbytes(4096)
    for ts in LAYOUTS:
        assert refused(garbage, ts).status == STATUS_CANNOT_UNDERSTAND


def test_unknown_transfer_syntax_is_refused_not_crashed():
    data = encode_dataset(instance())
    for ts in ("1.2.826.0.1.3680043.9.7133.99", "not a uid", CTImageStorage):
        err = refused(data, ts)
        assert err.status == STATUS_CANNOT_UNDERSTAND
        assert "unknown transfer syntax" in str(err)


# --------------------------------------------------------------------------- deflated


def test_deflated_dataset_is_inflated_and_read():
    plain = encode_dataset(instance(pixels=b"\x00" * 4096))
    data = deflate(plain)
    assert len(data) < len(plain) // 4
    fields = read_instance(data, DeflatedExplicitVRLittleEndian, expected_sop_uid=SOP_UID)
    assert fields.sop_uid == SOP_UID
    assert decode_layout(data, DeflatedExplicitVRLittleEndian) == (plain, False, True)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_deflated_dataset_is_refused(keep):
    data = deflate(encode_dataset(instance(pixels=bytes(range(256)) * 16)))
    err = refused(data[: int(len(data) * keep)], DeflatedExplicitVRLittleEndian)
    assert err.status == STATUS_CANNOT_UNDERSTAND
    assert "truncated" in str(err)


def test_corrupt_deflate_stream_is_refused():
    data = bytearray(deflate(encode_dataset(instance())))
    data[0] = 0xFF  # invalid block type
    err = refused(bytes(data), DeflatedExplicitVRLittleEndian)
    assert err.status == STATUS_CANNOT_UNDERSTAND
    assert "corrupt" in str(err)


def test_complete_deflate_stream_of_a_truncated_dataset_is_refused():
    plain = encode_dataset(instance(pixels=bytes(range(256)) * 4))
    err = refused(deflate(plain[:-50]), DeflatedExplicitVRLittleEndian)
    assert err.status == STATUS_CANNOT_UNDERSTAND
    assert "(7FE0,0010)" in str(err)


def test_deflate_bomb_is_refused_before_inflating_it_all():
    plain = encode_dataset(instance(pixels=b"\x00" * (4 << 20)))  # 4 MiB of zeros: about 4 KiB deflated
    data = deflate(plain)
    assert len(data) < 16 << 10
    with pytest.raises(InvalidInstance) as info:
        decode_layout(data, DeflatedExplicitVRLittleEndian, max_inflated=1 << 20)
    err = info.value
    assert err.status == STATUS_OUT_OF_RESOURCES
    assert "more than 1048576 bytes" in str(err)
    # exactly at the limit it is accepted
    assert decode_layout(data, DeflatedExplicitVRLittleEndian, max_inflated=len(plain))[0] == plain


def test_deflate_limit_defaults_to_the_module_setting(monkeypatch):
    data = deflate(encode_dataset(instance(pixels=b"\x00" * (1 << 20))))
    monkeypatch.setattr(parse, "MAX_INFLATED_BYTES", 64 << 10)
    err = refused(data, DeflatedExplicitVRLittleEndian)
    assert err.status == STATUS_OUT_OF_RESOURCES


# --------------------------------------------------------------------------- encapsulated pixel data


def _encapsulated(frames: list[bytes], *, delimiter: bool = True) -> bytes:
    """(7FE0,0010) OB of undefined length: empty Basic Offset Table, one fragment per frame."""
    out = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    out += struct.pack("<HHL", 0xFFFE, 0xE000, 0)
    for frame in frames:
        frame += b"\x00" * (len(frame) % 2)
        out += struct.pack("<HHL", 0xFFFE, 0xE000, len(frame)) + frame
    if delimiter:
        out += struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return out


def test_encapsulated_pixel_data_complete_is_accepted():
    data = encode_dataset(instance(pixels=None)) + _encapsulated([b"\xff\xd8jpeg-1\xff\xd9", b"\xff\xd8jpeg-2\xff\xd9"])
    fields = read_instance(data, JPEGBaseline8Bit, expected_sop_uid=SOP_UID)
    assert fields.sop_uid == SOP_UID


def test_encapsulated_pixel_data_without_sequence_delimiter_is_truncation():
    data = encode_dataset(instance(pixels=None)) + _encapsulated([b"\xff\xd8jpeg\xff\xd9"], delimiter=False)
    err = refused(data, JPEGBaseline8Bit)
    assert err.status == STATUS_CANNOT_UNDERSTAND
    assert "truncated" in str(err)


def test_encapsulated_fragment_cut_short_is_truncation():
    data = encode_dataset(instance(pixels=None)) + _encapsulated(
        [b"\xff\xd8" + b"x" * 100 + b"\xff\xd9"], delimiter=False
    )
    err = refused(data[:-20], JPEGBaseline8Bit)
    assert "pixel data fragment" in str(err)


def test_encapsulated_pixel_data_with_a_foreign_item_is_refused():
    bad = _encapsulated([b"abcd"]).replace(struct.pack("<HH", 0xFFFE, 0xE0DD), struct.pack("<HH", 0xFFFE, 0xE00D))
    err = refused(encode_dataset(instance(pixels=None)) + bad, JPEGBaseline8Bit)
    assert err.status == STATUS_CANNOT_UNDERSTAND
    assert "bad pixel data fragment" in str(err)


# --------------------------------------------------------------------------- sequences


def _nested(undefined: bool) -> Dataset:
    """Two levels of sequences (Referenced Series > Referenced Instance), as in a KOS or a CT."""
    inner1, inner2 = Dataset(), Dataset()
    inner1.ReferencedSOPClassUID, inner1.ReferencedSOPInstanceUID = CTImageStorage, "1.2.3.1"
    inner2.ReferencedSOPClassUID, inner2.ReferencedSOPInstanceUID = CTImageStorage, "1.2.3.2"
    series = Dataset()
    series.SeriesInstanceUID = "1.2.3"
    series.ReferencedInstanceSequence = Sequence([inner1, inner2])
    ds = instance()
    ds.ReferencedSeriesSequence = Sequence([series])
    for seq in (ds.ReferencedSeriesSequence, series.ReferencedInstanceSequence):
        for item in seq:
            item.is_undefined_length_sequence_item = undefined
    ds["ReferencedSeriesSequence"].is_undefined_length = undefined
    series["ReferencedInstanceSequence"].is_undefined_length = undefined
    return ds


_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_ITEM_DELIMITER = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("undefined", [True, False], ids=["undefined-length", "defined-length"])
def test_nested_sequences_are_walked(implicit, undefined):
    ds = _nested(undefined)
    data = encode_dataset(ds, implicit=implicit)
    assert (data.count(_SEQ_DELIMITER) == 2) is undefined  # the encoding really is what we test
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    fields = read_instance(data, ts)
    assert fields.series_uid == SERIES_UID  # top level, not the nested Series Instance UID


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_nested_sequence_missing_delimiters_is_truncation(implicit):
    data = encode_dataset(_nested(undefined=True), implicit=implicit)
    # drop the pixel data (after the sequence) and the outer sequence delimiter
    cut = data[: data.rindex(_SEQ_DELIMITER)]
    ts = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    err = refused(cut, ts)
    assert err.status == STATUS_CANNOT_UNDERSTAND and "truncated" in str(err)
    # cut inside the inner item, before its item delimiter
    inner_cut = data[: data.index(_ITEM_DELIMITER) - 3]
    assert refused(inner_cut, ts).status == STATUS_CANNOT_UNDERSTAND


def test_defined_length_sequence_with_item_overrunning_it_is_refused():
    ds = _nested(undefined=False)
    data = bytearray(encode_dataset(ds))
    seq_at = element_offset(bytes(data), 0x00081115)
    item_len_at = seq_at + 12 + 4
    (length,) = struct.unpack_from("<L", data, item_len_at)
    struct.pack_into("<L", data, item_len_at, length + 64)  # item claims more than its sequence holds
    err = refused(bytes(data))
    assert err.status == STATUS_CANNOT_UNDERSTAND
    assert "sequence item" in str(err)


def test_item_delimiter_at_top_level_is_refused():
    data = encode_dataset(instance(pixels=None)) + _ITEM_DELIMITER
    assert "unexpected item delimiter" in str(refused(data))


def test_sequence_with_non_item_content_is_refused():
    header = struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
    junk = struct.pack("<HHL", 0x0010, 0x0010, 4) + b"ABCD"
    data = encode_dataset(instance(pixels=None)) + header + junk
    assert "expected a sequence item" in str(refused(data))


def test_un_of_undefined_length_holds_an_implicit_sequence():
    # PS3.5 6.2.2: a UN element of undefined length is a sequence encoded in implicit VR LE
    item = encode_dataset(_nested(undefined=False).ReferencedSeriesSequence[0], implicit=True)
    body = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + item + _ITEM_DELIMITER + _SEQ_DELIMITER
    un = struct.pack("<HH2sHL", 0x0009, 0x1001, b"UN", 0, 0xFFFFFFFF) + body
    data = _split_encode(instance(pixels=None), 0x00091001, un)
    assert read_instance(data, ExplicitVRLittleEndian).sop_uid == SOP_UID
    # read as explicit VR, the implicit item would not parse: prove the walker switched
    with pytest.raises(InvalidInstance):
        check_structure(un.replace(b"UN", b"SQ", 1), implicit=False, little=True)
    # without its sequence delimiter, the next top-level element is taken for an item
    err = refused(data.replace(_SEQ_DELIMITER, b""))
    assert err.status == STATUS_CANNOT_UNDERSTAND and "expected a sequence item" in str(err)
    # and at the end of the dataset, the missing delimiter is a truncation
    assert "truncated" in str(refused(encode_dataset(instance(pixels=None)) + un[: -len(_SEQ_DELIMITER)]))


def test_sequences_nested_too_deeply_are_refused():
    item = Dataset()
    item.PatientID = "X"
    for _ in range(80):
        outer = Dataset()
        outer.ReferencedSeriesSequence = Sequence([item])
        outer["ReferencedSeriesSequence"].is_undefined_length = True
        item.is_undefined_length_sequence_item = True
        item = outer
    data = encode_dataset(instance(pixels=None)) + encode_dataset(item)
    assert "nested too deeply" in str(refused(data))


# --------------------------------------------------------------------------- identity checks


@pytest.mark.parametrize(
    "keyword, label",
    [
        ("SOPInstanceUID", "SOP Instance UID"),
        ("StudyInstanceUID", "Study Instance UID"),
        ("SeriesInstanceUID", "Series Instance UID"),
        ("SOPClassUID", "SOP Class UID"),
    ],
)
def test_missing_uid_is_dataset_mismatch(keyword, label):
    err = refused(encode_dataset(instance(**{keyword: None})))
    assert err.status == STATUS_DATASET_MISMATCH
    assert f"no {label}" in str(err)


@pytest.mark.parametrize("value", ["1.2..3", "1.2.3a", "1" * 65, ".1.2", "1.2.\u00b2"])
def test_invalid_uid_is_dataset_mismatch(value):
    # "\u00b2" is byte 0xB2 on the wire: str.isdigit() holds for it, a UID must be ASCII digits
    ds = instance()
    ds.StudyInstanceUID = value
    err = refused(encode_dataset(ds))
    assert err.status == STATUS_DATASET_MISMATCH
    assert "not a valid UID" in str(err)


def test_sop_class_and_instance_must_match_the_request():
    data = encode_dataset(instance())
    err = refused(data, expected_sop_class=MRImageStorage)
    assert err.status == STATUS_DATASET_MISMATCH and "SOP Class UID" in str(err)
    err = refused(data, expected_sop_uid=SOP_UID + ".1")
    assert err.status == STATUS_DATASET_MISMATCH and "SOP Instance UID" in str(err)
    assert (
        read_instance(data, ExplicitVRLittleEndian, expected_sop_class=CTImageStorage, expected_sop_uid=SOP_UID).sop_uid
        == SOP_UID
    )


def test_malformed_value_of_an_indexed_attribute_is_refused_not_raised():
    # Patient Name sent with VR US and an odd length: pydicom fails only when the value is read
    data = _split_encode(instance(pixels=None), 0x00100010, struct.pack("<HH2sH", 0x0010, 0x0010, b"US", 3) + b"abc")
    err = refused(data)
    assert err.status == STATUS_CANNOT_UNDERSTAND
    assert "cannot be decoded" in str(err)


def test_optional_fields_may_be_absent_or_odd():
    ds = instance(pixels=None, PatientName=None, SeriesNumber=None, BodyPartExamined=None)
    not_a_number = struct.pack("<HH2sH", 0x0020, 0x0013, b"IS", 2) + b"x "  # Instance Number "x"
    fields = read_instance(_split_encode(ds, 0x00200013, not_a_number), ExplicitVRLittleEndian)
    assert (fields.patient_name, fields.series_number, fields.body_part) == ("", None, "")
    assert fields.instance_number is None


# --------------------------------------------------------------------------- attribute_tag and codes


@pytest.mark.parametrize(
    "spec, tag",
    [
        ("RequestingService", 0x00321033),
        ("0032,1033", 0x00321033),
        ("(0032,1033)", 0x00321033),
        (" 7fe0,0010 ", 0x7FE00010),
        ("0009,1010", 0x00091010),
        ("", None),
        ("  ", None),
    ],
)
def test_attribute_tag(spec, tag):
    assert attribute_tag(spec) == tag


@pytest.mark.parametrize("spec", ["NoSuchKeyword", "zz,0010", "0032"])
def test_attribute_tag_rejects_nonsense(spec):
    with pytest.raises(ValueError):
        attribute_tag(spec)


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
@pytest.mark.parametrize(
    "value, codes",
    [
        ("ryj", ("RYJ",)),
        (" rjz ", ("RJZ",)),
        (["ryj", "rjz"], ("RYJ", "RJZ")),
        (["ryj", "", "  ", "rf4"], ("RYJ", "RF4")),
        ("", ()),
    ],
)
def test_routing_codes_single_and_multi_valued(ts, value, codes):
    ds = instance(RequestingService=value)
    fields = read_instance(encode_dataset(ds, *LAYOUTS[ts]), ts, code_tag=attribute_tag("RequestingService"))
    assert fields.routing_codes == codes


def test_routing_codes_absent_attribute_or_no_code_tag():
    data = encode_dataset(instance(RequestingService=None))
    assert read_instance(data, ExplicitVRLittleEndian, code_tag=REQUESTING_SERVICE).routing_codes == ()
    assert read_instance(encode_dataset(instance()), ExplicitVRLittleEndian, code_tag=None).routing_codes == ()


@pytest.mark.parametrize("ts", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_routing_codes_from_a_private_attribute(ts):
    # in implicit VR (or explicit UN) a private attribute reads as raw bytes, not as text
    ds = instance()
    ds.add_new(0x00090010, "LO", "IMEX ROUTING")
    ds.add_new(0x00091010, "LO", ["ryj", "rjz"])
    fields = read_instance(encode_dataset(ds, *LAYOUTS[ts]), ts, code_tag=attribute_tag("0009,1010"))
    assert fields.routing_codes == ("RYJ", "RJZ")


def test_routing_codes_from_a_sequence_attribute_are_none():
    ds = _nested(undefined=False)
    fields = read_instance(
        encode_dataset(ds), ExplicitVRLittleEndian, code_tag=attribute_tag("ReferencedSeriesSequence")
    )
    assert fields.routing_codes == ()


def test_names_are_decoded_in_the_dataset_character_set():
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3", "1.2.4", "1.2.5"
    ds.PatientName = "Müller^Jürgen"
    ds.SeriesNumber = "7"
    for implicit, ts in ((True, "1.2.840.10008.1.2"), (False, "1.2.840.10008.1.2.1")):
        fields = read_instance(encode_dataset(ds, implicit=implicit), ts)
        assert fields.patient_name == "Müller^Jürgen" and fields.series_number == 7
