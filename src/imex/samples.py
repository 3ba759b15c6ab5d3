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
    generate_uid,
)

__all__ = [
    "make_study",
    "make_ct_study",
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
