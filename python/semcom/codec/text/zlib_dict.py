"""Raw deflate with a preset dictionary of the layout vocabulary: ~200 chars of description -> ~40 bytes.

The dictionary is part of the wire format (the receiver must use the very same bytes), so it is built
deterministically from the vocabulary, and its CRC is pinned by a test: changing the vocabulary means
a new codec_id.
"""

from __future__ import annotations

import zlib

from semcom.codec.describe import vocabulary as vocab
from semcom.codec.registry import register
from semcom.constants import MAX_TEXT_BYTES, MAX_TEXT_CHARS


def build_preset() -> bytes:
    """The preset dictionary. Deflate codes near matches with fewer bits, so the most common strings
    (the layout skeleton) go last, right before the data."""
    colours = " ".join(f"{name}," for name in sorted(vocab.COLOURS, key=lambda n: -len(n)))
    textures = " ".join(f"{vocab.TEXTURE_KEY}: {word}" for word in vocab.TEXTURES)
    layout = ", ".join(f"{position}: " for position in vocab.POSITIONS_3X3)
    return f"a photo of {colours} {textures}, {layout}".encode("ascii")


PRESET = build_preset()


@register("text", "zlib")
class ZlibTextCodec:
    """Raw deflate (no header, no checksum: the PDU's CRC already guards it) with ``PRESET``."""

    codec_id = 1

    def compress(self, text: str) -> bytes:
        """UTF-8 text of at most MAX_TEXT_CHARS -> at most MAX_TEXT_BYTES bytes, else ValueError."""
        raw = text.encode("utf-8")
        if len(raw) > MAX_TEXT_CHARS:
            raise ValueError(f"text is {len(raw)} bytes of UTF-8, more than MAX_TEXT_CHARS={MAX_TEXT_CHARS}")
        packer = zlib.compressobj(level=9, wbits=-15, zdict=PRESET)
        data = packer.compress(raw) + packer.flush()
        if len(data) > MAX_TEXT_BYTES:
            raise ValueError(f"text compresses to {len(data)} bytes, more than MAX_TEXT_BYTES={MAX_TEXT_BYTES}")
        return data

    def decompress(self, data: bytes) -> str:
        """Inverse of compress; corrupt, truncated, trailing-garbage or oversized input -> ValueError.

        Output is capped at MAX_TEXT_CHARS bytes while inflating, so a deflate bomb costs no memory.
        """
        if len(data) > MAX_TEXT_BYTES:
            raise ValueError(f"compressed text is {len(data)} bytes, more than MAX_TEXT_BYTES={MAX_TEXT_BYTES}")
        unpacker = zlib.decompressobj(wbits=-15, zdict=PRESET)
        try:
            raw = unpacker.decompress(bytes(data), MAX_TEXT_CHARS + 1)
        except zlib.error as exc:
            raise ValueError(f"corrupt compressed text: {exc}") from exc
        if len(raw) > MAX_TEXT_CHARS or unpacker.unconsumed_tail:
            raise ValueError(f"compressed text expands past MAX_TEXT_CHARS={MAX_TEXT_CHARS}")
        if not unpacker.eof:
            raise ValueError("compressed text is truncated")
        if unpacker.unused_data:
            raise ValueError(f"{len(unpacker.unused_data)} bytes of garbage after the compressed text")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"compressed text is not UTF-8: {exc}") from exc
