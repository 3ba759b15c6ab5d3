"""Rendering stored instances, with caches: parsed instances (so the frames of a multi-frame instance are
decoded from one read), decoded frames (so a new window re-renders without decoding again) and rendered
pictures (so scrolling back through a series costs nothing)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from imex.render import decode, image
from imex.render.cache import ByteLRU
from imex.store import BlobStore

MB = 1024 * 1024


@dataclass(frozen=True)
class Options:
    """How to render: window (None: the instance's own, else the full range), viewport, format, quality."""

    window: image.Window | None = None
    viewport: image.Viewport | None = None
    media_type: str = "image/jpeg"
    quality: int = 90
    invert: bool = False


class Renderer:
    def __init__(
        self, store: BlobStore, *, datasets_mb: int = 128, frames_mb: int = 256, pictures_mb: int = 128
    ) -> None:
        self.store = store
        self.datasets: ByteLRU[tuple[Dataset, int]] = ByteLRU(datasets_mb * MB, lambda v: v[1])
        self.frames: ByteLRU[decode.Frame] = ByteLRU(frames_mb * MB, lambda f: int(f.pixels.nbytes))
        self.pictures: ByteLRU[bytes] = ByteLRU(pictures_mb * MB, len)

    def dataset(self, blob_key: str) -> Dataset:
        def load() -> tuple[Dataset, int]:
            data = self.store.read(blob_key)
            return decode.read(data), len(data)

        return self.datasets.get_or_make(blob_key, load)[0]

    def frame(self, blob_key: str, index: int) -> decode.Frame:
        return self.frames.get_or_make((blob_key, index), lambda: decode.decode_frame(self.dataset(blob_key), index))

    def frame_count(self, blob_key: str) -> int:
        return decode.frame_count(self.dataset(blob_key))

    def render(self, blob_key: str, index: int, options: Options) -> bytes:
        """Frame `index` (0-based) as PNG or JPEG bytes."""

        def make() -> bytes:
            frame = self.frame(blob_key, index)
            picture = image.to_8bit(frame, options.window, options.invert)
            return image.encode(picture, options.media_type, options.viewport, options.quality)

        return self.pictures.get_or_make((blob_key, index, options), make)
