"""Classical references the semantic frame is compared against."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from semcom.codec.rate import largest_fitting
from semcom.eval.metrics import psnr_db, ssim


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


@dataclass
class KeyRegionPoint:
    """One coding of an image's key region: what it cost and how faithful the key region came out."""

    codec: str
    quality: int
    bytes: int
    key_psnr_db: float
    key_ssim: float


def pipeline_point(image: np.ndarray, key_mask: np.ndarray, key: str, quality: int, config=None,
                   key_options: dict | None = None) -> KeyRegionPoint:
    """The pipeline with key codec ``key`` at ``quality``: frame bytes (all PDUs) and key-region quality."""
    from dataclasses import replace

    from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder

    config = replace(config or PipelineConfig(), key=key, key_options={**(key_options or {}), "quality": quality})
    encoded = SemanticEncoder(config).encode(image, key_mask=key_mask)
    recon = SemanticDecoder(config).decode(encoded.frame, seed=0)
    size = sum(len(p) for p in encoded.to_pdus(config.pdu_bytes))
    return KeyRegionPoint(key, quality, size, psnr_db(image, recon.image, encoded.key_mask),
                          ssim(image, recon.image, encoded.key_mask))


def pipeline_at_bytes(image: np.ndarray, key_mask: np.ndarray, key: str, budget_bytes: int,
                      max_quality: int = 100, config=None) -> KeyRegionPoint | None:
    """The pipeline with key codec ``key`` at its largest quality (1..``max_quality``, the codec's top
    level: 100 for webp/jpeg) whose frame fits ``budget_bytes``; None when even quality 1 does not."""
    def fits(quality: int) -> KeyRegionPoint | None:
        point = pipeline_point(image, key_mask, key, quality, config)
        return point if point.bytes <= budget_bytes else None

    found = largest_fitting(1, max_quality, fits)
    return None if found is None else found[1]


def jpeg_at_bytes(image: np.ndarray, key_mask: np.ndarray, budget_bytes: int) -> KeyRegionPoint | None:
    """Whole-image JPEG at its largest quality (1..95) within ``budget_bytes``, scored on the key region."""
    def fits(quality: int):
        data, decoded = jpeg_roundtrip(image, quality)
        return (data, decoded) if len(data) <= budget_bytes else None

    found = largest_fitting(1, 95, fits)
    if found is None:
        return None
    quality, (data, decoded) = found
    return KeyRegionPoint("jpeg-image", quality, len(data), psnr_db(image, decoded, key_mask),
                          ssim(image, decoded, key_mask))
