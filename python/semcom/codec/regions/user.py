"""Key regions the user chooses: a mask image/array, or a box. For when saliency guesses wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semcom.codec.imageio import open_image
from semcom.codec.registry import register


def _check_image(image: np.ndarray) -> tuple[int, int]:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
    return image.shape[0], image.shape[1]


def _read_mask_file(path: Path) -> np.ndarray:
    """Any image file -> (H, W) uint8; ValueError naming the file when it is missing or not an image."""
    return np.asarray(open_image(path, what=f"key mask {path}").convert("L"))


@register("regions", "mask")
class MaskSplitter:
    """A fixed key mask: a path to an image file (any mode) or an (H, W) array; non-zero = key."""

    def __init__(self, mask: str | Path | np.ndarray):
        if isinstance(mask, (str, Path)):
            mask = _read_mask_file(Path(mask))
        mask = np.asarray(mask)
        if mask.ndim == 3:                   # e.g. an RGB(A) array: any non-zero channel marks key
            mask = mask.any(axis=2)
        if mask.ndim != 2:
            raise ValueError(f"key mask must be (H, W), got shape {mask.shape}")
        self.mask = mask != 0
        if not self.mask.any():
            raise ValueError("key mask is empty: mark the key region with non-zero pixels")

    def split(self, image: np.ndarray) -> np.ndarray:
        """image: (H, W, 3) -> (H, W) bool copy of the mask; sizes must match exactly."""
        height, width = _check_image(image)
        if self.mask.shape != (height, width):
            mh, mw = self.mask.shape
            raise ValueError(f"key mask is {mw}x{mh} (WxH) but the image is {width}x{height}")
        return self.mask.copy()


@register("regions", "box")
class BoxSplitter:
    """A rectangular key region ``box=(x, y, w, h)`` in pixels, clipped to the image."""

    def __init__(self, box: tuple[int, int, int, int]):
        if len(box) != 4:
            raise ValueError(f"box must be (x, y, w, h), got {box!r}")
        self.box = tuple(int(v) for v in box)

    def split(self, image: np.ndarray) -> np.ndarray:
        """image: (H, W, 3) -> (H, W) bool, True inside the clipped box."""
        height, width = _check_image(image)
        x, y, w, h = self.box
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, width), min(y + h, height)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"key box {self.box} (x, y, w, h) lies outside the {width}x{height} image")
        mask = np.zeros((height, width), dtype=bool)
        mask[y0:y1, x0:x1] = True
        return mask
