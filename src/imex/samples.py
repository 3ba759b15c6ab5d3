"""Synthetic DICOM studies for the demo, the tests and the benchmarks.

Real patient data must never be needed to try or test the hub, so this module writes valid
Part 10 files with a deterministic phantom whose pixel bytes differ for every instance (a hub
that mixes up instances, or a destination that drops one, shows up when pixel data are compared).
Only pydicom and numpy are needed; the compression helpers use dcmtk when it is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

__all__ = [
    "make_study",
    "make_ct_study",
    "make_body_ct",
    "make_head_mr",
    "make_us_cine",
    "compress_rle",
    "compress_jpeg_lossless",
    "dcmtk_available",
]

SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}
FIELD_OF_VIEW_MM = 350.0
SLICE_THICKNESS_MM = 2.5

# Ellipses of the phantom: centre (x, y) and half axes (a, b) as fractions of the half image,
# with their intensity on a 0..1 scale (a torso with two lungs, a spine and an organ).
_ELLIPSES: list[tuple[float, float, float, float, float]] = [
    (0.0, 0.0, 0.85, 0.65, 0.52),  # body, about soft tissue
    (-0.40, -0.05, 0.25, 0.38, 0.05),  # right lung, air-like
    (0.40, -0.05, 0.25, 0.38, 0.05),  # left lung
    (0.0, 0.45, 0.10, 0.10, 0.95),  # vertebra, bone-like
    (0.15, 0.15, 0.18, 0.12, 0.60),  # organ
]


class _Phantom:
    """Slice images of a phantom, with the geometry computed once for all slices.

    Each ellipse's normalised radius map is precomputed; a slice only compares it with a
    slice-dependent threshold, so a 512x512 slice costs a few milliseconds.
    """

    def __init__(self, rows: int, columns: int, max_value: int, salt: int) -> None:
        y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
        x = np.linspace(-1.0, 1.0, columns, dtype=np.float32)[None, :]
        self.shape = (rows, columns)
        self.radii = [((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 for cx, cy, a, b, _ in _ELLIPSES]
        self.levels = [round(level * max_value) for *_, level in _ELLIPSES]
        self.max_value = max_value
        self.noise_max = max(2, max_value // 512)
        self.salt = salt
        self.dtype = np.uint16 if max_value > 255 else np.uint8

    def slice(self, z: float, series_index: int, instance_index: int) -> np.ndarray:
        """Image for relative position z in [0, 1]: ellipses grow and shrink along the study."""
        scale = 0.75 + 0.25 * np.sin(np.pi * z)  # 0.75 at the ends, 1.0 in the middle
        image = np.zeros(self.shape, dtype=np.int32)
        for radius, level in zip(self.radii, self.levels, strict=False):
            image[radius <= scale * scale] = level
        seed = (self.salt, series_index, instance_index)
        rng = np.random.default_rng(seed)
        image += rng.integers(0, self.noise_max, image.shape, dtype=np.int32)
        # Tag in the first row: guarantees distinct bytes even for tiny or identical slices.
        tag = (series_index << 16) | instance_index
        bits = min(32, image.shape[1])
        image[0, :bits] = ((tag >> np.arange(bits)) & 1) * self.max_value
        return np.clip(image, 0, self.max_value).astype(self.dtype)


def _now() -> tuple[str, str]:
    now = datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _sop_class(modality: str) -> str:
    return SOP_CLASSES.get(modality.upper(), SecondaryCaptureImageStorage)


def _base_dataset(
    *,
    modality: str,
    patient_id: str,
    patient_name: str,
    birth_date: str,
    accession: str,
    study_uid: str,
    description: str,
) -> Dataset:
    """Patient and study attributes shared by every instance of the study."""
    date, time = _now()
    ds = Dataset()
    ds.SOPClassUID = _sop_class(modality)
    ds.StudyInstanceUID = study_uid
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth_date
    ds.PatientSex = "O"
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
    ds.StudyDescription = description
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.Manufacturer = "IMEX SYNTHETIC"
    ds.InstitutionName = "IMEX TEST HOSPITAL"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    if ds.SOPClassUID == CTImageStorage:
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
    elif ds.SOPClassUID == MRImageStorage:
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "500"
        ds.EchoTime = "15"
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = "1.5"
    else:
        ds.ConversionType = "WSD"
    return ds


def _image_attributes(ds: Dataset, rows: int, columns: int, bits: int) -> None:
    """Image Pixel module plus the display attributes viewers need to show the phantom."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16 if bits == 16 else 8
    ds.BitsStored = 12 if bits == 16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    spacing = round(FIELD_OF_VIEW_MM / max(rows, columns), 6)
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = SLICE_THICKNESS_MM
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if ds.Modality == "CT" and bits == 16:
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
    else:
        top = (1 << ds.BitsStored) - 1
        ds.WindowCenter, ds.WindowWidth = top // 2, top


def _apply_extra(ds: Dataset, extra: dict[str, object]) -> None:
    """Set attributes by keyword; None removes one (e.g. to build a defective instance)."""
    for keyword, value in extra.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", SecondaryCaptureImageStorage)
    meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "IMEX_SAMPLES"
    return meta


def make_study(
    out_dir: Path,
    *,
    series: int = 1,
    instances_per_series: int = 10,
    rows: int = 64,
    columns: int = 64,
    modality: str = "CT",
    patient_id: str = "TEST001",
    patient_name: str = "TEST^PATIENT",
    birth_date: str = "19700101",
    accession: str = "ACC001",
    study_uid: str | None = None,
    description: str = "SYNTHETIC STUDY",
    extra: dict[str, object] | None = None,
    bits: int = 16,
) -> list[Path]:
    """Write one synthetic study as `<series>/<instance>.dcm` files; return paths in order.

    UIDs are new on every call (a fresh study each time) unless `study_uid` is given; pixel data
    are deterministic for the same patient, accession, study UID and position, and differ between
    all instances. `extra` sets more attributes by keyword on every instance (None deletes).
    """
    if bits not in (8, 16):
        raise ValueError("bits must be 8 or 16")
    if series < 1 or instances_per_series < 1:
        raise ValueError("series and instances_per_series must be at least 1")
    out_dir = Path(out_dir)
    salt = zlib.crc32(f"{patient_id}|{accession}|{study_uid or ''}".encode())
    study_uid = study_uid or generate_uid()
    base = _base_dataset(
        modality=modality.upper(),
        patient_id=patient_id,
        patient_name=patient_name,
        birth_date=birth_date,
        accession=accession,
        study_uid=study_uid,
        description=description,
    )
    _image_attributes(base, rows, columns, bits)
    max_value = (1 << base.BitsStored) - 1
    phantom = _Phantom(rows, columns, max_value, salt)
    frame_of_reference = generate_uid()
    origin_x = -columns * float(base.PixelSpacing[1]) / 2
    origin_y = -rows * float(base.PixelSpacing[0]) / 2

    paths: list[Path] = []
    for s in range(1, series + 1):
        series_uid = generate_uid()
        series_dir = out_dir / f"{s:03d}"
        series_dir.mkdir(parents=True, exist_ok=True)
        for i in range(1, instances_per_series + 1):
            ds = Dataset()
            ds.update(base)
            ds.SOPInstanceUID = generate_uid()
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_of_reference
            ds.SeriesNumber = s
            ds.InstanceNumber = i
            ds.SeriesDescription = f"{modality.upper()} SERIES {s}"
            z = -i * SLICE_THICKNESS_MM
            ds.ImagePositionPatient = [origin_x, origin_y, z]
            ds.SliceLocation = z
            rel = (i - 1) / max(1, instances_per_series - 1)
            ds.PixelData = phantom.slice(rel, s, i).tobytes()
            if extra:
                _apply_extra(ds, extra)
            ds.file_meta = _file_meta(ds)
            path = series_dir / f"{i:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def make_ct_study(out_dir: Path, instances: int = 300, rows: int = 512, columns: int = 512, **kw: object) -> list[Path]:
    """A realistic single-series CT (300 x 512x512 x 16 bit is about 158 MB) for benchmarks."""
    return make_study(
        out_dir,
        series=1,
        instances_per_series=instances,
        rows=rows,
        columns=columns,
        modality="CT",
        **kw,  # type: ignore[arg-type]
    )


# -- realistic studies (the demo) ---------------------------------------------------------------------
# make_study's phantom only has to differ per instance; these look like what they are, so the viewer's
# presets (soft tissue, lung, bone, brain) show anatomy: a CT in Hounsfield units, an MR in 12 bits and
# an ultrasound cine loop in colour. All are deterministic for the same patient, accession and position.


def _grid(rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates: x left to right and y top (anterior) to bottom, both -1..1."""
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, columns, dtype=np.float32)[None, :]
    return x, y


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Mask of the pixels inside an ellipse (empty when an axis is zero)."""
    if a <= 0 or b <= 0:
        return np.zeros(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0


def _study_base(
    modality: str,
    sop_class: str,
    *,
    patient_id: str,
    patient_name: str,
    birth_date: str,
    sex: str,
    accession: str,
    study_uid: str,
    description: str,
    study_date: str | None,
) -> Dataset:
    """make_study's shared attributes, with the SOP class, sex and (for a prior) the date of the study."""
    ds = _base_dataset(
        modality=modality,
        patient_id=patient_id,
        patient_name=patient_name,
        birth_date=birth_date,
        accession=accession,
        study_uid=study_uid,
        description=description,
    )
    ds.SOPClassUID = sop_class
    if sop_class != SecondaryCaptureImageStorage and "ConversionType" in ds:
        del ds.ConversionType
    ds.PatientSex = sex
    ds.InstitutionName = "IMEX DEMO HOSPITAL"
    ds.ReferringPhysicianName = "DEMO^REFERRER"
    if study_date:
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    return ds


def _save(ds: Dataset, extra: dict[str, object] | None, path: Path) -> Path:
    if extra:
        _apply_extra(ds, extra)
    ds.file_meta = _file_meta(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _grey_pixels(ds: Dataset, rows: int, columns: int, spacing_mm: float, thickness_mm: float) -> None:
    """Image Pixel and Image Plane attributes of a 12-bit greyscale slice."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.SliceThickness = thickness_mm
    ds.SpacingBetweenSlices = thickness_mm
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PatientPosition = "HFS"


_RIB_ANGLES = np.radians([-150.0, -120.0, -60.0, -30.0, 0.0, 180.0, 30.0, 150.0, 60.0, 120.0])


def _body_ct_slice(x: np.ndarray, y: np.ndarray, rel: float, rng: np.random.Generator) -> np.ndarray:
    """One axial slice in Hounsfield units at relative position rel (0 upper chest, 1 upper abdomen): a body
    of soft tissue in a rim of fat, lungs of air with vessels, heart, aorta, ribs, a vertebra; the lungs and
    heart give way to liver and kidneys lower down."""
    hu = np.full(np.broadcast_shapes(x.shape, y.shape), -1000.0, dtype=np.float32)  # air around the patient
    hu[_ellipse(x, y, 0.0, 0.02, 0.80, 0.58)] = -100.0  # subcutaneous fat
    inner = _ellipse(x, y, 0.0, 0.02, 0.73, 0.51)
    hu[inner] = 45.0  # muscle and organs
    chest = float(np.clip(1.15 - 1.5 * rel, 0.0, 1.0))
    abdomen = float(np.clip((rel - 0.35) / 0.4, 0.0, 1.0))
    if abdomen > 0:  # the patient's right is on the image's left
        hu[_ellipse(x, y, -0.30, 0.0, 0.36 * abdomen, 0.34 * abdomen) & inner] = 60.0  # liver
        hu[_ellipse(x, y, 0.33, -0.12, 0.13 * abdomen, 0.10 * abdomen)] = -950.0  # gas in the stomach
        for side in (-1.0, 1.0):
            hu[_ellipse(x, y, side * 0.30, 0.28, 0.08 * abdomen, 0.11 * abdomen)] = 30.0  # kidneys
    if chest > 0:
        size = chest**0.5
        for side in (-1.0, 1.0):
            lung = _ellipse(x, y, side * 0.36, -0.04, 0.25 * size, 0.34 * size)
            hu[lung] = -860.0
            for _ in range(14):  # vessels seen end-on
                vx = side * 0.36 + rng.uniform(-0.2, 0.2) * size
                vy = -0.04 + rng.uniform(-0.28, 0.28) * size
                radius = rng.uniform(0.006, 0.016)
                hu[_ellipse(x, y, vx, vy, radius, radius) & lung] = 40.0
        hu[_ellipse(x, y, 0.08, -0.08, 0.20 * chest, 0.21 * chest)] = 40.0  # heart
    hu[_ellipse(x, y, 0.05, 0.19, 0.045, 0.045)] = 50.0  # aorta
    if chest > 0.2:
        for angle in _RIB_ANGLES:
            rx, ry = 0.69 * np.cos(angle), 0.02 + 0.48 * np.sin(angle)
            hu[_ellipse(x, y, float(rx), float(ry), 0.03, 0.024)] = 700.0
    hu[_ellipse(x, y, 0.0, 0.33, 0.095, 0.085)] = 900.0  # vertebral body: cortex
    hu[_ellipse(x, y, 0.0, 0.33, 0.075, 0.065)] = 420.0  # and cancellous bone
    hu[_ellipse(x, y, 0.0, 0.47, 0.075, 0.055)] = 800.0  # vertebral arch
    hu[_ellipse(x, y, 0.0, 0.46, 0.035, 0.03)] = 15.0  # spinal canal
    hu[_ellipse(x, y, 0.0, 0.55, 0.022, 0.045)] = 750.0  # spinous process
    hu += rng.normal(0.0, 8.0, hu.shape).astype(np.float32)  # quantum noise
    return hu


def make_body_ct(
    out_dir: Path,
    *,
    slices: int = 32,
    rows: int = 256,
    columns: int = 256,
    patient_id: str = "TEST001",
    patient_name: str = "TEST^PATIENT",
    birth_date: str = "19700101",
    sex: str = "O",
    accession: str = "ACC001",
    study_uid: str | None = None,
    description: str = "CT CHEST ABDOMEN",
    study_date: str | None = None,
    extra: dict[str, object] | None = None,
) -> list[Path]:
    """A one-series axial CT of chest and upper abdomen in Hounsfield units (stored + RescaleIntercept
    -1024): air about -1000, fat -100, soft tissue 30-60, bone 400-900; soft tissue and lung windows.
    Files are `001/<instance>.dcm`."""
    if slices < 1:
        raise ValueError("slices must be at least 1")
    study_uid = study_uid or generate_uid()
    base = _study_base(
        "CT",
        CTImageStorage,
        patient_id=patient_id,
        patient_name=patient_name,
        birth_date=birth_date,
        sex=sex,
        accession=accession,
        study_uid=study_uid,
        description=description,
        study_date=study_date,
    )
    spacing = round(FIELD_OF_VIEW_MM / max(rows, columns), 6)
    thickness = 5.0
    _grey_pixels(base, rows, columns, spacing, thickness)
    base.RescaleIntercept, base.RescaleSlope, base.RescaleType = -1024, 1, "HU"
    base.WindowCenter, base.WindowWidth = [40, -600], [400, 1500]
    base.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
    base.BodyPartExamined = "CHEST"
    base.ConvolutionKernel = "STANDARD"
    base.SeriesInstanceUID = generate_uid()
    base.FrameOfReferenceUID = generate_uid()
    base.SeriesNumber = 1
    base.SeriesDescription = "AXIAL 5mm"
    x, y = _grid(rows, columns)
    salt = zlib.crc32(f"{patient_id}|{accession}|{study_uid}".encode())
    origin_x, origin_y = -columns * spacing / 2, -rows * spacing / 2
    paths = []
    for i in range(1, slices + 1):
        rel = (i - 1) / max(1, slices - 1)
        hu = _body_ct_slice(x, y, rel, np.random.default_rng((salt, i)))
        ds = Dataset()
        ds.update(base)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i
        z = -i * thickness
        ds.ImagePositionPatient = [origin_x, origin_y, z]
        ds.SliceLocation = z
        ds.PixelData = np.clip(np.rint(hu + 1024.0), 0, 4095).astype(np.uint16).tobytes()
        paths.append(_save(ds, extra, Path(out_dir) / "001" / f"{i:05d}.dcm"))
    return paths


@dataclass(frozen=True)
class _MrSequence:
    """An MR sequence: the signal of each tissue (0..4095), its window and acquisition parameters."""

    description: str
    sequence: str | list[str]
    tr: str
    te: str
    levels: dict[str, int]
    window: tuple[int, int]
    ti: str = ""


_MR_SEQUENCES = {
    "T1": _MrSequence(
        "T1 AXIAL",
        "SE",
        "500",
        "12",
        {"skin": 1500, "fat": 3300, "bone": 120, "csf": 450, "grey": 1750, "white": 2500},
        (1700, 3400),
    ),
    "T2": _MrSequence(
        "T2 AXIAL",
        "SE",
        "4000",
        "100",
        {"skin": 1200, "fat": 2300, "bone": 120, "csf": 3700, "grey": 1900, "white": 1250},
        (1900, 3800),
    ),
    "FLAIR": _MrSequence(
        "FLAIR AXIAL",
        ["SE", "IR"],
        "9000",
        "120",
        {"skin": 1200, "fat": 2000, "bone": 120, "csf": 250, "grey": 2000, "white": 1500},
        (1500, 3000),
        ti="2500",
    ),
}


def _head_mr_slice(
    x: np.ndarray, y: np.ndarray, rel: float, levels: dict[str, int], rng: np.random.Generator
) -> np.ndarray:
    """One axial slice of a head (0 the vertex, 1 the skull base): scalp, fat, skull, CSF, folded grey
    matter over white matter, the ventricles in the middle slices; with Rician-like noise."""
    size = 0.75 + 0.25 * float(np.sin(np.pi * (0.15 + 0.7 * rel)))
    a, b = 0.68 * size, 0.84 * size
    rho = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    theta = np.arctan2(y / b, x / a)
    signal = np.zeros(rho.shape, dtype=np.float32)
    gyri = 0.02 * np.sin(14 * theta)
    for limit, tissue in (
        (1.0, "skin"),
        (0.97, "fat"),
        (0.93, "bone"),
        (0.88, "csf"),
        (0.85 + gyri, "grey"),
        (0.68 + 1.5 * gyri, "white"),
    ):
        signal[rho <= limit] = levels[tissue]
    signal[(np.abs(x) < 0.012) & (rho < 0.88) & (np.abs(y) > 0.25 * size)] = levels["csf"]  # the midline fissure
    ventricles = float(np.clip(1.0 - abs(rel - 0.5) * 3.0, 0.0, 1.0))
    for side in (-1.0, 1.0):
        signal[_ellipse(x, y, side * 0.09, -0.05, 0.05 * ventricles, 0.2 * ventricles)] = levels["csf"]
    noisy = np.hypot(signal + rng.normal(0.0, 25.0, signal.shape), rng.normal(0.0, 25.0, signal.shape))
    return np.clip(np.rint(noisy), 0, 4095).astype(np.uint16)


def make_head_mr(
    out_dir: Path,
    *,
    sequences: Iterable[str] = ("T1", "T2", "FLAIR"),
    slices: int = 12,
    rows: int = 256,
    columns: int = 256,
    patient_id: str = "TEST001",
    patient_name: str = "TEST^PATIENT",
    birth_date: str = "19700101",
    sex: str = "O",
    accession: str = "ACC001",
    study_uid: str | None = None,
    description: str = "MR HEAD",
    study_date: str | None = None,
    extra: dict[str, object] | None = None,
) -> list[Path]:
    """An MR head with one axial series per sequence (T1, T2, FLAIR), 12-bit values in 16 bits, each with
    its own window. Files are `<series>/<instance>.dcm`."""
    names = list(sequences)
    unknown = [n for n in names if n not in _MR_SEQUENCES]
    if unknown or not names or slices < 1:
        raise ValueError(f"sequences are some of {', '.join(_MR_SEQUENCES)} and slices at least 1")
    study_uid = study_uid or generate_uid()
    base = _study_base(
        "MR",
        MRImageStorage,
        patient_id=patient_id,
        patient_name=patient_name,
        birth_date=birth_date,
        sex=sex,
        accession=accession,
        study_uid=study_uid,
        description=description,
        study_date=study_date,
    )
    spacing = round(230.0 / max(rows, columns), 6)
    thickness = 5.0
    _grey_pixels(base, rows, columns, spacing, thickness)
    base.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    base.BodyPartExamined = "HEAD"
    base.FrameOfReferenceUID = generate_uid()
    x, y = _grid(rows, columns)
    salt = zlib.crc32(f"{patient_id}|{accession}|{study_uid}".encode())
    origin_x, origin_y = -columns * spacing / 2, -rows * spacing / 2
    paths = []
    for s, name in enumerate(names, start=1):
        seq = _MR_SEQUENCES[name]
        series_uid = generate_uid()
        for i in range(1, slices + 1):
            rel = (i - 1) / max(1, slices - 1)
            ds = Dataset()
            ds.update(base)
            ds.SOPInstanceUID = generate_uid()
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = s
            ds.SeriesDescription = seq.description
            ds.ScanningSequence = seq.sequence
            ds.RepetitionTime, ds.EchoTime = seq.tr, seq.te
            if seq.ti:
                ds.InversionTime = seq.ti
                ds.SequenceVariant = "SK"
            ds.WindowCenter, ds.WindowWidth = seq.window
            ds.InstanceNumber = i
            z = 60.0 - i * thickness
            ds.ImagePositionPatient = [origin_x, origin_y, z]
            ds.SliceLocation = z
            ds.PixelData = _head_mr_slice(x, y, rel, seq.levels, np.random.default_rng((salt, s, i))).tobytes()
            paths.append(_save(ds, extra, Path(out_dir) / f"{s:03d}" / f"{i:05d}.dcm"))
    return paths


def _us_frames(frames: int, rows: int, columns: int, rng: np.random.Generator) -> np.ndarray:
    """An echocardiogram-like cine loop (frames, rows, columns, 3) of 8-bit RGB: speckle in a sector, a
    chamber that contracts and relaxes once per loop, and colour Doppler inflow (red) and outflow (blue)."""
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float32)
    apex_x, apex_y = columns / 2.0, 8.0
    depth = float(rows - 14)
    r = np.hypot(xx - apex_x, yy - apex_y)
    angle = np.arctan2(xx - apex_x, yy - apex_y)
    sector = (np.abs(angle) < 0.75) & (r < depth)
    tissue_speckle = rng.rayleigh(0.45, (rows, columns)).astype(np.float32)
    out = np.zeros((frames, rows, columns, 3), dtype=np.uint8)
    centre_x, centre_y = apex_x, apex_y + 0.55 * depth
    for f in range(frames):
        phase = 0.5 - 0.5 * np.cos(2 * np.pi * f / frames)  # 0 relaxed .. 1 contracted
        a, b = 0.2 * columns * (1 - 0.22 * phase), 0.24 * depth * (1 - 0.18 * phase)
        rho = np.sqrt(((xx - centre_x) / a) ** 2 + ((yy - centre_y) / b) ** 2)
        echo = 0.32 * np.exp(-r / (1.6 * depth)) * np.ones_like(r)
        echo[(rho > 1.0) & (rho < 1.25)] = 0.85  # myocardium
        echo[rho <= 1.0] = 0.04  # blood
        speckle = 0.7 * tissue_speckle + 0.3 * rng.rayleigh(0.45, (rows, columns)).astype(np.float32)
        grey = np.clip(echo * speckle * 255.0, 0, 255).astype(np.uint8)
        grey[~sector] = 0
        grey[(np.abs(xx - (columns - 10)) < 3) & (yy % 20 < 1) & (yy < depth)] = 200  # depth scale
        frame = np.repeat(grey[:, :, None], 3, axis=2)
        jet = (rho <= 0.9) & (np.abs(xx - centre_x) < 0.35 * a) & sector
        speed = np.clip(1.0 - rho, 0.0, 1.0) * 255.0
        if f < frames // 2:  # filling: flow towards the probe, red
            frame[jet, 0], frame[jet, 1], frame[jet, 2] = np.clip(90 + speed[jet], 0, 255), 30, 20
        else:  # emptying: flow away, blue
            frame[jet, 0], frame[jet, 1], frame[jet, 2] = 20, 60, np.clip(90 + speed[jet], 0, 255)
        out[f] = frame
    return out


def make_us_cine(
    out_dir: Path,
    *,
    frames: int = 16,
    rows: int = 240,
    columns: int = 320,
    patient_id: str = "TEST001",
    patient_name: str = "TEST^PATIENT",
    birth_date: str = "19700101",
    sex: str = "O",
    accession: str = "ACC001",
    study_uid: str | None = None,
    description: str = "ECHOCARDIOGRAM",
    study_date: str | None = None,
    extra: dict[str, object] | None = None,
) -> list[Path]:
    """One Ultrasound Multi-frame Image (RGB, `frames` frames at 25 per second) of a beating heart with
    colour Doppler, as `001/00001.dcm`."""
    if frames < 2:
        raise ValueError("a cine loop has at least 2 frames")
    study_uid = study_uid or generate_uid()
    ds = _study_base(
        "US",
        UltrasoundMultiFrameImageStorage,
        patient_id=patient_id,
        patient_name=patient_name,
        birth_date=birth_date,
        sex=sex,
        accession=accession,
        study_uid=study_uid,
        description=description,
        study_date=study_date,
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC"]
    ds.BodyPartExamined = "HEART"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDescription = "PLAX CINE"
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063  # Frame Time
    ds.FrameTime = 40.0
    ds.CineRate = 25
    ds.RecommendedDisplayFrameRate = 25
    ds.LossyImageCompression = "00"
    salt = zlib.crc32(f"{patient_id}|{accession}|{study_uid}".encode())
    ds.PixelData = _us_frames(frames, rows, columns, np.random.default_rng(salt)).tobytes()
    return [_save(ds, extra, Path(out_dir) / "001" / "00001.dcm")]


def dcmtk_available(*tools: str) -> bool:
    """True when the named dcmtk command line tools are on PATH."""
    return all(shutil.which(tool) for tool in tools or ("dcmcjpeg", "dcmcrle"))


def _output_paths(paths: list[Path], out_dir: Path) -> list[Path]:
    """Mirror the inputs' layout below their common folder, so series folders survive."""
    paths = [Path(p).resolve() for p in paths]
    if not paths:
        return []
    common = Path(os.path.commonpath([p.parent for p in paths]))
    targets = [Path(out_dir) / p.relative_to(common) for p in paths]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    return targets


def _run_tool(command: list[str], pairs: Iterable[tuple[Path, Path]]) -> None:
    """Run a dcmtk converter on each (input, output) pair, a few processes at a time."""

    def convert(pair: tuple[Path, Path]) -> None:
        subprocess.run([*command, str(pair[0]), str(pair[1])], check=True, capture_output=True)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(convert, pairs))


def _convert(paths: list[Path], out_dir: Path, tool: str, command: list[str]) -> list[Path]:
    if not dcmtk_available(tool):
        raise RuntimeError(f"dcmtk's {tool} is not installed")
    targets = _output_paths(paths, out_dir)
    _run_tool(command, zip([Path(p) for p in paths], targets, strict=False))
    return targets


def compress_rle(paths: list[Path], out_dir: Path) -> list[Path]:
    """RLE Lossless copies (same SOP Instance UIDs) mirrored under out_dir.

    dcmtk's dcmcrle (about 35 ms per 512x512 slice, run in parallel) is used when installed:
    pydicom's pure-Python encoder needs about 90 ms per slice in one thread, so it is only the
    fallback. Inputs from one folder land directly in out_dir.
    """
    if dcmtk_available("dcmcrle"):
        return _convert(paths, out_dir, "dcmcrle", ["dcmcrle", "--uid-never"])
    return _pydicom_rle(paths, out_dir)


def _pydicom_rle(paths: list[Path], out_dir: Path) -> list[Path]:
    from pydicom import dcmread
    from pydicom.uid import RLELossless

    targets = _output_paths(paths, out_dir)
    for source, target in zip(paths, targets, strict=False):
        ds = dcmread(source)
        ds.compress(RLELossless, generate_instance_uid=False)
        ds.save_as(target, enforce_file_format=True)
    return targets


def compress_jpeg_lossless(paths: list[Path], out_dir: Path) -> list[Path]:
    """JPEG Lossless process 14 SV1 copies (1.2.840.10008.1.2.4.70) via dcmtk's dcmcjpeg."""
    return _convert(paths, out_dir, "dcmcjpeg", ["dcmcjpeg", "+e1", "--uid-never"])
