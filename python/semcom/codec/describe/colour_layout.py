"""Describe the non-key background as a grid of colour names plus a texture word.

Example (chelsea.png, 3x3, 219 chars, 41 bytes through the zlib text codec): ``"top left: light brown,
top: brown, top right: dark rosy brown, ..., bottom right: light taupe, texture: grainy"``. Entries are ``position: value`` joined by ", "; anything else (e.g. object words that a
captioning describer prepends, separated by "; ") is ignored by the renderer.
"""

from __future__ import annotations

import cv2
import numpy as np

from semcom.codec.describe import vocabulary as vocab
from semcom.codec.imageops import fill_from_neighbours
from semcom.codec.registry import register

_MIN_CELL_SHARE = 0.02      # a cell with fewer non-key pixels than this share borrows from its neighbours
_TEXTURE_SIGMA_PX = 1.5     # high-pass = image minus this Gaussian blur


def detail_level(gray: np.ndarray, where: np.ndarray | None = None) -> float:
    """Robust std (1.4826 x median absolute deviation) of the fine detail (gray minus its Gaussian blur)
    of (H, W) float gray in 0..255, over ``where``. The median ignores sparse edges, so it measures
    grain, not outlines."""
    detail = gray - cv2.GaussianBlur(gray, (0, 0), sigmaX=_TEXTURE_SIGMA_PX)
    values = detail[where] if where is not None else detail.ravel()
    if not values.size:
        return 0.0
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def texture_word(level: float) -> str:
    """The texture word whose detail level is nearest to ``level`` on a log scale."""
    return min(vocab.TEXTURES, key=lambda w: abs(np.log((level + 1.0) / (vocab.TEXTURES[w] + 1.0))))


@register("describe", "colour_layout")
class ColourLayoutDescriber:
    """Colour names of a ``grid`` x ``grid`` layout of the non-key pixels, and a texture word.

    ``subject``: optional words put in front (``"a tabby cat; top left: ..."``), the hook for
    captioning describers that know what the picture shows; renderers that do not use them skip them.
    """

    def __init__(self, grid: int = 3, subject: str = ""):
        if not 1 <= int(grid) <= 16:
            raise ValueError(f"grid must be in 1..16, got {grid}")
        if any(ch in subject for ch in ",:"):
            raise ValueError("subject must not contain ',' or ':' (they separate layout entries)")
        self.grid = int(grid)
        self.subject = subject.strip()

    def cell_colours(self, image: np.ndarray, key_mask: np.ndarray) -> np.ndarray:
        """(grid, grid, 3) float mean RGB of the non-key pixels of each cell (neighbours fill key cells)."""
        height, width = image.shape[:2]
        background = ~key_mask if (~key_mask).any() else np.ones_like(key_mask)   # all key: describe it all
        rows = np.linspace(0, height, self.grid + 1).round().astype(int)
        cols = np.linspace(0, width, self.grid + 1).round().astype(int)
        colours = np.zeros((self.grid, self.grid, 3))
        valid = np.zeros((self.grid, self.grid), dtype=bool)
        for r in range(self.grid):
            for c in range(self.grid):
                cell = background[rows[r]:rows[r + 1], cols[c]:cols[c + 1]]
                if cell.size and cell.mean() >= _MIN_CELL_SHARE:
                    colours[r, c] = image[rows[r]:rows[r + 1], cols[c]:cols[c + 1]][cell].mean(axis=0)
                    valid[r, c] = True
        if not valid.any():      # background too thin for any cell: use its overall mean everywhere
            colours[:] = image[background].mean(axis=0)
            return colours
        return fill_from_neighbours(colours, valid)

    def describe(self, image: np.ndarray, key_mask: np.ndarray) -> str:
        """image: (H, W, 3) uint8 RGB; key_mask: (H, W) bool -> short layout text (~190-240 chars for 3x3)."""
        image = np.asarray(image)
        key_mask = np.asarray(key_mask, dtype=bool)
        if image.ndim != 3 or image.shape[2] != 3 or key_mask.shape != image.shape[:2]:
            raise ValueError(f"need image (H, W, 3) and key_mask (H, W), got {image.shape} and {key_mask.shape}")
        names = vocab.nearest_colour(self.cell_colours(image, key_mask))
        entries = [f"{vocab.position_name(i // self.grid, i % self.grid, self.grid)}: {name}"
                   for i, name in enumerate(names)]
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        background = ~key_mask if (~key_mask).any() else None
        entries.append(f"{vocab.TEXTURE_KEY}: {texture_word(detail_level(gray, background))}")
        layout = ", ".join(entries)
        return f"{self.subject}; {layout}" if self.subject else layout
