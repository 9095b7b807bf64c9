"""The interface of each codec stage. Backends implement one of these; shapes are documented here once.

Images are ``np.ndarray`` of shape (H, W, 3), dtype uint8, RGB. Masks are (H, W) bool unless noted.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class RegionSplitter(Protocol):
    """Image -> key mask: True where the pixel belongs to the object that matters."""

    def split(self, image: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class KeyTileCodec(Protocol):
    """One key-region tile <-> bytes. Tiles are coded independently so that a lost PDU costs one tile.

    ``codec_id`` (0..255) goes on the wire so the receiver can refuse a frame coded with a codec it lacks.
    A codec with a rate knob takes ``quality`` (1..``max_quality``, higher = more bytes) in its constructor
    and exposes ``max_quality``, so rate control (``semcom eval``) can search it.

    Optional: ``encode_tiles_at(image, boxes) -> [bytes]`` and ``decode_tiles_at([(bytes, box)]) ->
    [pixels or None]`` (box = (y0, x0, y1, x1)) for a codec whose model should see the whole key region
    at once (the SD VAE: GroupNorm and attention over 64-px crops leave seams); each tile is still
    its own chunk on the wire, so a lost PDU costs one tile.
    """

    codec_id: int

    def encode_tile(self, tile: np.ndarray) -> bytes:
        """tile: (h, w, 3) uint8 with h, w <= the frame's tile size."""
        ...

    def decode_tile(self, data: bytes, height: int, width: int) -> np.ndarray:
        """Returns (height, width, 3) uint8; raises ValueError on corrupt data or a shape mismatch."""
        ...


@runtime_checkable
class Describer(Protocol):
    """Non-key region -> text a generator can paint from (image-to-text)."""

    def describe(self, image: np.ndarray, key_mask: np.ndarray) -> str: ...


@runtime_checkable
class TextCodec(Protocol):
    """Text <-> bytes. ``codec_id`` goes on the wire."""

    codec_id: int

    def compress(self, text: str) -> bytes: ...

    def decompress(self, data: bytes) -> str:
        """Raises ValueError on corrupt or oversized data."""
        ...


@runtime_checkable
class Generator(Protocol):
    """Text (+ sketch) + the pixels the receiver knows -> a full image.

    ``known``: (H, W, 3) uint8, meaningful where ``known_alpha`` > 0.
    ``known_alpha``: (H, W) float32 in [0, 1], 1 = keep the known pixel, 0 = generate.
    ``sketch``: (h, w, 3) uint8 thumbnail of the whole image (the SKETCH segment), or None.
    Returns (H, W, 3) uint8 where known pixels are blended over the generated background.
    """

    def generate(self, text: str, known: np.ndarray, known_alpha: np.ndarray, seed: int = 0,
                 sketch: np.ndarray | None = None) -> np.ndarray: ...
