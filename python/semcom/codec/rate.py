"""Fit a frame to a byte budget: the key codec's quality (and AVIF's tile scale), then the key region's size.

Key quality *levels* mean the same for every key codec: level n is a frame budget of
``KEY_LEVEL_BITS_PER_KEY_PIXEL[n - 1]`` bits per key pixel (the whole frame: header copies, text,
sketch and key tiles), and ``level_for_budget`` finds the codec setting that spends it. So a level
compares codecs at equal bytes, and link adaptation can ask for any byte budget directly.

When even the codec's cheapest setting does not fit, the key region shrinks to its most important
part (saliency importance, and depth inside the mask) instead of being dropped: a frame always
carries key tiles.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import cv2
import numpy as np
from scipy import ndimage

from semcom.codec import registry
from semcom.codec.pipeline import Encoded, PipelineConfig, SemanticEncoder

# Bits per key pixel (whole frame) of levels 1..8. Level 1-2 need AVIF's 1/2 or 1/4 scale tiles.
KEY_LEVEL_BITS_PER_KEY_PIXEL = (0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 1.6, 2.5)
_SHRINK_STEPS = 10          # bisection steps on the kept share of the key region
MIN_SKETCH_BYTES = 120      # a sketch budget below this is dropped rather than sent as a smudge


@dataclass
class BudgetFit:
    """The frame chosen for a budget and how it was reached."""

    encoded: Encoded
    frame_bytes: int               # every PDU, header copies included
    key_options: dict[str, Any]    # the key codec's options that produced it ("quality", AVIF "scale")
    key_mask: np.ndarray           # (H, W) bool, the key mask that was coded (shrunk or as given)
    shrunk: bool                   # True when the key region had to shrink to fit


def largest_fitting(low: int, high: int, fits: Callable[[int], Any]) -> tuple[int, Any] | None:
    """Largest q in [low, high] with ``fits(q)`` not None (assumes size grows with q): (q, result) or None."""
    result = fits(low)
    if result is None:
        return None
    best = (low, result)
    while low < high:
        mid = (low + high + 1) // 2
        result = fits(mid)
        if result is not None:
            best, low = (mid, result), mid
        else:
            high = mid - 1
    return best


def level_budget_bytes(key_mask: np.ndarray, level: int) -> int:
    """Frame bytes of key quality ``level`` (1..8) for this key mask."""
    if not 1 <= level <= len(KEY_LEVEL_BITS_PER_KEY_PIXEL):
        raise ValueError(f"key level must be 1..{len(KEY_LEVEL_BITS_PER_KEY_PIXEL)}, got {level}")
    return int(KEY_LEVEL_BITS_PER_KEY_PIXEL[level - 1] * int(np.count_nonzero(key_mask)) / 8)


class OnceDescriber:
    """The text does not depend on the key codec's setting: describe each (image, mask) once."""

    def __init__(self, describer):
        self.describer, self.last = describer, None

    def describe(self, image: np.ndarray, key_mask: np.ndarray) -> str:
        key = (id(image), key_mask.tobytes())
        if self.last is None or self.last[0] != key:
            self.last = (key, self.describer.describe(image, key_mask))
        return self.last[1]


def _settings(codec_name: str) -> list[dict[str, Any]]:
    """The codec's settings from the most to the fewest bytes, as groups searched by quality."""
    factory = registry.factory("key", codec_name)
    scales = getattr(factory, "scales", (1,))
    return [{"scale": s} if len(scales) > 1 else {} for s in scales]


def level_for_budget(image: np.ndarray, mask: np.ndarray, budget_bytes: int,
                     config: PipelineConfig | None = None) -> BudgetFit:
    """The best frame of ``image`` with key ``mask`` (H, W) bool whose PDUs total at most ``budget_bytes``.

    Searches the configured key codec's quality (1..max_quality), at full tile size first and then, for
    AVIF, at 1/2 and 1/4 scale; takes the first scale with a fitting quality, at its largest fitting
    quality. Where the sketch (``config.sketch_budget``) leaves too little for a scale, the sketch gets
    only what that scale's cheapest tiles leave before a coarser scale is tried. If nothing fits, the
    sketch goes and the key region shrinks (``shrunk``). When not even one mask block fits
    (the header, text and sketch alone exceed the budget) the smallest frame is returned, over budget.
    """
    config = config or PipelineConfig()
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("key mask is empty")
    encoder = SemanticEncoder(config)
    encoder.describer = OnceDescriber(encoder.describer)
    base_options = {k: v for k, v in config.key_options.items() if k not in ("quality", "scale")}
    for setting in _settings(config.key):
        options = {**base_options, **setting}
        fit = _largest_quality(encoder, image, mask, budget_bytes, config, options)
        sketch = fit.encoded.frame.sketch
        if fit.frame_bytes > budget_bytes and sketch:
            # The key region matters more than the background's sketch: before coarser key tiles, give
            # the sketch only what these tiles at their cheapest leave (none below a useful size).
            left = len(sketch) - (fit.frame_bytes - budget_bytes)
            encoder.config = replace(config, sketch_budget=left if left >= MIN_SKETCH_BYTES else 0)
            fit = _largest_quality(encoder, image, mask, budget_bytes, encoder.config, options)
            encoder.config = config
        if fit.frame_bytes <= budget_bytes:
            return fit
    encoder.config = replace(config, sketch_budget=0)
    return _shrunk(encoder, image, mask, budget_bytes, encoder.config, fit.key_options)   # the cheapest setting


def _encode(encoder: SemanticEncoder, image: np.ndarray, mask: np.ndarray, config: PipelineConfig,
            options: dict[str, Any]) -> BudgetFit:
    encoder.key_codec = registry.create("key", config.key, **options)
    encoded = encoder.encode(image, key_mask=mask)
    return BudgetFit(encoded, sum(map(len, encoded.to_pdus(config.pdu_bytes))), options, mask, False)


def _largest_quality(encoder, image, mask, budget_bytes, config, options) -> BudgetFit:
    """Bisection over quality (bytes grow with it): the largest fitting one, else quality 1 (over budget)."""
    top = getattr(registry.factory("key", config.key), "max_quality", 100)
    top = top if isinstance(top, int) else registry.create("key", config.key).max_quality
    low, high = 1, top
    best = _encode(encoder, image, mask, config, {**options, "quality": low})
    if best.frame_bytes > budget_bytes:
        return best
    while low < high:
        middle = (low + high + 1) // 2
        fit = _encode(encoder, image, mask, config, {**options, "quality": middle})
        if fit.frame_bytes <= budget_bytes:
            best, low = fit, middle
        else:
            high = middle - 1
    return best


def importance_inside(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W) float32: how much each key pixel matters, saliency times depth inside the mask; 0 outside."""
    height, width = mask.shape
    depth = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    depth /= max(float(depth.max()), 1e-6)
    from semcom.codec.regions.saliency import SaliencySplitter

    saliency = SaliencySplitter().importance(image)
    if saliency is None:
        return depth.astype(np.float32)
    saliency = cv2.resize(saliency, (width, height), interpolation=cv2.INTER_LINEAR)
    return (depth * (0.25 + saliency)).astype(np.float32) * mask


def most_important_part(importance: np.ndarray, mask: np.ndarray, share: float) -> np.ndarray:
    """The connected, hole-free part of ``mask`` holding its top ``share`` of pixels by ``importance``."""
    values = importance[mask]
    threshold = np.quantile(values, 1.0 - share)
    part = mask & (importance >= threshold)
    labels, count = ndimage.label(part)
    if count > 1:
        top = np.unravel_index(np.argmax(np.where(part, importance, -1)), part.shape)
        part = labels == labels[top]
    return ndimage.binary_fill_holes(part) & mask


def _shrunk(encoder, image, mask, budget_bytes, config, options) -> BudgetFit:
    """The largest most-important part of the key region that fits, at the cheapest setting."""
    importance = importance_inside(image, mask)
    low, high = 0.0, 1.0
    smallest = most_important_part(importance, mask, 1.0 / max(int(mask.sum()), 1))
    best = replace(_encode(encoder, image, smallest, config, options), shrunk=True)
    for _ in range(_SHRINK_STEPS):
        share = (low + high) / 2
        fit = _encode(encoder, image, most_important_part(importance, mask, share), config, options)
        if fit.frame_bytes <= budget_bytes:
            best, low = replace(fit, shrunk=True), share
        else:
            high = share
    return best
