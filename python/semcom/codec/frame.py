"""Wire format: one ``SemanticFrame`` per image, split into PDUs so that a lost PDU costs only its part.

PDU (big-endian)::

    magic "SM" | version u8 | flags u8 | image_id u16 | segment u8 | index u16 | count u16 | payload

``segment`` is HEADER (geometry and the coarse key mask), KEY (whole key tiles, each
``tile_index u16 | length u16 | bytes``), TEXT (the compressed non-key description) or SKETCH (a tiny
coded thumbnail of the whole image, ``semcom.codec.sketch``; wire version 2). ``count`` is the number
of PDUs of that segment, so the receiver knows what is missing. The header PDU is sent
``HEADER_REPEATS`` times because nothing can be drawn without it; the sketch, which the background is
drawn from, ``SKETCH_REPEATS`` times. A header PDU with ``FLAG_SKETCH`` set announces a sketch, so
the receiver waits for it (and reports it lost when it never came). Version-1 PDUs (no sketch) are
still accepted.

The key tile grid is anchored at the image origin with ``tile_px`` squares. The sender codes real
pixels for the key mask grown by one mask block (the *coded* mask: a margin where the key region is
blended into the generated background), and the tiles that travel are exactly those that touch the
coded mask, so the receiver derives the tile list from the mask alone.

``SemanticFrame.to_bytes`` packs all PDUs of a frame with a CRC32 into one byte string (for files
and ZMQ); over the radio the packet layer's own CRC32 guards each PDU.

Every length is bounded before anything is allocated; any malformation raises ``WireError``.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from scipy import ndimage

from semcom.codec.imageio import check_image_size
from semcom.constants import (
    DEFAULT_PDU_BYTES,
    FRAME_MAGIC,
    HEADER_REPEATS,
    MAX_IMAGE_PIXELS,
    MAX_MASK_BYTES,
    MAX_PDUS_PER_FRAME,
    MAX_SKETCH_BYTES,
    MAX_TEXT_BYTES,
    PDU_MAGIC,
    SKETCH_REPEATS,
    SUPPORTED_WIRE_VERSIONS,
    TILE_PX_CHOICES,
    WIRE_VERSION,
)


class WireError(ValueError):
    """Bytes that do not follow the wire format (truncated, corrupt, out of bounds)."""


class FrameTooLarge(WireError):
    """A header claiming more pixels than the receiver is configured to decode."""


class TileTooLarge(ValueError):
    """A coded key tile does not fit in one PDU; the encoder retries with smaller tiles."""


class Segment(IntEnum):
    HEADER = 0
    KEY = 1
    TEXT = 2
    SKETCH = 3      # wire version 2


SEGMENTS_OF_VERSION = {1: frozenset(Segment) - {Segment.SKETCH}, 2: frozenset(Segment)}
FLAG_SKETCH = 0x01                           # on HEADER PDUs: this frame carries a SKETCH segment

PDU_HEADER = struct.Struct(">2sBBHBHH")      # magic, version, flags, image_id, segment, index, count
GEOMETRY = struct.Struct(">HHBBBBH")         # width, height, tile_px, mask_block_px, key codec, text codec, mask_len
TILE_RECORD = struct.Struct(">HH")           # tile index, coded length
FRAME_PREFIX = struct.Struct(">4sBH")        # magic, version, number of PDUs
PDU_LENGTH = struct.Struct(">H")
FRAME_CRC = struct.Struct(">I")
MAX_MASK_BLOCK_PX = 64


@dataclass
class SemanticFrame:
    """Everything the receiver needs for one image. Missing parts are simply absent.

    ``mask_blocks``: (ceil(H / mask_block_px), ceil(W / mask_block_px)) bool, the coarse key mask.
    ``key_tiles``: tile index -> coded tile bytes (a lost tile is a missing key).
    ``text``: compressed non-key description, or None when it was lost.
    ``sketch``: coded thumbnail (``semcom.codec.sketch``), or None when none was sent or it was lost;
    ``sketch_lost`` is True when the header announced one that never arrived.
    """

    image_id: int
    width: int
    height: int
    tile_px: int
    mask_block_px: int
    key_codec_id: int
    text_codec_id: int
    mask_blocks: np.ndarray
    key_tiles: dict[int, bytes] = field(default_factory=dict)
    text: bytes | None = None
    sketch: bytes | None = None
    sketch_lost: bool = False

    def __post_init__(self):
        _check_geometry(self.width, self.height, self.tile_px, self.mask_block_px)
        if not 0 <= self.image_id <= 0xFFFF:
            raise WireError(f"image_id {self.image_id} outside 0..65535")
        expected = _mask_grid_shape(self.width, self.height, self.mask_block_px)
        if self.mask_blocks.shape != expected:
            raise WireError(f"mask grid {self.mask_blocks.shape} does not match {expected} for the image size")
        self.mask_blocks = self.mask_blocks.astype(bool)

    # --- geometry derived from the header -------------------------------------------------------
    @property
    def tile_grid(self) -> tuple[int, int]:
        """(rows, cols) of the tile grid covering the image."""
        return -(-self.height // self.tile_px), -(-self.width // self.tile_px)

    def key_mask(self) -> np.ndarray:
        """(H, W) bool key mask as both ends see it (the coarse mask at full resolution)."""
        return self._full_resolution(self.mask_blocks)

    def coded_mask(self) -> np.ndarray:
        """(H, W) bool: key mask plus a one-block margin, the pixels whose real values are sent."""
        grown = ndimage.binary_dilation(self.mask_blocks, structure=np.ones((3, 3), bool))
        return self._full_resolution(grown)

    def _full_resolution(self, blocks: np.ndarray) -> np.ndarray:
        b = self.mask_block_px
        return np.repeat(np.repeat(blocks, b, axis=0), b, axis=1)[: self.height, : self.width]

    def tile_box(self, index: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) pixel box of tile ``index``, clipped to the image."""
        rows, cols = self.tile_grid
        if not 0 <= index < rows * cols:
            raise WireError(f"tile index {index} outside the {rows}x{cols} grid")
        r, c = divmod(index, cols)
        y0, x0 = r * self.tile_px, c * self.tile_px
        return y0, x0, min(y0 + self.tile_px, self.height), min(x0 + self.tile_px, self.width)

    def key_tile_indices(self) -> list[int]:
        """Indices of the tiles that touch the coded mask: the tiles the sender codes."""
        mask = self.coded_mask()
        rows, cols = self.tile_grid
        padded = np.zeros((rows * self.tile_px, cols * self.tile_px), bool)
        padded[: self.height, : self.width] = mask
        touched = padded.reshape(rows, self.tile_px, cols, self.tile_px).any(axis=(1, 3))
        return [int(i) for i in np.flatnonzero(touched)]

    @property
    def missing_tiles(self) -> list[int]:
        return [i for i in self.key_tile_indices() if i not in self.key_tiles]

    # --- PDUs ------------------------------------------------------------------------------------
    def to_pdus(self, pdu_bytes: int = DEFAULT_PDU_BYTES, header_repeats: int = HEADER_REPEATS,
                sketch_repeats: int = SKETCH_REPEATS, text_repeats: int = 1) -> list[bytes]:
        """Split into PDUs of at most ``pdu_bytes``; raises TileTooLarge if a tile cannot fit.

        Repeated header, sketch and text PDUs are identical copies; the receiver keeps the first."""
        capacity = pdu_bytes - PDU_HEADER.size
        header = self._header_payload()
        if len(header) > capacity:
            raise WireError(f"header of {len(header)} bytes does not fit a {pdu_bytes}-byte PDU")
        if self.text is not None and len(self.text) > min(capacity, MAX_TEXT_BYTES):
            raise WireError(f"text of {len(self.text)} bytes does not fit a {pdu_bytes}-byte PDU")
        if self.sketch is not None and len(self.sketch) > min(capacity, MAX_SKETCH_BYTES):
            raise WireError(f"sketch of {len(self.sketch)} bytes does not fit a {pdu_bytes}-byte PDU")

        key_payloads: list[bytes] = []
        current = b""
        for index in sorted(self.key_tiles):
            record = TILE_RECORD.pack(index, len(self.key_tiles[index])) + self.key_tiles[index]
            if len(record) > capacity:
                raise TileTooLarge(f"tile {index} codes to {len(record)} bytes, PDU payload holds {capacity}")
            if len(current) + len(record) > capacity:
                key_payloads.append(current)
                current = b""
            current += record
        if current:
            key_payloads.append(current)

        flags = FLAG_SKETCH if self.sketch is not None else 0
        pdus = [self._pdu(Segment.HEADER, 0, 1, header, flags)] * max(1, header_repeats)
        if self.sketch is not None:
            pdus += [self._pdu(Segment.SKETCH, 0, 1, self.sketch)] * max(1, sketch_repeats)
        pdus += [self._pdu(Segment.KEY, i, len(key_payloads), p) for i, p in enumerate(key_payloads)]
        if self.text is not None:
            pdus += [self._pdu(Segment.TEXT, 0, 1, self.text)] * max(1, text_repeats)
        if len(pdus) > MAX_PDUS_PER_FRAME:
            raise WireError(f"{len(pdus)} PDUs exceed the limit of {MAX_PDUS_PER_FRAME} per frame")
        return pdus

    def _pdu(self, segment: Segment, index: int, count: int, payload: bytes, flags: int = 0) -> bytes:
        return PDU_HEADER.pack(PDU_MAGIC, WIRE_VERSION, flags, self.image_id, segment, index, count) + payload

    def _header_payload(self) -> bytes:
        mask = zlib.compress(np.packbits(self.mask_blocks.ravel()).tobytes(), 9)
        if len(mask) > MAX_MASK_BYTES:
            raise WireError(f"coded mask of {len(mask)} bytes exceeds {MAX_MASK_BYTES}")
        return GEOMETRY.pack(self.width, self.height, self.tile_px, self.mask_block_px,
                             self.key_codec_id, self.text_codec_id, len(mask)) + mask

    # --- one byte string -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """All PDUs (header and sketch once) in one CRC-protected byte string."""
        pdus = self.to_pdus(pdu_bytes=0xFFFF, header_repeats=1, sketch_repeats=1)
        body = FRAME_PREFIX.pack(FRAME_MAGIC, WIRE_VERSION, len(pdus))
        body += b"".join(PDU_LENGTH.pack(len(p)) + p for p in pdus)
        return body + FRAME_CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> SemanticFrame:
        """Inverse of ``to_bytes``; raises WireError on truncation, corruption or a bad CRC."""
        if len(data) < FRAME_PREFIX.size + FRAME_CRC.size:
            raise WireError(f"frame of {len(data)} bytes is shorter than its fixed fields")
        body, (crc,) = data[: -FRAME_CRC.size], FRAME_CRC.unpack(data[-FRAME_CRC.size:])
        if zlib.crc32(body) != crc:
            raise WireError("frame CRC mismatch (truncated or corrupted)")
        magic, version, n_pdus = FRAME_PREFIX.unpack_from(body)
        if magic != FRAME_MAGIC:
            raise WireError(f"bad frame magic {magic!r}")
        if version not in SUPPORTED_WIRE_VERSIONS:
            raise WireError(f"frame version {version} is not supported (versions {SUPPORTED_WIRE_VERSIONS})")
        if n_pdus > MAX_PDUS_PER_FRAME:
            raise WireError(f"{n_pdus} PDUs exceed the limit of {MAX_PDUS_PER_FRAME}")
        assembler = FrameAssembler()
        frames: list[SemanticFrame] = []
        offset = FRAME_PREFIX.size
        for _ in range(n_pdus):
            if offset + PDU_LENGTH.size > len(body):
                raise WireError("frame truncated inside its PDU list")
            (length,) = PDU_LENGTH.unpack_from(body, offset)
            offset += PDU_LENGTH.size
            if offset + length > len(body):
                raise WireError("frame truncated inside a PDU")
            frames += assembler.add(parse_pdu(body[offset: offset + length]))
            offset += length
        if offset != len(body):
            raise WireError(f"{len(body) - offset} trailing bytes after the last PDU")
        frames += assembler.flush_all()
        if len(frames) != 1:
            raise WireError(f"expected one frame with a header, found {len(frames)}")
        return frames[0]


def _mask_grid_shape(width: int, height: int, block_px: int) -> tuple[int, int]:
    return -(-height // block_px), -(-width // block_px)


def _check_geometry(width: int, height: int, tile_px: int, mask_block_px: int) -> None:
    check_image_size(width, height, what="frame header", error=WireError)
    if tile_px not in TILE_PX_CHOICES:
        raise WireError(f"tile size {tile_px} not one of {TILE_PX_CHOICES}")
    if not 1 <= mask_block_px <= MAX_MASK_BLOCK_PX:
        raise WireError(f"mask block {mask_block_px} outside 1..{MAX_MASK_BLOCK_PX}")


# --- parsing ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pdu:
    image_id: int
    segment: Segment
    index: int
    count: int
    payload: bytes
    flags: int = 0


def parse_pdu(data: bytes) -> Pdu:
    """Check a PDU's fixed fields; raises WireError for anything that is not ours or out of range."""
    if len(data) < PDU_HEADER.size:
        raise WireError(f"PDU of {len(data)} bytes is shorter than its {PDU_HEADER.size}-byte header")
    magic, version, flags, image_id, segment, index, count = PDU_HEADER.unpack_from(data)
    if magic != PDU_MAGIC:
        raise WireError(f"bad PDU magic {magic!r}")
    if version not in SUPPORTED_WIRE_VERSIONS:
        raise WireError(f"PDU version {version} is not supported (versions {SUPPORTED_WIRE_VERSIONS})")
    if segment not in SEGMENTS_OF_VERSION[version]:
        raise WireError(f"unknown segment {segment} for wire version {version}")
    if not 1 <= count <= MAX_PDUS_PER_FRAME or index >= count:
        raise WireError(f"PDU index {index} of count {count} is out of range")
    payload = bytes(data[PDU_HEADER.size:])
    if segment == Segment.TEXT and len(payload) > MAX_TEXT_BYTES:
        raise WireError(f"text payload of {len(payload)} bytes exceeds {MAX_TEXT_BYTES}")
    if segment == Segment.SKETCH and len(payload) > MAX_SKETCH_BYTES:
        raise WireError(f"sketch payload of {len(payload)} bytes exceeds {MAX_SKETCH_BYTES}")
    return Pdu(image_id, Segment(segment), index, count, payload, flags)


def _parse_header(image_id: int, payload: bytes) -> SemanticFrame:
    if len(payload) < GEOMETRY.size:
        raise WireError("header payload truncated")
    width, height, tile_px, block_px, key_codec, text_codec, mask_len = GEOMETRY.unpack_from(payload)
    _check_geometry(width, height, tile_px, block_px)
    if len(payload) != GEOMETRY.size + mask_len:
        raise WireError(f"header says {mask_len} mask bytes, payload holds {len(payload) - GEOMETRY.size}")
    grid = _mask_grid_shape(width, height, block_px)
    n_bytes = -(-(grid[0] * grid[1]) // 8)
    inflater = zlib.decompressobj()
    try:
        packed = inflater.decompress(payload[GEOMETRY.size:], n_bytes + 1)
    except zlib.error as exc:
        raise WireError(f"key mask does not decompress: {exc}") from None
    if len(packed) != n_bytes or not inflater.eof:
        raise WireError(f"key mask holds {len(packed)} bytes, the {grid} grid needs {n_bytes}")
    bits = np.unpackbits(np.frombuffer(packed, np.uint8))[: grid[0] * grid[1]].reshape(grid)
    return SemanticFrame(image_id, width, height, tile_px, block_px, key_codec, text_codec, bits.astype(bool))


def _parse_key_records(payload: bytes) -> dict[int, bytes]:
    tiles, offset = {}, 0
    while offset < len(payload):
        if offset + TILE_RECORD.size > len(payload):
            raise WireError("key tile record truncated")
        index, length = TILE_RECORD.unpack_from(payload, offset)
        offset += TILE_RECORD.size
        if offset + length > len(payload):
            raise WireError(f"key tile {index} says {length} bytes, {len(payload) - offset} remain")
        tiles[index] = payload[offset: offset + length]
        offset += length
    return tiles


# --- reassembly --------------------------------------------------------------------------------------
@dataclass
class AssemblyStats:
    """Counters a receiver reports: every PDU is either accepted, a duplicate, or dropped."""

    pdus_accepted: int = 0
    pdus_duplicate: int = 0
    pdus_dropped: int = 0
    frames_complete: int = 0
    frames_partial: int = 0
    frames_without_header: int = 0
    frames_too_large: int = 0       # headers claiming more than max_pixels: dropped there, with that image's PDUs


@dataclass
class _Pending:
    last_seen_s: float
    header: SemanticFrame | None = None
    key_counts: set = field(default_factory=set)
    key_pdus: dict = field(default_factory=dict)        # PDU index -> tiles it carried
    text: bytes | None = None
    sketch_announced: bool = False
    sketch: bytes | None = None
    expected_tiles: frozenset = frozenset()             # from the header, computed once per frame

    def complete(self) -> bool:
        if self.header is None or self.text is None or (self.sketch_announced and self.sketch is None):
            return False
        expected = len(self.expected_tiles)
        if expected == 0:
            return True
        return len(self.key_counts) == 1 and len(self.key_pdus) == next(iter(self.key_counts))


class FrameAssembler:
    """Collects PDUs of possibly interleaved images into frames.

    A frame is emitted when complete, when no PDU of it came for ``timeout_s`` (partial: missing
    tiles are generated by the receiver), or when more than ``max_open_frames`` are pending (oldest first).
    Frames that never got their header are dropped and counted.

    Every PDU is treated as hostile: one longer than ``max_pdu_bytes`` (the link's MTU) is dropped
    unread; a header claiming more than ``max_pixels`` is dropped and counted (``frames_too_large``),
    and so are the later PDUs of that image; once the header is known, a KEY segment may not announce
    more PDUs than the header has key tiles. Memory is bounded by ``max_open_frames`` x
    ``MAX_PDUS_PER_FRAME`` x ``max_pdu_bytes`` (stored payloads) plus, once per frame, the key mask
    at full resolution (``max_pixels`` bytes, to list the expected tiles); the work per PDU is
    proportional to its size, apart from that once-per-frame mask.
    """

    def __init__(self, timeout_s: float = 2.0, max_open_frames: int = 8, clock=time.monotonic,
                 max_pdu_bytes: int = 0xFFFF, max_pixels: int = MAX_IMAGE_PIXELS):
        self.timeout_s = timeout_s
        self.max_open_frames = max_open_frames
        self.clock = clock
        self.max_pdu_bytes = max_pdu_bytes
        self.max_pixels = max_pixels
        self.stats = AssemblyStats()
        self.last_error = ""
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._finished: deque[int] = deque(maxlen=64)   # ids emitted recently: late duplicates are ignored
        self._refused: deque[int] = deque(maxlen=64)    # ids whose header was too large: later PDUs dropped

    def push(self, data: bytes) -> list[SemanticFrame]:
        """Add one raw PDU; returns the frames it finished. Malformed PDUs are counted, never raised."""
        try:
            if len(data) > self.max_pdu_bytes:
                raise WireError(f"PDU of {len(data)} bytes exceeds the MTU of {self.max_pdu_bytes}")
            pdu = parse_pdu(data)
        except WireError as exc:
            self.stats.pdus_dropped += 1
            self.last_error = str(exc)
            return []
        return self.add(pdu)

    def add(self, pdu: Pdu) -> list[SemanticFrame]:
        if pdu.image_id in self._refused:
            self.stats.pdus_dropped += 1
            return []
        if pdu.image_id in self._finished:
            self.stats.pdus_duplicate += 1
            return []
        pending = self._pending.get(pdu.image_id)
        if pending is None:
            pending = self._pending[pdu.image_id] = _Pending(last_seen_s=self.clock())
        pending.last_seen_s = self.clock()
        try:
            duplicate = self._store(pending, pdu)
        except FrameTooLarge as exc:
            del self._pending[pdu.image_id]
            self._refused.append(pdu.image_id)
            self.stats.frames_too_large += 1
            self.stats.pdus_dropped += 1
            self.last_error = str(exc)
            return []
        except WireError as exc:
            self.stats.pdus_dropped += 1
            self.last_error = str(exc)
            return self._evict_overflow()
        if duplicate:
            self.stats.pdus_duplicate += 1
        else:
            self.stats.pdus_accepted += 1
        done = []
        if pending.complete():
            done.append(self._finish(pdu.image_id))
        return done + self._evict_overflow()

    def _store(self, pending: _Pending, pdu: Pdu) -> bool:
        """Store the PDU's content; True when it was a duplicate."""
        if pdu.segment == Segment.HEADER:
            if pending.header is not None:
                return True
            header = _parse_header(pdu.image_id, pdu.payload)
            if header.width * header.height > self.max_pixels:
                raise FrameTooLarge(f"image {pdu.image_id} claims {header.width}x{header.height} pixels, "
                                    f"more than the receiver's limit of {self.max_pixels}")
            pending.expected_tiles = frozenset(header.key_tile_indices())
            pending.header = header
            pending.sketch_announced = bool(pdu.flags & FLAG_SKETCH)
        elif pdu.segment == Segment.SKETCH:
            if pending.sketch is not None:
                return True
            pending.sketch = pdu.payload
        elif pdu.segment == Segment.TEXT:
            if pending.text is not None:
                return True
            pending.text = pdu.payload
        else:
            if pdu.index in pending.key_pdus:
                return True
            if pending.header is not None and pdu.count > len(pending.expected_tiles):
                raise WireError(f"KEY segment of {pdu.count} PDUs for {len(pending.expected_tiles)} key tiles")
            tiles = _parse_key_records(pdu.payload)
            pending.key_counts.add(pdu.count)
            pending.key_pdus[pdu.index] = tiles
        return False

    def _evict_overflow(self) -> list[SemanticFrame]:
        done = []
        while len(self._pending) > self.max_open_frames:
            image_id = next(iter(self._pending))
            frame = self._finish(image_id)
            if frame is not None:
                done.append(frame)
        return done

    def flush_expired(self) -> list[SemanticFrame]:
        """Emit (partial) frames that received nothing for ``timeout_s``."""
        now = self.clock()
        expired = [i for i, p in self._pending.items() if now - p.last_seen_s >= self.timeout_s]
        return [f for f in (self._finish(i) for i in expired) if f is not None]

    def flush_all(self) -> list[SemanticFrame]:
        """Emit every pending frame that has a header (end of stream)."""
        return [f for f in (self._finish(i) for i in list(self._pending)) if f is not None]

    @property
    def open_frames(self) -> int:
        return len(self._pending)

    def _finish(self, image_id: int) -> SemanticFrame | None:
        pending = self._pending.pop(image_id)
        self._finished.append(image_id)
        if pending.header is None:
            self.stats.frames_without_header += 1
            return None
        frame = pending.header
        valid = pending.expected_tiles
        for tiles in pending.key_pdus.values():
            frame.key_tiles.update((i, t) for i, t in tiles.items() if i in valid)
        frame.text = pending.text
        frame.sketch = pending.sketch
        frame.sketch_lost = pending.sketch_announced and pending.sketch is None
        if pending.complete() and valid <= frame.key_tiles.keys():
            self.stats.frames_complete += 1
        else:
            self.stats.frames_partial += 1
        return frame
