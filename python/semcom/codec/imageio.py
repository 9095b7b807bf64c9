"""Read images from files or bytes into (H, W, 3) uint8 RGB, refusing what cannot be used by name."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from semcom.constants import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE_PX


def check_image_size(width: int, height: int, what: str = "image", error: type[ValueError] = ValueError) -> None:
    """The one size rule for images, masks and frame headers: each side and the pixel count bounded."""
    if width < 1 or height < 1:
        raise error(f"{what}: {width}x{height} pixels has an empty side")
    if max(width, height) > MAX_IMAGE_SIDE_PX:
        raise error(f"{what}: {width}x{height} pixels exceeds the {MAX_IMAGE_SIDE_PX}-pixel side limit")
    if width * height > MAX_IMAGE_PIXELS:
        raise error(f"{what}: {width}x{height} pixels exceeds the limit of {MAX_IMAGE_PIXELS} pixels")


def open_image(source: str | Path | bytes, what: str = "") -> Image.Image:
    """Open and decode an image file or bytes, checking its size from the header before decoding.

    Raises ValueError naming the problem (no such file, unreadable, truncated, too large).
    """
    name = what or ("image bytes" if isinstance(source, (bytes, bytearray)) else str(source))
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(stream)
            check_image_size(*img.size, what=name)
            img.load()
    except FileNotFoundError:
        raise ValueError(f"{name}: no such file") from None
    except (OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"{name}: not a readable image ({exc})") from None
    return img


def load_image(source: str | Path | bytes) -> np.ndarray:
    """Decode a file path or encoded bytes to (H, W, 3) uint8; grayscale, alpha, 16-bit and CMYK
    become 8-bit RGB. Raises ValueError naming the problem."""
    return to_rgb8(open_image(source))


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8; 16-bit data is scaled, not clipped; alpha is composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        data = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or data.max() > 255 else 255.0
        gray = np.clip(np.round(data / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def save_png(image: np.ndarray, path: str | Path | None = None) -> bytes:
    """Encode (H, W, 3) or (H, W) uint8 as PNG; also write it when ``path`` is given."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
