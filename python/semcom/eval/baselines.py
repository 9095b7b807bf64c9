"""Classical references the semantic frame is compared against."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from semcom.eval.metrics import psnr_db


@dataclass
class JpegPoint:
    quality: int
    bytes: int
    key_psnr_db: float


def jpeg_roundtrip(image: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
    """Whole-image baseline JPEG (4:2:0) at ``quality`` 1..95: its bytes and decoded pixels."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    data = buffer.getvalue()
    return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def jpeg_at_key_psnr(image: np.ndarray, key_mask: np.ndarray, target_psnr_db: float) -> JpegPoint:
    """Smallest whole-image JPEG whose key-region PSNR reaches ``target_psnr_db``.

    Bisection over quality (key PSNR grows with quality); if even quality 95 falls short, that point
    is returned and its PSNR shows it.
    """
    def point(quality: int) -> JpegPoint:
        data, decoded = jpeg_roundtrip(image, quality)
        return JpegPoint(quality, len(data), psnr_db(image, decoded, key_mask))

    low, high = 1, 95
    best = point(high)
    if best.key_psnr_db < target_psnr_db:
        return best
    while low < high:
        middle = (low + high) // 2
        candidate = point(middle)
        if candidate.key_psnr_db >= target_psnr_db:
            best, high = candidate, middle
        else:
            low = middle + 1
    return best if best.quality == low else point(low)
