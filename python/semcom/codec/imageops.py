"""Small image helpers shared by several codec stages."""

from __future__ import annotations

import cv2
import numpy as np

from semcom.constants import SEAM_FEATHER_PX


def feather(mask: np.ndarray, radius_px: float = SEAM_FEATHER_PX) -> np.ndarray:
    """Soft alpha for blending key pixels over a generated background, so the seam does not show.

    mask: (H, W) bool, True = key pixel. Returns (H, W) float32 in [0, 1]: 0 outside the mask, rising
    smoothly (smoothstep of the distance to the edge) to 1 at ``radius_px`` inside it. Alpha never leaks
    outside the mask, because pixels there may never have been sent.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if radius_px <= 0 or not mask.any():
        return mask.astype(np.float32)
    # Distance of each key pixel to the nearest non-key pixel (1 on the boundary); huge when all key.
    inside_px = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    t = np.clip((inside_px - 0.5) / float(radius_px), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def fill_from_neighbours(colours: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Give each invalid cell the mean colour of its valid 8-neighbours, growing outward.

    colours: (rows, cols, 3) float; valid: (rows, cols) bool with at least one True.
    """
    colours, valid = colours.copy(), valid.copy()
    while not valid.all():
        grown = valid.copy()
        for r, c in zip(*np.nonzero(~valid)):
            rs, cs = slice(max(r - 1, 0), r + 2), slice(max(c - 1, 0), c + 2)
            near = valid[rs, cs]
            if near.any():
                colours[r, c] = colours[rs, cs][near].mean(axis=0)
                grown[r, c] = True
        if (grown == valid).all():
            raise ValueError("no valid cell to fill the layout from")
        valid = grown
    return colours
