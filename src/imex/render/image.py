"""A decoded frame to an 8-bit picture: VOI windowing (PS3.3 C.11.2.1.2: linear, linear exact, sigmoid),
MONOCHROME1 shown inverted, optional inversion, a viewport (region, then scaled to fit), and PNG or JPEG."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image

from imex.render.decode import Frame

FUNCTIONS = ("linear", "linear_exact", "sigmoid")


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class Viewport:
    """Scale to fit in width x height; first crop to the source region (sx, sy, sw, sh) when given."""

    width: int
    height: int
    region: tuple[int, int, int, int] | None = None


def default_window(frame: Frame) -> Window:
    """The instance's own window, else the full range of the frame's values."""
    if frame.window is not None:
        return Window(*frame.window)
    low, high = frame.modality_range()
    return Window((low + high) / 2, max(high - low, 1.0))


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Grey values to 0..255 as PS3.3 C.11.2.1.2 defines each VOI LUT function."""
    c, w = window.center, window.width
    x = values.astype(np.float64, copy=False)
    if window.function == "sigmoid":
        y = 255.0 / (1.0 + np.exp(np.clip(-4.0 * (x - c) / w, -700.0, 700.0)))
    elif window.function == "linear_exact":
        y = np.clip((x - c) / w + 0.5, 0.0, 1.0) * 255.0
    else:
        if w < 1:
            raise ValueError("a linear window needs a width of at least 1")
        y = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0) * 255.0
    return np.rint(y).astype(np.uint8)


def to_8bit(frame: Frame, window: Window | None = None, invert: bool = False) -> np.ndarray:
    """The picture's 8-bit samples: grey (2D) windowed, colour (3D RGB) scaled to 8 bits."""
    if frame.is_colour:
        px = frame.pixels
        if px.dtype != np.uint8:
            shift = max(int(px.dtype.itemsize * 8) - 8, 0)
            px = (px.astype(np.uint32) >> shift).astype(np.uint8) if shift else px.astype(np.uint8)
        out = px
    else:
        chosen = window or default_window(frame)
        if frame.rescale is not None:
            out = _through_lut(frame.pixels, frame.rescale, chosen)
        else:
            out = apply_window(frame.pixels, chosen)
        if frame.monochrome1:
            out = 255 - out
    return 255 - out if invert else out


def _through_lut(stored: np.ndarray, rescale: tuple[float, float], window: Window) -> np.ndarray:
    """Window 8/16-bit stored values with one table lookup: the table holds, for every stored value, the
    rescaled (Slope/Intercept) and windowed output, computed with apply_window itself."""
    unsigned = stored.view(np.uint8 if stored.dtype.itemsize == 1 else np.uint16)
    domain = np.arange(1 << (8 * stored.dtype.itemsize), dtype=np.uint32).astype(unsigned.dtype)
    values = domain.view(stored.dtype).astype(np.float64) * rescale[0] + rescale[1]
    return apply_window(values, window)[unsigned]


def encode(
    picture: np.ndarray, media_type: str = "image/png", viewport: Viewport | None = None, quality: int = 90
) -> bytes:
    image = Image.fromarray(np.ascontiguousarray(picture), "RGB" if picture.ndim == 3 else "L")
    if viewport is not None:
        if viewport.region is not None:
            sx, sy, sw, sh = viewport.region
            image = image.crop((sx, sy, sx + sw, sy + sh))
        scale = min(viewport.width / image.width, viewport.height / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.BILINEAR)
    out = BytesIO()
    if media_type == "image/jpeg":
        image.save(out, "JPEG", quality=max(1, min(quality, 100)))
    else:
        image.save(out, "PNG", compress_level=1)
    return out.getvalue()
