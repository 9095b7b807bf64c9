"""The SKETCH segment: a tiny WebP thumbnail of the whole image that the receiver draws the background from.

Payload (big-endian)::

    codec u8 (1 = WebP) | width u16 | height u16 | coded thumbnail

The text says what colours and grain the background has; the sketch says where things are. At 1/8
of a 512x320 photo (64x40 pixels) it costs a few hundred bytes, and a super-resolver turns it back into
a plausible background (``codec/generate/esrgan.py``). The encoder picks, within the byte budget, the
thumbnail scale and WebP quality whose bicubic upscale is closest to the non-key pixels.
"""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
from PIL import Image

from semcom.constants import MAX_SKETCH_BYTES, MAX_SKETCH_PIXELS, SKETCH_SCALES

SKETCH_PREFIX = struct.Struct(">BHH")     # codec, width, height
WEBP_CODEC_ID = 1
_WEBP_METHOD = 6                          # slowest, smallest: the thumbnail is tiny, so it costs ~2 ms
_COMPARE_SCALE = 4


def budget_bytes(budget: int | float, other_bytes: int) -> int:
    """Byte budget of one sketch copy: ``budget`` bytes (int), or that share (float in (0, 1)) of the
    frame's other bytes; 0 means no sketch."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0:
        raise ValueError(f"sketch budget must be bytes (int >= 0) or a share (float in (0, 1)), got {budget!r}")
    if isinstance(budget, float) and not budget.is_integer():
        if budget >= 1.0:
            raise ValueError(f"a sketch share must be below 1, got {budget}")
        return int(budget * other_bytes)
    return int(budget)


def _webp(thumbnail: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(thumbnail).save(buffer, format="WEBP", quality=quality, method=_WEBP_METHOD)
    return buffer.getvalue()


def _largest_fitting(thumbnail: np.ndarray, max_bytes: int) -> bytes | None:
    """The WebP of the highest quality (binary search over 0..100) that fits ``max_bytes``."""
    best, lo, hi = None, 0, 100
    while lo <= hi:
        quality = (lo + hi) // 2
        data = _webp(thumbnail, quality)
        if len(data) <= max_bytes:
            best, lo = data, quality + 1
        else:
            hi = quality - 1
    return best


def thumbnail_size(width: int, height: int, scale: int) -> tuple[int, int]:
    return max(1, round(width / scale)), max(1, round(height / scale))


def encode_sketch(image: np.ndarray, max_bytes: int, key_mask: np.ndarray | None = None) -> bytes | None:
    """image (H, W, 3) uint8 -> payload of at most ``max_bytes``, or None when nothing useful fits.

    Every scale of ``SKETCH_SCALES`` is tried at its best fitting quality; the one whose bicubic
    upscale has the lowest squared error over the non-key pixels (``key_mask`` False) wins.
    """
    height, width = image.shape[:2]
    max_bytes = min(int(max_bytes), MAX_SKETCH_BYTES) - SKETCH_PREFIX.size
    if max_bytes <= 0:
        return None
    # The candidates are compared at 1/4 resolution (16x fewer pixels; finer than any thumbnail).
    cw, ch = thumbnail_size(width, height, _COMPARE_SCALE)
    reference = cv2.resize(image, (cw, ch), interpolation=cv2.INTER_AREA).astype(np.float32)
    weight = np.ones((ch, cw), np.float32) if key_mask is None or np.all(key_mask) else cv2.resize(
        (~np.asarray(key_mask, bool)).astype(np.float32), (cw, ch), interpolation=cv2.INTER_AREA)
    best, best_error = None, np.inf
    for scale in SKETCH_SCALES:
        w, h = thumbnail_size(width, height, scale)
        if w * h > MAX_SKETCH_PIXELS or (best is not None and min(w, h) < 2):
            continue
        data = _largest_fitting(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), max_bytes)
        if data is None:
            continue
        payload = SKETCH_PREFIX.pack(WEBP_CODEC_ID, w, h) + data
        upscaled = upscale_bicubic(decode_sketch(payload, width, height), cw, ch).astype(np.float32)
        error = float((((upscaled - reference) ** 2).sum(axis=2) * weight).sum())
        if error < best_error:
            best, best_error = payload, error
    return best


def decode_sketch(payload: bytes, frame_width: int, frame_height: int) -> np.ndarray:
    """Payload -> (h, w, 3) uint8 thumbnail; ValueError on anything malformed or larger than the frame."""
    if len(payload) <= SKETCH_PREFIX.size or len(payload) > MAX_SKETCH_BYTES:
        raise ValueError(f"sketch of {len(payload)} bytes is outside 1..{MAX_SKETCH_BYTES - SKETCH_PREFIX.size} "
                         "bytes behind its prefix")
    codec, width, height = SKETCH_PREFIX.unpack_from(payload)
    if codec != WEBP_CODEC_ID:
        raise ValueError(f"unknown sketch codec {codec}")
    if not (1 <= width <= frame_width and 1 <= height <= frame_height and width * height <= MAX_SKETCH_PIXELS):
        raise ValueError(f"sketch of {width}x{height} does not fit a {frame_width}x{frame_height} frame "
                         f"(or exceeds {MAX_SKETCH_PIXELS} pixels)")
    try:
        with Image.open(io.BytesIO(payload[SKETCH_PREFIX.size:]), formats=["WEBP"]) as picture:
            if picture.size != (width, height):      # checked before the pixels are decoded
                raise ValueError(f"sketch codes {picture.size[0]}x{picture.size[1]}, expected {width}x{height}")
            return np.asarray(picture.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"sketch does not decode: {exc}") from None


def upscale_bicubic(sketch: np.ndarray, width: int, height: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (height, width, 3) uint8 bicubic (the baseline the super-resolver must beat)."""
    return cv2.resize(sketch, (width, height), interpolation=cv2.INTER_CUBIC)
