"""Key region: the main object(s) as filled outlines, from stock cues refined by OpenCV GrabCut.

Two cues say where the object is, the first that gives an answer within the share bounds wins:

1. **Foreground** (``foreground=True``, needs mediapipe, see ``mediapipe_person``): mediapipe's bundled
   selfie-segmentation model. It was trained for people, but on photos without one it still marks
   the main foreground object (a cup, a cat, a pier); on photos where nothing stands out it marks
   nothing or nearly everything, and then the saliency cue decides. Its confidence seeds GrabCut:
   sure object where it is >= 0.9 well inside its outline, sure background where it is < 0.1 well
   outside, "probably" either in between.
2. **Saliency**: OpenCV spectral-residual saliency, mixed with the class activation map of the
   shipped ImageNet MobileNetV2 (``object_weight``; where the classifier sees its top classes) and a
   mild centre prior, gives a blob of about ``key_fraction`` of the image; GrabCut, seeded with that
   blob as "probably object", its most salient core as "object" and the least salient part of the
   image as "background", moves the outline onto the object's colour edges.

Either result keeps its large connected parts, has its holes filled, and must cover between
``MIN_KEY_SHARE`` and ``MAX_KEY_SHARE`` of the image; otherwise the next cue (finally the bare
saliency blob) is kept. Constants were chosen on training-source photos (``gr-semcom/masks/training``);
``benchmarks/key_region_rd.py`` reports the IoU on the evaluation photos' reference masks.
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
_CAM_CLASSES = 5               # the class activation map follows this many top ImageNet classes
DEFAULT_OBJECT_WEIGHT = 0.3    # share of the class activation map in the saliency cue
# Foreground cue: a pixel is object where mediapipe's confidence is >= 0.5 (its own decision level);
# GrabCut takes >= 0.9 (well inside) as sure object and < 0.1 (well outside) as sure background.
_FOREGROUND_LEVEL, _SURE_OBJECT, _SURE_BACKGROUND = 0.5, 0.9, 0.1
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
    mask = _grabcut(small, seeds)
    if mask is None:
        return blob
    small_side = max(3, int(_MORPH_FRAC * min(h, w) / 2) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (small_side, small_side))
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel).astype(bool)
    mask = ndimage.binary_fill_holes(_largest_components(mask))
    if not MIN_KEY_SHARE <= mask.mean() <= MAX_KEY_SHARE or not (mask & core).any():
        return blob
    return mask


def _in_share_bounds(mask: np.ndarray) -> bool:
    return MIN_KEY_SHARE <= float(mask.mean()) <= MAX_KEY_SHARE


def _grabcut(small: np.ndarray, seeds: np.ndarray) -> np.ndarray | None:
    """GrabCut from a GC_* seed map (h, w) uint8 on the (h, w, 3) RGB image; None when it cannot run."""
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)          # GrabCut seeds its colour models by k-means on OpenCV's RNG: same image, same mask
    try:
        cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), seeds, None, background, foreground,
                    _GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:          # e.g. one colour everywhere: no model to fit
        return None
    return (seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)


def refine_foreground(small: np.ndarray, confidence: np.ndarray) -> np.ndarray | None:
    """The foreground model's object, moved onto colour edges by GrabCut; (h, w) bool, or None when
    the model marks no object within the share bounds.

    small: (h, w, 3) uint8 RGB; confidence: (h, w) float32 in [0, 1]."""
    h, w = confidence.shape
    blob = confidence >= _FOREGROUND_LEVEL
    if not blob.any():
        return None
    blob = ndimage.binary_fill_holes(_largest_components(blob))
    if not _in_share_bounds(blob):
        return None
    side = max(3, int(_MORPH_FRAC * min(h, w)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    seeds = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    seeds[blob] = cv2.GC_PR_FGD
    seeds[cv2.erode(blob.astype(np.uint8), kernel).astype(bool) & (confidence >= _SURE_OBJECT)] = cv2.GC_FGD
    seeds[~cv2.dilate(blob.astype(np.uint8), kernel).astype(bool) & (confidence < _SURE_BACKGROUND)] = cv2.GC_BGD
    mask = _grabcut(small, seeds)
    if mask is None:
        return blob
    mask = ndimage.binary_fill_holes(_largest_components(mask))
    return mask if mask.any() and _in_share_bounds(mask) else blob


def class_activation(small: np.ndarray) -> np.ndarray | None:
    """(h, w) float32 in [0, 1]: where the shipped ImageNet MobileNetV2 sees its top classes (class
    activation map, classes weighted by probability), or None when its weights are not installed."""
    try:
        from semcom.codec.describe import mobilenet_v2

        model = mobilenet_v2.shared_model()
    except (FileNotFoundError, ImportError):
        return None
    import torch

    h, w = small.shape[:2]
    scale = mobilenet_v2.CROP_PX / min(h, w)           # the whole image, short side at the training crop size
    size = (max(32, round(w * scale / 32) * 32), max(32, round(h * scale / 32) * 32))
    x = cv2.resize(small, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = (x - np.float32(mobilenet_v2.IMAGENET_MEAN)) / np.float32(mobilenet_v2.IMAGENET_STD)
    batch = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))[None]).to(memory_format=torch.channels_last)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)      # 2 shared cores: more threads thrash (see mobilenet_v2.classify)
    try:
        with torch.inference_mode():
            features = model.features(batch)[0]                              # (1280, h/32, w/32)
            probs = torch.softmax(model.classifier(features.mean((1, 2))[None])[0], 0)
            top = torch.topk(probs, _CAM_CLASSES)
            maps = torch.relu(torch.einsum("kc,chw->khw", model.classifier[1].weight[top.indices], features))
            cam = ((maps * top.values[:, None, None]).sum(0) / top.values.sum()).float().numpy()
    finally:
        torch.set_num_threads(previous)
    cam = cv2.resize(cam, (w, h), interpolation=cv2.INTER_CUBIC)
    low, high = float(cam.min()), float(cam.max())
    return None if high - low < 1e-6 else ((cam - low) / (high - low)).astype(np.float32)


@register("regions", "saliency")
class SaliencySplitter:
    """The main object(s) as filled outlines (module docstring): mediapipe's foreground model refined by
    GrabCut when it finds one, else a saliency blob of ~``key_fraction`` of the image refined by GrabCut.

    ``refine=False``: the bare saliency blob (no GrabCut, no foreground model); ``foreground``: use
    mediapipe's model when installed; ``object_weight``: share of MobileNetV2's class activation map
    in the saliency cue (0: saliency and centre prior only; skipped when the weights are absent).
    """

    def __init__(self, key_fraction: float = DEFAULT_KEY_FRACTION, refine: bool = True, foreground: bool = True,
                 object_weight: float = DEFAULT_OBJECT_WEIGHT):
        if not 0.0 < key_fraction < 1.0:
            raise ValueError(f"key_fraction must be in (0, 1), got {key_fraction}")
        if not 0.0 <= object_weight <= 1.0:
            raise ValueError(f"object_weight must be in [0, 1], got {object_weight}")
        self.key_fraction = float(key_fraction)
        self.refine = bool(refine)
        self.foreground = bool(foreground) and self.refine
        self.object_weight = float(object_weight)
        self._foreground_model = None

    def foreground_confidence(self, image: np.ndarray, shape: tuple[int, int]) -> np.ndarray | None:
        """(h, w) float32 mediapipe foreground confidence at working resolution, or None when mediapipe
        (or its bundled model) is not installed."""
        if self._foreground_model is None:
            try:
                from semcom.codec.regions.mediapipe_person import MediapipePersonSplitter

                self._foreground_model = MediapipePersonSplitter(fallback="none")
            except (ImportError, FileNotFoundError):
                self._foreground_model = False
        if self._foreground_model is False:
            return None
        confidence = self._foreground_model.confidence(np.ascontiguousarray(image))
        return cv2.resize(confidence, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)

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
        if self.refine and self.object_weight > 0:
            cam = class_activation(small)
            if cam is not None:
                saliency = (1 - self.object_weight) * saliency + self.object_weight * cam
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
        if self.foreground:
            scale = min(1.0, _WORK_SIDE_PX / max(height, width))
            shape = (max(1, round(height * scale)), max(1, round(width * scale)))
            confidence = self.foreground_confidence(image, shape)
            if confidence is not None:
                small = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
                found = refine_foreground(small, confidence)
                if found is not None:
                    full = cv2.resize(found.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_LINEAR)
                    return ndimage.binary_fill_holes(full >= 128)
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
