"""Image quality metrics, whole image and inside the key region (scikit-image underneath)."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

PEAK = 255.0
# PSNR of identical images is infinite; report this ceiling instead so JSON stays valid.
PSNR_CEILING_DB = 100.0


def psnr_db(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of uint8 images (H, W, 3); with ``mask`` (H, W) bool, over the masked pixels only."""
    diff = reference.astype(np.float64) - test.astype(np.float64)
    if mask is not None:
        if not mask.any():
            raise ValueError("PSNR over an empty mask is undefined")
        diff = diff[mask]
    mse = float(np.mean(diff**2))
    return PSNR_CEILING_DB if mse == 0 else min(PSNR_CEILING_DB, 10.0 * np.log10(PEAK**2 / mse))


def ssim(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM (7x7 Gaussian-free window, per channel); with ``mask``, the SSIM map averaged over it."""
    if mask is None:
        return float(structural_similarity(reference, test, channel_axis=2, data_range=PEAK))
    if not mask.any():
        raise ValueError("SSIM over an empty mask is undefined")
    _, ssim_map = structural_similarity(reference, test, channel_axis=2, data_range=PEAK, full=True)
    return float(ssim_map.mean(axis=2)[mask].mean())


def quality_report(reference: np.ndarray, test: np.ndarray, key_mask: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of the whole image and of the key region (key entries absent when it is empty)."""
    report = {"psnr_db": psnr_db(reference, test), "ssim": ssim(reference, test)}
    if key_mask.any():
        report["key_psnr_db"] = psnr_db(reference, test, key_mask)
        report["key_ssim"] = ssim(reference, test, key_mask)
    return report
