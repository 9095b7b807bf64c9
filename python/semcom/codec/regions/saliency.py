"""Key region from OpenCV spectral-residual saliency, refined into object outlines by GrabCut.

No model weights. Saliency says roughly where the subject is (a blob of about ``key_fraction`` of the
image); GrabCut, seeded with that blob as "probably object", its most salient core as "object" and
the least salient part of the image as "background", moves the outline onto the object's colour edges.
The result keeps its large connected parts, has its holes filled, and must cover between
``MIN_KEY_SHARE`` and ``MAX_KEY_SHARE`` of the image, otherwise the saliency blob is kept.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from semcom.codec.registry import register
from semcom.constants import DEFAULT_KEY_FRACTION

_WORK_SIDE_PX = 256            # saliency and morphology run at this size; the mask is scaled back up
_CENTRE_PRIOR_WEIGHT = 0.35    # photographers centre their subject; a mild prior breaks ties on clutter
_FLAT_SALIENCY_CV = 0.05       # coefficient of variation below which the saliency map says nothing
_SMOOTH_SIGMA_FRAC = 0.06      # Gaussian sigma of the saliency map, as a fraction of the short side
_MORPH_FRAC = 0.08             # closing/opening kernel, as a fraction of the short side
_LARGE_COMPONENT_RATIO = 0.3   # other components at least this share of the largest one are kept too
_FRACTION_SEARCH_STEPS = 12    # bisection steps on the threshold to land near key_fraction
# GrabCut seeds: the blob's pixels above this importance quantile are "object", pixels of the image
# below this quantile (outside the grown blob) "background"; everything else is "probably" either.
_CORE_QUANTILE = 0.6
_BACKGROUND_QUANTILE = 0.3
_GRABCUT_ITERATIONS = 4
MIN_KEY_SHARE = 0.01           # a refined key region smaller than this is a GrabCut failure
MAX_KEY_SHARE = 0.85           # ... and one larger than this leaves no background to describe


def centred_ellipse(height: int, width: int, fraction: float) -> np.ndarray:
    """(H, W) bool ellipse centred in the image covering about ``fraction`` of its pixels."""
    scale = min(1.0, np.sqrt(4.0 * fraction / np.pi))      # area of the ellipse = pi/4 * scale^2 * H * W
    ys, xs = np.mgrid[0:height, 0:width]
    ny = (ys + 0.5 - height / 2) / (scale * height / 2)
    nx = (xs + 0.5 - width / 2) / (scale * width / 2)
    mask = nx * nx + ny * ny <= 1.0
    if not mask.any():
        mask[height // 2, width // 2] = True
    return mask


def _largest_components(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    areas = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(areas >= _LARGE_COMPONENT_RATIO * areas.max()) + 1
    return np.isin(labels, keep)


def refine_with_grabcut(image: np.ndarray, importance: np.ndarray, blob: np.ndarray) -> np.ndarray:
    """Move a saliency blob onto the object's outline; (h, w) bool at ``importance``'s resolution.

    image: (H, W, 3) uint8 RGB; importance: (h, w) float32 in [0, 1]; blob: (h, w) bool. Returns the
    blob unchanged when GrabCut's object is empty or outside the share bounds.
    """
    h, w = importance.shape
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    seeds = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    seeds[blob] = cv2.GC_PR_FGD
    core = blob & (importance >= np.quantile(importance[blob], _CORE_QUANTILE))
    side = max(3, int(_MORPH_FRAC * min(h, w)) | 1)
    grown = cv2.dilate(blob.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))).astype(bool)
    seeds[core] = cv2.GC_FGD
    seeds[~grown & (importance <= np.quantile(importance, _BACKGROUND_QUANTILE))] = cv2.GC_BGD
    if not (seeds == cv2.GC_BGD).any() and not (seeds == cv2.GC_PR_BGD).any():
        return blob
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)          # GrabCut seeds its colour models by k-means on OpenCV's RNG: same image, same mask
    try:
        cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), seeds, None, background, foreground,
                    _GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:          # e.g. one colour everywhere: no model to fit
        return blob
    mask = (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)
    small_side = max(3, int(_MORPH_FRAC * min(h, w) / 2) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (small_side, small_side))
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel).astype(bool)
    mask = ndimage.binary_fill_holes(_largest_components(mask))
    if not MIN_KEY_SHARE <= mask.mean() <= MAX_KEY_SHARE or not (mask & core).any():
        return blob
    return mask


@register("regions", "saliency")
class SaliencySplitter:
    """The salient object(s) as filled outlines: a saliency blob of ~``key_fraction`` of the image,
    refined by GrabCut unless ``refine=False``."""

    def __init__(self, key_fraction: float = DEFAULT_KEY_FRACTION, refine: bool = True):
        if not 0.0 < key_fraction < 1.0:
            raise ValueError(f"key_fraction must be in (0, 1), got {key_fraction}")
        self.key_fraction = float(key_fraction)
        self.refine = bool(refine)

    def importance(self, image: np.ndarray) -> np.ndarray:
        """(h, w) float32 importance in [0, 1] at working resolution, or None when saliency is flat."""
        height, width = image.shape[:2]
        scale = min(1.0, _WORK_SIDE_PX / max(height, width))
        small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
        ok, saliency = cv2.saliency.StaticSaliencySpectralResidual_create().computeSaliency(
            cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
        if not ok:
            return None
        saliency = np.nan_to_num(saliency.astype(np.float32))
        sigma = _SMOOTH_SIGMA_FRAC * min(small.shape[:2])
        saliency = cv2.GaussianBlur(saliency, (0, 0), sigmaX=max(sigma, 0.5))
        if saliency.std() < _FLAT_SALIENCY_CV * max(saliency.mean(), 1e-6):
            return None
        saliency = (saliency - saliency.min()) / (saliency.max() - saliency.min())
        h, w = saliency.shape
        ys, xs = np.mgrid[0:h, 0:w]
        centre = np.exp(-(((ys + 0.5) / h - 0.5) ** 2 + ((xs + 0.5) / w - 0.5) ** 2) / (2 * 0.25 ** 2))
        return ((1 - _CENTRE_PRIOR_WEIGHT) * saliency + _CENTRE_PRIOR_WEIGHT * centre).astype(np.float32)

    def _clean(self, importance: np.ndarray, threshold: float) -> np.ndarray:
        mask = (importance >= threshold).astype(np.uint8)
        side = max(3, int(_MORPH_FRAC * min(importance.shape)) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel).astype(bool)
        return ndimage.binary_fill_holes(_largest_components(mask))

    def split(self, image: np.ndarray) -> np.ndarray:
        """image: (H, W, 3) uint8 RGB -> (H, W) bool key mask, never empty."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        importance = self.importance(image)
        if importance is None:
            return centred_ellipse(height, width, self.key_fraction)
        # Cleaning changes the area, so search the threshold on the cleaned mask's area (it falls as the
        # threshold rises, up to morphology noise): start at the plain quantile.
        low, high = 0.0, 1.0
        best = None
        for step in range(_FRACTION_SEARCH_STEPS):
            threshold = float(np.quantile(importance, 1 - self.key_fraction)) if step == 0 else (low + high) / 2
            mask = self._clean(importance, threshold)
            fraction = mask.mean()
            if mask.any() and (best is None or abs(fraction - self.key_fraction) < abs(best.mean() - self.key_fraction)):
                best = mask
            if fraction > self.key_fraction:
                low = threshold
            else:
                high = threshold
        if best is None:
            return centred_ellipse(height, width, self.key_fraction)
        if self.refine:
            best = refine_with_grabcut(image, importance, best)
        full = cv2.resize(best.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_LINEAR)
        return ndimage.binary_fill_holes(full >= 128)
