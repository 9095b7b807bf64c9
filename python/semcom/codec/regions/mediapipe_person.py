"""Key region = the people in the photo, from mediapipe's bundled person models (offline, CPU, milliseconds).

mediapipe 0.10.14 ships ``selfie_segmentation.tflite`` ("general", 256x256 input) and
``selfie_segmentation_landscape.tflite`` ("landscape", 144x256) inside the wheel, so nothing is downloaded.

The selfie models assume a person is there: on a photo without one they still mark the main foreground
object (a cup, a cat) as "person". So a face detector (mediapipe's bundled full-range BlazeFace) decides
whether there is a person, and the key mask is the selfie-mask blobs that contain a detected face. The face
detector runs on the whole image and on overlapping half-size tiles, so people down to ~1/6 of the
image width are found; the selfie model then runs on a crop around each face's body. Without a face
(no person, or one seen from behind or too small) the splitter falls back.

Install: ``pip install --no-deps -r requirements-mediapipe.txt`` (that file says why ``--no-deps``).
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager

import numpy as np
from scipy import ndimage

from semcom.codec.registry import register

MEDIAPIPE_VERSION = "0.10.14"     # later wheels (1.x) no longer bundle the .tflite files
INSTALL_COMMAND = "pip install --no-deps -r requirements-mediapipe.txt"
MODELS = {"general": "selfie_segmentation.tflite", "landscape": "selfie_segmentation_landscape.tflite"}
_FULL_RANGE_FACE_MODEL = 1        # mediapipe.solutions.face_detection: 0 = short range (~2 m), 1 = full range (~5 m)
_TILE_MIN_SIDE_PX = 128           # below this the whole-image pass is all the face detector gets
# Where a person's body can be, in face-box heights above/below the face and widths either side
# (a standing adult is ~7.5 heads tall; outstretched arms span ~7 face widths).
_BODY_ABOVE, _BODY_BELOW, _BODY_SIDE = 0.6, 7.0, 3.0


def _import_mediapipe():
    try:
        with _quiet():
            import mediapipe
            from mediapipe.tasks.python import BaseOptions, vision  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the 'mediapipe' region splitter needs mediapipe=={MEDIAPIPE_VERSION} and the few "
                          f"packages it imports: {INSTALL_COMMAND} ({exc})") from exc
    return mediapipe


@contextmanager
def _quiet():
    """mediapipe 0.10.14 calls protobuf APIs that protobuf 4.25 marks deprecated: not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(MessageFactory|GetPrototype).*", category=UserWarning)
        yield


def _tiles(height: int, width: int):
    """(y, x, h, w): the whole image, then a 3x3 grid of half-size tiles overlapping by half a tile."""
    yield 0, 0, height, width
    if min(height, width) < _TILE_MIN_SIDE_PX:
        return
    th, tw = height // 2, width // 2
    for y in (0, height // 4, height - th):
        for x in (0, width // 4, width - tw):
            yield y, x, th, tw


@register("regions", "mediapipe")
class MediapipePersonSplitter:
    """Key mask = the people, from mediapipe's selfie segmentation gated by its face detector.

    ``model``: "landscape" or "general" (the two bundled selfie models); ``threshold``: person confidence
    above which a pixel is in the mask; ``min_face_confidence``: face detector score that counts as a person;
    ``fallback``: "saliency" (the built-in splitter, with a warning) or "none" (ValueError) when no person
    is found.
    """

    def __init__(self, model: str = "landscape", threshold: float = 0.5, fallback: str = "saliency",
                 min_face_confidence: float = 0.5):
        if model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if not 0.0 < min_face_confidence < 1.0:
            raise ValueError(f"min_face_confidence must be in (0, 1), got {min_face_confidence}")
        if fallback not in ("saliency", "none"):
            raise ValueError(f"fallback must be 'saliency' or 'none', got {fallback!r}")
        self.model, self.threshold, self.fallback = model, float(threshold), fallback
        self.min_face_confidence = float(min_face_confidence)
        self._mp = mp = _import_mediapipe()
        path = os.path.join(os.path.dirname(mp.__file__), "modules", "selfie_segmentation", MODELS[model])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} is missing: mediapipe {getattr(mp, '__version__', '?')} does not "
                                    f"bundle the selfie models; {INSTALL_COMMAND} (pins {MEDIAPIPE_VERSION})")
        from mediapipe.tasks.python import BaseOptions, vision

        options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=path),
                                               output_confidence_masks=True, output_category_mask=False)
        with _quiet():
            self._segmenter = vision.ImageSegmenter.create_from_options(options)
            # The Tasks FaceDetector rejects the bundled full-range model (its anchor count is hard-wired
            # to the short-range one), and short range misses faces smaller than ~1/4 of the image; the
            # legacy solution graph runs the full-range model from the wheel.
            self._faces = mp.solutions.face_detection.FaceDetection(
                model_selection=_FULL_RANGE_FACE_MODEL, min_detection_confidence=self.min_face_confidence)
        self._lock = threading.Lock()    # mediapipe graphs are not re-entrant

    def confidence(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) float32 person confidence in [0, 1] from the selfie model alone."""
        mp = self._mp
        frame = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        with self._lock, _quiet():
            result = self._segmenter.segment(frame)
        return np.array(result.confidence_masks[0].numpy_view(), np.float32).reshape(image.shape[:2])

    def face_boxes(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """(H, W, 3) uint8 -> [(y0, x0, y1, x1)] face boxes in pixels, from the whole image and its tiles."""
        height, width = image.shape[:2]
        boxes = []
        for y, x, th, tw in _tiles(height, width):
            with self._lock, _quiet():
                result = self._faces.process(np.ascontiguousarray(image[y:y + th, x:x + tw]))
            for detection in result.detections or []:
                box = detection.location_data.relative_bounding_box
                y0 = min(max(y + int(box.ymin * th), 0), height - 1)
                x0 = min(max(x + int(box.xmin * tw), 0), width - 1)
                y1 = min(max(y + int(np.ceil((box.ymin + box.height) * th)), y0 + 1), height)
                x1 = min(max(x + int(np.ceil((box.xmin + box.width) * tw)), x0 + 1), width)
                boxes.append((y0, x0, y1, x1))
        return boxes

    def person_mask(self, image: np.ndarray) -> np.ndarray | None:
        """(H, W) bool: the people, or None when there is no person.

        For each detected face the selfie model runs on a crop around where that person's body can be
        (so a small person is not drowned by a large foreground object the model also calls "person");
        the mask is the selfie blobs holding a face, inside those body boxes.
        """
        height, width = image.shape[:2]
        boxes = self.face_boxes(image)
        if not boxes:
            return None
        confidence = np.zeros((height, width), np.float32)
        inside = np.zeros((height, width), bool)
        done = set()
        for y0, x0, y1, x1 in boxes:
            fh, fw = y1 - y0, x1 - x0
            by0, by1 = max(0, int(y0 - _BODY_ABOVE * fh)), min(height, int(y1 + _BODY_BELOW * fh))
            bx0, bx1 = max(0, int(x0 - _BODY_SIDE * fw)), min(width, int(x1 + _BODY_SIDE * fw))
            inside[by0:by1, bx0:bx1] = True
            if (by0, by1, bx0, bx1) in done:
                continue
            done.add((by0, by1, bx0, bx1))
            crop = confidence[by0:by1, bx0:bx1]
            np.maximum(crop, self.confidence(image[by0:by1, bx0:bx1]), out=crop)
        person = (confidence >= self.threshold) & inside
        labels, _ = ndimage.label(person, structure=np.ones((3, 3), bool))
        keep = set()
        for y0, x0, y1, x1 in boxes:
            keep.update(np.unique(labels[y0:y1, x0:x1]).tolist())
        keep.discard(0)
        if not keep:
            return None
        return ndimage.binary_fill_holes(np.isin(labels, sorted(keep)))

    def split(self, image: np.ndarray) -> np.ndarray:
        """image (H, W, 3) uint8 RGB -> key mask (H, W) bool: the people, or the fallback's mask."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        key = self.person_mask(image)
        if key is not None:
            return key
        if self.fallback == "none":
            raise ValueError(f"mediapipe found no person in the {image.shape[1]}x{image.shape[0]} image "
                             f"(no face at confidence >= {self.min_face_confidence} with a selfie-mask blob "
                             f"around it); use fallback='saliency' or another region splitter")
        warnings.warn("mediapipe found no person; using the saliency splitter for this image", stacklevel=2)
        from semcom.codec.regions.saliency import SaliencySplitter

        return SaliencySplitter().split(image)

    def close(self) -> None:
        """Free the mediapipe graphs now rather than at garbage collection."""
        with self._lock:
            self._segmenter.close()
            self._faces.close()
