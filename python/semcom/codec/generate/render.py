"""Paint the background from the layout text, then blend the known key pixels over it.

No model: a smooth interpolation of the named grid colours plus seeded, low-pass noise at the named
texture level. It is the offline stand-in for a diffusion inpainter and the floor it must beat.

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


@register("generate", "render")
class LayoutRenderer:
    """Generator that paints the layout text; deterministic for a given seed."""

    def background(self, text: str, height: int, width: int, seed: int = 0) -> np.ndarray:
        """(height, width, 3) float32 RGB in 0..255 painted from ``text``."""
        colours, texture = parse_layout(text)
        # Bicubic through the cell centres (cv2 aligns pixel centres): gradients like a sky's, no blocks.
        paint = cv2.resize(colours.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
        noise = np.random.default_rng(seed).standard_normal((height, width)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=_NOISE_SIGMA_PX)
        # Scale the grain so the describer would measure the same texture word on the result.
        level = detail_level(noise)
        if level > 0:
            noise *= vocab.TEXTURES[texture] / level
        return np.clip(paint + noise[..., None], 0.0, 255.0)

    def generate(self, text: str, known: np.ndarray, known_alpha: np.ndarray, seed: int = 0) -> np.ndarray:
        """known: (H, W, 3) uint8; known_alpha: (H, W) float in [0, 1] -> (H, W, 3) uint8.

        out = alpha * known + (1 - alpha) * background, so alpha == 1 reproduces ``known`` exactly.
        """
        known = np.asarray(known)
        alpha = np.asarray(known_alpha, dtype=np.float32)
        if known.ndim != 3 or known.shape[2] != 3 or alpha.shape != known.shape[:2]:
            raise ValueError(f"need known (H, W, 3) and known_alpha (H, W), got {known.shape} and {alpha.shape}")
        height, width = alpha.shape
        alpha = np.clip(alpha, 0.0, 1.0)[..., None]
        out = alpha * known.astype(np.float32) + (1.0 - alpha) * self.background(text, height, width, seed)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
