"""The demo's realistic sample studies: a CT in Hounsfield units that the viewer's presets show as a body,
a 12-bit MR with a few series, and a multi-frame RGB ultrasound, all valid Part 10 files."""

from __future__ import annotations

import numpy as np
from pydicom import dcmread
from pydicom.uid import CTImageStorage, MRImageStorage, UltrasoundMultiFrameImageStorage

from imex.samples import make_body_ct, make_head_mr, make_us_cine


def _hu(path) -> np.ndarray:
    ds = dcmread(path)
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def test_body_ct_is_in_hounsfield_units(tmp_path):
    paths = make_body_ct(tmp_path, slices=8, rows=128, columns=128, accession="A1", study_date="20240102")
    assert len(paths) == 8
    ds = dcmread(paths[0])
    assert ds.SOPClassUID == CTImageStorage and ds.StudyDate == "20240102" and ds.RescaleType == "HU"
    assert float(ds.WindowCenter[0]) == 40 and float(ds.WindowWidth[0]) == 400
    chest = _hu(paths[0])
    assert abs(chest[2, 2] - -1000) < 50  # air around the patient
    assert abs(chest[64, 64] - 40) < 40  # soft tissue in the middle (the heart)
    assert chest.max() > 400  # bone
    assert (chest < -700).sum() > (chest > 300).sum() > 0  # lungs of air, a spine of bone
    abdomen = _hu(paths[-1])
    assert (abdomen < -700).sum() < (chest < -700).sum()  # the lungs give way lower down
    soft = abdomen[(abdomen > -200) & (abdomen < 100)]
    assert soft.size > abdomen.size / 4  # fat and soft tissue: no white blob in a soft tissue window


def test_head_mr_has_a_series_per_sequence_in_12_bits(tmp_path):
    paths = make_head_mr(tmp_path, slices=3, rows=64, columns=64)
    headers = [dcmread(p) for p in paths]
    assert {h.SOPClassUID for h in headers} == {MRImageStorage}
    assert [h.SeriesDescription for h in headers[::3]] == ["T1 AXIAL", "T2 AXIAL", "FLAIR AXIAL"]
    assert len({h.SeriesInstanceUID for h in headers}) == 3 and len({h.StudyInstanceUID for h in headers}) == 1
    assert all(h.BitsStored == 12 and 0 < h.pixel_array.max() <= 4095 for h in headers)


def test_us_cine_is_multi_frame_rgb(tmp_path):
    [path] = make_us_cine(tmp_path, frames=4, rows=60, columns=80)
    ds = dcmread(path)
    assert ds.SOPClassUID == UltrasoundMultiFrameImageStorage and ds.PhotometricInterpretation == "RGB"
    frames = ds.pixel_array
    assert frames.shape == (4, 60, 80, 3) and int(ds.NumberOfFrames) == 4
    assert not np.array_equal(frames[0], frames[2])  # it moves
    assert (frames[..., 0] > frames[..., 2] + 50).any() and (frames[..., 2] > frames[..., 0] + 50).any()  # Doppler
