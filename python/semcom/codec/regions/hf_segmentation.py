"""Key region from a segmentation model (Mask2Former, OneFormer, MaskFormer, DETR panoptic, ...).

The model segments the image; the key region is the segments whose label is in ``labels`` (all of
them), or, without ``labels``, the most salient "thing" (a COCO object class, not sky/road/wall
"stuff"): the largest, nearest to the centre, plus other segments of its class at least 30% its size.
"""

from __future__ import annotations

import warnings

import numpy as np

from semcom.codec.hf import load_pretrained, require, torch_device
from semcom.codec.registry import register

# The 80 COCO "thing" classes: what a photographer usually means by the subject.
COCO_THINGS = frozenset(
    "person,bicycle,car,motorcycle,airplane,bus,train,truck,boat,traffic light,fire hydrant,stop sign,"
    "parking meter,bench,bird,cat,dog,horse,sheep,cow,elephant,bear,zebra,giraffe,backpack,umbrella,handbag,"
    "tie,suitcase,frisbee,skis,snowboard,sports ball,kite,baseball bat,baseball glove,skateboard,surfboard,"
    "tennis racket,bottle,wine glass,cup,fork,knife,spoon,bowl,banana,apple,sandwich,orange,broccoli,carrot,"
    "hot dog,pizza,donut,cake,chair,couch,potted plant,bed,dining table,toilet,tv,laptop,mouse,remote,"
    "keyboard,cell phone,microwave,oven,toaster,sink,refrigerator,book,clock,vase,scissors,teddy bear,"
    "hair drier,toothbrush".split(","))
_SAME_CLASS_SHARE = 0.3
_CENTRE_WEIGHT = 0.5


def _segmentation_model(model: str, device: str, revision: str | None = None):
    """(image processor, model) trying the auto classes the image-segmentation pipeline knows."""
    transformers = require("transformers")
    # transformers 5.x exports a torchvision-only placeholder as ``transformers.AutoImageProcessor``
    # when torchvision is absent; the class in its own module picks the PIL backend then.
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    pinned = {"revision": revision} if revision else {}
    processor = load_pretrained(AutoImageProcessor.from_pretrained, model, what="segmentation processor", **pinned)
    errors = []
    for auto in ("AutoModelForUniversalSegmentation", "AutoModelForImageSegmentation",
                 "AutoModelForSemanticSegmentation", "AutoModelForInstanceSegmentation"):
        cls = getattr(transformers, auto, None)
        if cls is None:
            continue
        try:
            net = load_pretrained(cls.from_pretrained, model, what="segmentation model", **pinned)
            return processor, net.to(device).eval()
        except ValueError as exc:       # "Unrecognized configuration class" for this auto class: try the next
            errors.append(f"{auto}: {str(exc).splitlines()[0][:120]}")
    raise ValueError(f"{model}: not a segmentation model transformers knows ({'; '.join(errors)})")


def saliency_score(mask: np.ndarray) -> float:
    """Area share times a centre prior: 1 at the centre falling to 1 - _CENTRE_WEIGHT at a corner."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return 0.0
    dy, dx = (ys.mean() + 0.5) / h - 0.5, (xs.mean() + 0.5) / w - 0.5
    off_centre = min(1.0, float(np.hypot(dy, dx)) / np.hypot(0.5, 0.5))
    return float(mask.mean()) * (1.0 - _CENTRE_WEIGHT * off_centre)


def normalise_label(label) -> str:
    """"Person " -> "person": how labels from a model config and from the user are compared."""
    return " ".join(str(label).split()).lower()


def choose_key_segments(segments: list[tuple[str, np.ndarray]], labels=None, min_area_share: float = 0.01) -> np.ndarray | None:
    """[(label, (H, W) bool)] -> key mask, or None when nothing qualifies."""
    # Labels are compared stripped and lower-cased: ADE20K's id2label carries names such as "person "
    # with trailing spaces.
    segments = [(normalise_label(label), m) for label, m in segments if m.mean() >= min_area_share]
    if not segments:
        return None
    if labels:
        wanted = {normalise_label(x) for x in labels}
        chosen = [m for label, m in segments if label in wanted]
        return np.logical_or.reduce(chosen) if chosen else None
    things = [(label, m) for label, m in segments if label in COCO_THINGS] or segments
    best_label, best = max(things, key=lambda s: saliency_score(s[1]))
    key = best.copy()
    for label, m in things:
        if label == best_label and m.sum() >= _SAME_CLASS_SHARE * best.sum():
            key |= m
    return key


@register("regions", "hf")
class HFSegmentationSplitter:
    """Key mask from a transformers segmentation model.

    ``model``: hub id or local directory; ``labels``: class names that make the key (e.g. ["person"]);
    ``subtask``: "panoptic" / "instance" / "semantic" or None (the model's best); ``threshold``: segment
    score threshold; ``fallback``: "saliency" (the built-in splitter, with a warning) or "none" (an empty
    key mask) when no segment qualifies. ``revision``: the hub commit to load (pin it).
    """

    def __init__(self, model: str = "facebook/mask2former-swin-tiny-coco-panoptic", labels: list[str] | None = None,
                 device: str = "cpu", subtask: str | None = None, threshold: float = 0.5,
                 min_area_share: float = 0.01, fallback: str = "saliency", revision: str | None = None):
        if fallback not in ("saliency", "none"):
            raise ValueError(f"fallback must be 'saliency' or 'none', got {fallback!r}")
        if subtask not in (None, "panoptic", "instance", "semantic"):
            raise ValueError(f"subtask must be panoptic, instance, semantic or None, got {subtask!r}")
        self.device = torch_device(device)
        self.labels = list(labels) if labels else None
        self.subtask, self.threshold, self.min_area_share, self.fallback = subtask, float(threshold), \
            float(min_area_share), fallback
        transformers = require("transformers")
        processor, net = _segmentation_model(model, self.device, revision)
        self.segmenter = transformers.pipeline("image-segmentation", model=net, image_processor=processor,
                                               device=self.device)

    def segments(self, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(H, W, 3) uint8 -> [(label, (H, W) bool mask)] as the model sees them."""
        from PIL import Image

        kwargs = {"threshold": self.threshold}
        if self.subtask:
            kwargs["subtask"] = self.subtask
        results = self.segmenter(Image.fromarray(np.asarray(image)), **kwargs)
        return [(r["label"], np.asarray(r["mask"]) > 127) for r in results]

    def split(self, image: np.ndarray) -> np.ndarray:
        """image (H, W, 3) uint8 -> key mask (H, W) bool."""
        image = np.asarray(image)
        key = choose_key_segments(self.segments(image), self.labels, self.min_area_share)
        if key is not None and key.shape == image.shape[:2]:
            return key
        if self.fallback == "none":
            return np.zeros(image.shape[:2], bool)
        warnings.warn("segmentation found no key object; using the saliency splitter for this image", stacklevel=2)
        from semcom.codec.regions.saliency import SaliencySplitter

        return SaliencySplitter().split(image)
