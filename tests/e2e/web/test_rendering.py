"""Rendering correctness: pydicom's test files (many photometric interpretations, bit depths and
transfer syntaxes: JPEG baseline/extended, JPEG-LS, JPEG 2000, RLE, big endian, implicit VR) stored with
STOW-RS and fetched as rendered PNG from WADO-RS match pydicom's own decoded pixel array after the same
Modality LUT and windowing (pydicom's apply_windowing), within 1 grey level."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_windowing, pixel_array
from pydicom.uid import generate_uid

from dwtools import BIG_BODY, add_user, base_url, token
from hubtools import register_hospitals
from imex.render import decode, image

GREY = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "JPEG2000.dcm",
    "JPGExtended.dcm",
    "liver_1frame.dcm",
    "693_J2KI.dcm",
]
COLOUR = [
    "SC_rgb_small_odd.dcm",
    "SC_rgb_dcmtk_+eb+cy+np.dcm",
    "SC_rgb_jpeg_app14_dcmd.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_16bit.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "examples_ybr_color.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_rle_2frame.dcm",
    "examples_palette.dcm",
]


def expected_grey(ds, index: int, window: image.Window) -> np.ndarray:  # type: ignore[no-untyped-def]
    """pydicom's own pipeline: decode, Modality LUT, VOI windowing; scaled to 0..255."""
    count = decode.frame_count(ds)
    values = apply_modality_lut(pixel_array(ds, index=index if count > 1 else None), ds)
    voi = copy.deepcopy(ds)
    voi.WindowCenter, voi.WindowWidth = window.center, window.width
    voi.VOILUTFunction = window.function.upper()
    for keyword in ("VOILUTSequence", "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence"):
        if keyword in voi:
            del voi[keyword]
    windowed = apply_windowing(values.astype(np.float64), voi)
    bounds = apply_windowing(np.array([-1e12, 1e12]), voi)
    scaled = (windowed - bounds[0]) / (bounds[1] - bounds[0]) * 255.0
    out = np.rint(scaled).astype(np.int16)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 255 - out
    return out


def expected_colour(ds, index: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    px = pixel_array(ds, index=index if decode.frame_count(ds) > 1 else None)
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        px = apply_color_lut(px, ds)
    if px.dtype != np.uint8:
        px = px >> (px.dtype.itemsize * 8 - 8)
    return px.astype(np.int16)


def _monochrome1() -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.SOPInstanceUID = generate_uid()
    return ds


@pytest.mark.parametrize("function", ["linear", "linear_exact", "sigmoid"])
def test_windowing_functions_match_pydicom(function):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    frame = decode.decode_frame(ds, 0)
    for window in (image.Window(40, 400, function), image.Window(-600, 1500, function), image.Window(0.5, 2, function)):
        ours = image.to_8bit(frame, window).astype(np.int16)
        assert np.abs(ours - expected_grey(ds, 0, window)).max() <= 1, window


@pytest.fixture
def hub(make_config, start_hub):
    hub = start_hub(make_config(http__max_body_bytes=BIG_BODY))
    register_hospitals(hub, dest_port=1)
    add_user(hub, "kings_sender", "RJZ", ["sender"])
    return hub


def _stow(web: httpx.Client, data: bytes) -> None:
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n--b--\r\n"
    answer = web.post(
        "/dicomweb/studies",
        content=body,
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
    )
    assert answer.status_code == 200, answer.text


def _png(web: httpx.Client, ds, frame: int, **params: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    answer = web.get(
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
        f"{ds.SOPInstanceUID}/frames/{frame + 1}/rendered",
        params=params,
        headers={"Accept": "image/png"},
    )
    assert answer.status_code == 200, answer.text
    picture = Image.open(io.BytesIO(answer.content))
    assert picture.format == "PNG"
    return np.asarray(picture).astype(np.int16)


def test_rendered_png_matches_pydicom(hub):
    web = httpx.Client(
        base_url=base_url(hub), headers={"Authorization": f"Bearer {token(hub, 'kings_sender')}"}, timeout=60
    )
    cases = [(name, pydicom.dcmread(get_testdata_file(name))) for name in GREY + COLOUR]
    cases.append(("MONOCHROME1", _monochrome1()))
    files = {name: Path(get_testdata_file(name)).read_bytes() for name in GREY + COLOUR}
    checked = 0
    for name, ds in cases:
        data = files.get(name, b"")
        if data[128:132] != b"DICM":
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            data = buf.getvalue()
        _stow(web, data)
        count = decode.frame_count(ds)
        for index in sorted({0, count - 1}):
            frame = decode.decode_frame(ds, index)
            if frame.is_colour:
                got, want = _png(web, ds, index), expected_colour(ds, index)
            else:
                window = image.default_window(frame)
                window = image.Window(window.center, max(window.width, 2.0))
                got = _png(web, ds, index, window=f"{window.center!r},{window.width!r}")
                want = expected_grey(ds, index, window)
                # without a window parameter: the instance's own window (or the full range)
                own = image.default_window(frame)
                if own.width >= 2:
                    assert np.abs(_png(web, ds, index) - expected_grey(ds, index, own)).max() <= 1, name
            assert got.shape == want.shape, name
            assert np.abs(got - want).max() <= 1, (name, index, np.abs(got - want).max())
            checked += 1
    assert checked >= len(cases) + 1
