"""The words shared by describers and renderers: colour names with RGB, cell positions, texture words.

The text codec's preset dictionary is built from these lists, so changing them changes the wire
format: give the text codec a new codec_id when you do.
"""

from __future__ import annotations

import numpy as np

# Base names (mostly CSS/X11) chosen to cover the tones of natural photos: many browns, desaturated
# and dark tones, sky and foliage. Each also comes as "dark <name>" and "light <name>" (lightness moved
# by MODIFIER_L in Lab), which roughly halves the colour error for ~4 bytes more text in total.
BASE_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "charcoal": (45, 45, 45),
    "gray": (128, 128, 128),
    "silver": (192, 192, 192),
    "white": (255, 255, 255),
    "slate gray": (112, 128, 144),
    "slate": (80, 90, 100),
    "night blue": (15, 25, 50),
    "midnight blue": (25, 25, 112),
    "navy": (0, 0, 128),
    "royal blue": (65, 105, 225),
    "steel blue": (70, 130, 180),
    "sky blue": (135, 206, 235),
    "teal": (0, 128, 128),
    "cadet blue": (95, 158, 160),
    "turquoise": (64, 224, 208),
    "green": (0, 128, 0),
    "forest green": (34, 139, 34),
    "sea green": (46, 139, 87),
    "olive drab": (107, 142, 35),
    "olive": (128, 128, 0),
    "yellow green": (154, 205, 50),
    "khaki": (240, 230, 140),
    "gold": (255, 215, 0),
    "brown": (120, 75, 45),
    "saddle brown": (139, 69, 19),
    "sienna": (160, 82, 45),
    "maroon": (128, 0, 0),
    "chocolate": (210, 105, 30),
    "peru": (205, 133, 63),
    "tan": (210, 180, 140),
    "wheat": (245, 222, 179),
    "beige": (245, 245, 220),
    "rosy brown": (188, 143, 143),
    "taupe": (110, 98, 88),
    "red": (220, 20, 20),
    "orange": (255, 165, 0),
    "salmon": (250, 128, 114),
    "pink": (255, 192, 203),
    "purple": (128, 0, 128),
    "plum": (221, 160, 221),
}
MODIFIERS = ("dark", "light")
MODIFIER_L = 16.0                  # Lab lightness step of "dark"/"light"
_UNMODIFIED = ("black", "white")   # "light black" is charcoal, "dark white" is silver: named already


def _build_colours() -> dict[str, tuple[int, int, int]]:
    from skimage.color import lab2rgb, rgb2lab

    colours = {}
    for name, rgb in BASE_COLOURS.items():
        colours[name] = rgb
        if name in _UNMODIFIED:
            continue
        lab = rgb2lab(np.array([[rgb]], dtype=np.float64) / 255.0)
        for modifier, step in zip(MODIFIERS, (-MODIFIER_L, MODIFIER_L)):
            shifted = lab.copy()
            shifted[..., 0] = np.clip(shifted[..., 0] + step, 0.0, 100.0)
            out = tuple(int(v) for v in np.clip(lab2rgb(shifted)[0, 0] * 255.0, 0, 255).round())
            colours[f"{modifier} {name}"] = out
    return colours


COLOURS: dict[str, tuple[int, int, int]] = _build_colours()

NEUTRAL_RGB = (128, 128, 128)      # what a renderer paints when the text names no colour

# Cell names of the default 3x3 layout, row-major; other grid sizes use "r<row>c<col>".
POSITIONS_3X3 = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")

# Texture word -> the fine-detail level (colour_layout.detail_level, 0..255 units) it stands for. Measured
# on the bundled photos: night sky 0.8, blurred backdrops 2.3-2.4, wood grain 4.0.
TEXTURES: dict[str, float] = {"smooth": 1.0, "grainy": 3.0, "rough": 8.0}
TEXTURE_KEY = "texture"

_NAMES = tuple(COLOURS)
_LAB = None


def _palette_lab() -> np.ndarray:
    global _LAB
    if _LAB is None:
        from skimage.color import rgb2lab

        _LAB = rgb2lab(np.array([COLOURS[n] for n in _NAMES], dtype=np.float64)[None] / 255.0)[0]
    return _LAB


def nearest_colour(rgb: np.ndarray) -> list[str]:
    """(..., 3) RGB in 0..255 -> the nearest colour name of each, by CIE76 distance in Lab."""
    from skimage.color import rgb2lab

    rgb = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    lab = rgb2lab(np.clip(rgb, 0, 255)[None] / 255.0)[0]
    dist = np.linalg.norm(lab[:, None, :] - _palette_lab()[None, :, :], axis=2)
    return [_NAMES[i] for i in dist.argmin(axis=1)]


def position_name(row: int, col: int, grid: int) -> str:
    """Name of cell (row, col) in a grid x grid layout."""
    return POSITIONS_3X3[3 * row + col] if grid == 3 else f"r{row}c{col}"


def parse_position(word: str) -> tuple[int, int, int | None] | None:
    """Inverse of position_name: (row, col, grid or None if implied by the largest index), else None."""
    if word in POSITIONS_3X3:
        i = POSITIONS_3X3.index(word)
        return i // 3, i % 3, 3
    if word.startswith("r") and "c" in word:
        row, _, col = word[1:].partition("c")
        if row.isdigit() and col.isdigit() and len(row) <= 2 and len(col) <= 2:
            return int(row), int(col), None
    return None
