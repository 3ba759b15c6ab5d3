"""Stored Part 10 bytes to pixel values: one frame at a time, compressed transfer syntaxes decoded with
pylibjpeg and its plugins (JPEG, JPEG-LS, JPEG 2000) or pydicom itself (RLE, deflate), colour converted
to RGB, and grey values through the Modality LUT (Rescale Slope/Intercept) so windows are in real units."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array


class NotAnImage(ValueError):
    """The instance has no pixel data to render (a report, a waveform...)."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame: grey values (2D) in modality units, or stored integers with their linear
    `rescale` (slope, intercept) to modality units; or RGB (uint8/uint16, 3D)."""

    pixels: np.ndarray
    monochrome1: bool
    window: tuple[float, float] | None  # (center, width) from the instance, if it carries one
    bits_stored: int
    rescale: tuple[float, float] | None = None

    def modality_range(self) -> tuple[float, float]:
        low, high = float(self.pixels.min()), float(self.pixels.max())
        if self.rescale is not None:
            slope, intercept = self.rescale
            low, high = sorted((low * slope + intercept, high * slope + intercept))
        return low, high

    @property
    def is_colour(self) -> bool:
        return self.pixels.ndim == 3


def read(data: bytes) -> Dataset:
    return dcmread(BytesIO(data), force=True)


def has_pixels(ds: Dataset) -> bool:
    return "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds


def frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _first(value: object) -> float | None:
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def stored_window(ds: Dataset) -> tuple[float, float] | None:
    """The instance's first Window Center/Width pair, when it has a usable one."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None or width < 1:
        return None
    return center, width


def decode_frame(ds: Dataset, index: int) -> Frame:
    """Frame `index` (0-based) of the instance."""
    if not has_pixels(ds):
        raise NotAnImage("the instance has no pixel data")
    count = frame_count(ds)
    if not 0 <= index < count:
        raise IndexError(f"frame {index + 1} does not exist (the instance has {count})")
    raw = pixel_array(ds, index=index if count > 1 else None)  # YBR is converted to RGB here
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(raw, ds)
        return Frame(rgb, False, None, 16)
    if raw.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) > 1:
        return Frame(raw, False, None, int(ds.get("BitsStored", 8)))
    monochrome1 = photometric == "MONOCHROME1"
    if raw.dtype.kind in "iu" and raw.dtype.itemsize <= 2 and "ModalityLUTSequence" not in ds:
        # keep the stored integers: windowing then goes through a lookup table (rescale folded in)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        return Frame(raw, monochrome1, stored_window(ds), int(ds.get("BitsStored", 16)), (slope, intercept))
    grey = apply_modality_lut(raw, ds).astype(np.float32, copy=False)
    return Frame(grey, monochrome1, stored_window(ds), int(ds.get("BitsStored", 16)))
