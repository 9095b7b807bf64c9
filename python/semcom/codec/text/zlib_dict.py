"""Raw deflate with a preset dictionary of the layout vocabulary: ~200 chars of description -> ~40 bytes.

The dictionary is part of the wire format (the receiver must use the very same bytes), so it is built
deterministically from the vocabulary, and its CRC is pinned by a test: changing the vocabulary means
a new codec_id.

``zlib`` (id 1): layout vocabulary only. ``zlib-v2`` (id 2): the 1000 ImageNet class names (the words
of the ``labels`` describer, from ``gr-semcom/labels/imagenet_classes.txt``) in front of the id-1
dictionary, so a label costs ~3 bytes instead of ~1 byte a character (measured on the bundled photos:
labels + layout 49-54 bytes with v2, 60-82 with v1; a bare layout compresses to the same size with
both). The names go first because deflate codes near matches with fewer bits and the layout skeleton
is the commonest text; 13 KB fits deflate's 32 KB window.
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

# CRC-32 of the zlib-v2 dictionary, checked when it is built: a receiver whose label file differs
# from the sender's would inflate wrong words without noticing, so it refuses instead.
PRESET_V2_CRC = 0xAADFE952
_preset_v2: bytes | None = None


def build_preset_v2(labels_path=None) -> bytes:
    """The zlib-v2 dictionary: "name, " for every ImageNet class in class-index order, then ``PRESET``."""
    from semcom.codec.describe.mobilenet_v2 import load_labels

    names = "".join(f"{name}, " for name in load_labels(labels_path))
    return names.encode("ascii") + PRESET


def preset_v2() -> bytes:
    """The zlib-v2 dictionary, built once from the shipped label file and checked against PRESET_V2_CRC."""
    global _preset_v2
    if _preset_v2 is None:
        preset = build_preset_v2()
        if zlib.crc32(preset) != PRESET_V2_CRC:
            raise ValueError(f"zlib-v2 dictionary CRC {zlib.crc32(preset):#010x} != {PRESET_V2_CRC:#010x}: the "
                             "ImageNet label file differs from the one this wire format was frozen with")
        _preset_v2 = preset
    return _preset_v2


@register("text", "zlib")
class ZlibTextCodec:
    """Raw deflate (no header, no checksum: the PDU's CRC already guards it) with ``PRESET``."""

    codec_id = 1

    @property
    def preset(self) -> bytes:
        return PRESET

    def compress(self, text: str) -> bytes:
        """UTF-8 text of at most MAX_TEXT_CHARS -> at most MAX_TEXT_BYTES bytes, else ValueError."""
        raw = text.encode("utf-8")
        if len(raw) > MAX_TEXT_CHARS:
            raise ValueError(f"text is {len(raw)} bytes of UTF-8, more than MAX_TEXT_CHARS={MAX_TEXT_CHARS}")
        packer = zlib.compressobj(level=9, wbits=-15, zdict=self.preset)
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
        unpacker = zlib.decompressobj(wbits=-15, zdict=self.preset)
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


@register("text", "zlib-v2")
class ZlibV2TextCodec(ZlibTextCodec):
    """``zlib`` with the ImageNet class names added to the dictionary (``preset_v2()``): for ``labels`` text."""

    codec_id = 2

    def __init__(self):
        self._preset = preset_v2()     # fail at construction (missing or altered label file), not mid-frame

    @property
    def preset(self) -> bytes:
        return self._preset
