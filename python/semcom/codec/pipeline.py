"""Encoder and decoder pipelines: compose the registered stage backends; they own no models themselves.

    image --regions--> key mask --key tiles--> KEY segment
                               \\--describe--> text --text codec--> TEXT segment
          --thumbnail (WebP, within the sketch budget)--> SKETCH segment
    frame --key tiles + text + sketch--> generate (background from sketch and text, key pixels blended in) --> image
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from semcom.codec import registry, sketch as sketch_codec
from semcom.codec.frame import PDU_HEADER, SemanticFrame, TileTooLarge
from semcom.codec.imageio import check_image_size
from semcom.codec.imageops import feather
from semcom.codec.key.deblock import deblock_tile_borders
from semcom.constants import (
    DEFAULT_MASK_BLOCK_PX,
    DEFAULT_PDU_BYTES,
    DEFAULT_SKETCH_BYTES,
    DEFAULT_TILE_PX,
    SEAM_FEATHER_PX,
    TILE_PX_CHOICES,
)

# Codecs a receiver builds when a frame names them although its config names another: the ones that
# ship with the module. Codec ids come off the air; a frame must not make the receiver load (or
# download) a large model it was not configured for.
SHIPPED_CODECS = {"key": ("avif", "webp", "jpeg", "learned"), "text": ("zlib", "zlib-v2")}

# A coarse mask block is key when at least this share of its pixels is key: thin parts survive,
# while a few stray pixels do not grow the key region by a whole block.
MASK_BLOCK_KEY_SHARE = 0.25


@dataclass
class PipelineConfig:
    """Which backend runs each stage, and its options. Plain data: loads from JSON/YAML presets."""

    regions: str = "saliency"
    regions_options: dict[str, Any] = field(default_factory=dict)
    key: str = "avif"          # the winner of benchmarks/key_region_rd.py on the evaluation photos
    key_options: dict[str, Any] = field(default_factory=dict)
    describe: str = "labels"
    describe_options: dict[str, Any] = field(default_factory=dict)
    text: str = "zlib-v2"
    text_options: dict[str, Any] = field(default_factory=dict)
    generate: str = "render"      # esrgan lost to it in ST-LPIPS on the evaluation photos (README, background)
    generate_options: dict[str, Any] = field(default_factory=dict)
    tile_px: int = DEFAULT_TILE_PX
    mask_block_px: int = DEFAULT_MASK_BLOCK_PX
    pdu_bytes: int = DEFAULT_PDU_BYTES
    # Bytes of one SKETCH copy (int), or a share of the frame's other bytes (float in (0, 1)); 0 = no sketch.
    sketch_budget: int | float = DEFAULT_SKETCH_BYTES

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown pipeline config keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        config = cls(**data)
        for stage in registry.STAGES:
            if not isinstance(getattr(config, stage), str):
                raise ValueError(f"pipeline config '{stage}' must be a backend name, got {getattr(config, stage)!r}")
            if not isinstance(getattr(config, f"{stage}_options"), dict):
                raise ValueError(f"pipeline config '{stage}_options' must be a mapping of options, "
                                 f"got {getattr(config, f'{stage}_options')!r}")
        if config.tile_px not in TILE_PX_CHOICES:
            raise ValueError(f"tile_px {config.tile_px} not one of {TILE_PX_CHOICES}")
        sketch_codec.budget_bytes(config.sketch_budget, 0)     # raises on a malformed budget
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> PipelineConfig:
        """JSON, or YAML when the name ends in .yml/.yaml."""
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yml", ".yaml"):
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ValueError(f"{path}: not valid YAML ({exc})") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a pipeline config is a mapping of stage names and options")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Encoded:
    """What the encoder produced, with the intermediate results a user may want to look at."""

    frame: SemanticFrame
    key_mask: np.ndarray        # (H, W) bool, as the receiver will see it
    description: str            # the non-key text before compression

    def to_pdus(self, pdu_bytes: int = DEFAULT_PDU_BYTES) -> list[bytes]:
        return self.frame.to_pdus(pdu_bytes)


@dataclass
class Reconstruction:
    """The receiver's image and a report of which parts were received and which were generated."""

    image: np.ndarray           # (H, W, 3) uint8
    key_mask: np.ndarray        # (H, W) bool, the key region as sent
    received_mask: np.ndarray   # (H, W) bool, key pixels that came from received tiles
    tiles_expected: int
    tiles_received: int
    tiles_corrupt: int
    description: str
    text_lost: bool
    sketch_received: bool = False   # the background was drawn from a received sketch
    sketch_lost: bool = False       # a sketch was sent but lost or corrupt: drawn from the text alone

    @property
    def generated_share(self) -> float:
        """Share of the key region that had to be generated (lost or corrupt tiles)."""
        key = int(self.key_mask.sum())
        return 0.0 if key == 0 else 1.0 - float((self.received_mask & self.key_mask).sum()) / key


def check_image(image: np.ndarray) -> np.ndarray:
    """Refuse what the stages cannot take, naming the problem."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    check_image_size(image.shape[1], image.shape[0])
    return image


def coarse_mask(key_mask: np.ndarray, block_px: int) -> np.ndarray:
    """(H, W) bool -> (ceil(H/b), ceil(W/b)) bool: a block is key if enough of it is key."""
    h, w = key_mask.shape
    rows, cols = -(-h // block_px), -(-w // block_px)
    padded = np.zeros((rows * block_px, cols * block_px), np.float32)
    padded[:h, :w] = key_mask
    share = padded.reshape(rows, block_px, cols, block_px).mean(axis=(1, 3))
    blocks = share >= MASK_BLOCK_KEY_SHARE
    if key_mask.any() and not blocks.any():
        blocks[np.unravel_index(np.argmax(share), share.shape)] = True
    return blocks


def extend_edges(tile: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Replace pixels outside ``inside`` by their nearest inside pixel.

    The receiver never shows those pixels, and a smooth extension costs the tile codec far fewer
    bytes than the real background would.
    """
    if inside.all() or not inside.any():
        return tile
    _, (rows, cols) = ndimage.distance_transform_edt(~inside, return_indices=True)
    return tile[rows, cols]


def blend_alpha(key_mask: np.ndarray, received_area: np.ndarray, radius_px: float) -> np.ndarray:
    """Alpha of the received pixels over the generated background, (H, W) float32 in [0, 1].

    1 on every key pixel of a received tile (so the key region is exactly what the codec decoded),
    falling to 0 across ``radius_px`` outside the key mask (the seam lies in the sent margin), and
    feathered inside ``received_area`` where a neighbouring tile was lost.
    """
    outside_px = cv2.distanceTransform((~key_mask).astype(np.uint8), cv2.DIST_L2, 5)
    t = np.clip(1.0 - outside_px / radius_px, 0.0, 1.0)
    outward = t * t * (3.0 - 2.0 * t)
    return (outward * feather(received_area, radius_px)).astype(np.float32)


def key_tile_pixels(image: np.ndarray, frame: SemanticFrame) -> list[np.ndarray]:
    """The pixels of ``frame``'s key tiles (``key_tile_indices`` order), the background outside the
    coded mask replaced by ``extend_edges``; edge tiles keep their clipped size."""
    coded = frame.coded_mask()
    tiles = []
    for index in frame.key_tile_indices():
        y0, x0, y1, x1 = frame.tile_box(index)
        tiles.append(np.ascontiguousarray(extend_edges(image[y0:y1, x0:x1], coded[y0:y1, x0:x1])))
    return tiles


class SemanticEncoder:
    """image -> SemanticFrame, using the backends the config names."""

    def __init__(self, config: PipelineConfig | None = None):
        self.config = config or PipelineConfig()
        c = self.config
        self.splitter = registry.create("regions", c.regions, **c.regions_options)
        self.key_codec = registry.create("key", c.key, **c.key_options)
        self.describer = registry.create("describe", c.describe, **c.describe_options)
        self.text_codec = registry.create("text", c.text, **c.text_options)

    def encode(self, image: np.ndarray, image_id: int = 0, key_mask: np.ndarray | None = None,
               code_key_tiles: bool = True) -> Encoded:
        """``key_mask`` (H, W) bool overrides the configured region splitter.

        ``code_key_tiles=False`` leaves the key tiles out of the frame (header, text and sketch only, at
        the configured ``tile_px``): the hybrid mode sends them as analog symbols beside it.
        """
        image = check_image(image)
        if key_mask is None:
            key_mask = self.splitter.split(image)
        key_mask = np.asarray(key_mask, bool)
        if key_mask.shape != image.shape[:2]:
            raise ValueError(f"key mask is {key_mask.shape[1]}x{key_mask.shape[0]}, "
                             f"image is {image.shape[1]}x{image.shape[0]}")
        h, w = key_mask.shape
        blocks = coarse_mask(key_mask, self.config.mask_block_px)
        description = self.describer.describe(image, key_mask)
        text = self.text_codec.compress(description)

        # Smaller tiles when one coded tile would overflow a PDU (very detailed key regions).
        choices = [t for t in TILE_PX_CHOICES if t <= self.config.tile_px] if code_key_tiles else [self.config.tile_px]
        for tile_px in choices:
            frame = SemanticFrame(image_id, w, h, tile_px, self.config.mask_block_px,
                                  self.key_codec.codec_id, self.text_codec.codec_id, blocks, text=text)
            if code_key_tiles:
                indices = frame.key_tile_indices()
                boxes = [frame.tile_box(index) for index in indices]
                frame.key_tiles.update(zip(indices, self._encode_tiles(key_tile_pixels(image, frame), boxes, image)))
            try:
                other_bytes = sum(len(p) for p in frame.to_pdus(self.config.pdu_bytes))
            except TileTooLarge:
                if tile_px == choices[-1]:
                    raise
                continue
            frame.sketch = self._sketch(image, frame.key_mask(), other_bytes)
            return Encoded(frame, frame.key_mask(), description)
        raise AssertionError("unreachable: the loop returns or raises")

    def _sketch(self, image: np.ndarray, key_mask: np.ndarray, other_bytes: int) -> bytes | None:
        """The SKETCH payload within the configured budget (and one PDU), or None."""
        budget = sketch_codec.budget_bytes(self.config.sketch_budget, other_bytes)
        budget = min(budget, self.config.pdu_bytes - PDU_HEADER.size)
        return sketch_codec.encode_sketch(image, budget, key_mask) if budget > 0 else None

    def _encode_tiles(self, tiles: list[np.ndarray], boxes: list[tuple[int, int, int, int]],
                      image: np.ndarray) -> list[bytes]:
        """One network call per tile shape when the codec offers a batched path (the learned codec);
        one call for the whole region when it codes tiles in place (``encode_tiles_at``, the SD VAE)."""
        in_place = getattr(self.key_codec, "encode_tiles_at", None)
        if in_place:
            prepared = image.copy()
            for tile, (y0, x0, y1, x1) in zip(tiles, boxes):
                prepared[y0:y1, x0:x1] = tile
            return in_place(prepared, boxes)
        batched = getattr(self.key_codec, "encode_tiles", None)
        return batched(tiles) if batched else [self.key_codec.encode_tile(t) for t in tiles]


class SemanticDecoder:
    """SemanticFrame (possibly partial) -> Reconstruction. Never raises on damaged content."""

    def __init__(self, config: PipelineConfig | None = None):
        self.config = config or PipelineConfig()
        c = self.config
        self.generator = registry.create("generate", c.generate, **c.generate_options)
        self._codecs: dict[tuple[str, int], Any] = {}

    def _codec(self, stage: str, codec_id: int):
        """The backend that decodes ``codec_id``: the configured one (with its options) or by id.

        Raises ValueError when this receiver cannot build it (unknown id, missing weights or package).
        A failure is remembered: ids come off the air, and retrying a model load (or a hub download
        that times out) for every frame would let any sender stall the receiver.
        """
        key = (stage, codec_id)
        if key not in self._codecs:
            try:
                name = registry.name_for_codec_id(stage, codec_id)
                configured = self.config.key if stage == "key" else self.config.text
                if name != configured and name not in SHIPPED_CODECS[stage]:
                    raise ValueError(f"backend {name!r} is not enabled on this receiver (configured: {configured!r})")
                options = (self.config.key_options if stage == "key" else self.config.text_options) \
                    if name == configured else {}
                self._codecs[key] = registry.create(stage, name, **options)
            except (ValueError, FileNotFoundError, ImportError) as exc:
                self._codecs[key] = f"{stage} codec id {codec_id} unavailable: {exc}"
        codec = self._codecs[key]
        if isinstance(codec, str):
            raise ValueError(codec)     # a fresh exception each time: re-raising one object grows its traceback
        return codec

    @staticmethod
    def _decode_tiles(key_codec, frame: SemanticFrame, expected) -> list[tuple[int, np.ndarray | None]]:
        """[(index, pixels or None if corrupt)] for the received key tiles; one call for the whole
        region when the codec decodes tiles in place (``decode_tiles_at``, the SD VAE)."""
        received = [i for i in expected if key_codec is not None and i in frame.key_tiles]
        in_place = getattr(key_codec, "decode_tiles_at", None)
        if in_place:
            try:
                return list(zip(received, in_place([(frame.key_tiles[i], frame.tile_box(i)) for i in received])))
            except ValueError:
                return [(i, None) for i in received]
        out = []
        for index in received:
            y0, x0, y1, x1 = frame.tile_box(index)
            try:
                out.append((index, key_codec.decode_tile(frame.key_tiles[index], y1 - y0, x1 - x0)))
            except ValueError:
                out.append((index, None))
        return out

    def decode(self, frame: SemanticFrame, seed: int | None = None,
               key_pixels: dict[int, np.ndarray] | None = None) -> Reconstruction:
        """``key_pixels``: tile index -> decoded (h, w, 3) pixels of key tiles that came outside the
        frame (the hybrid mode's analog tiles); they count as received tiles."""
        h, w = frame.height, frame.width
        key_mask = frame.key_mask()
        known = np.zeros((h, w, 3), np.uint8)
        received_area = np.zeros((h, w), bool)    # pixels covered by a decoded tile
        expected = frame.key_tile_indices()
        corrupt = 0
        try:
            key_codec = self._codec("key", frame.key_codec_id)
        except ValueError:
            # Unknown id, or a backend this receiver cannot build (no weights, no torch): every tile is generated.
            key_codec, corrupt = None, len(frame.key_tiles)
        for index, pixels in self._decode_tiles(key_codec, frame, expected):
            y0, x0, y1, x1 = frame.tile_box(index)
            if pixels is None:
                corrupt += 1
                continue
            known[y0:y1, x0:x1] = pixels
            received_area[y0:y1, x0:x1] = True
        outside = {i: p for i, p in (key_pixels or {}).items() if i in expected and i not in frame.key_tiles}
        for index, pixels in outside.items():
            y0, x0, y1, x1 = frame.tile_box(index)
            if pixels.ndim != 3 or pixels.shape[0] < y1 - y0 or pixels.shape[1] < x1 - x0 or pixels.shape[2] != 3:
                raise ValueError(f"key_pixels[{index}] has shape {pixels.shape}: tile {index} needs at least "
                                 f"({y1 - y0}, {x1 - x0}, 3)")
            known[y0:y1, x0:x1] = pixels[:y1 - y0, :x1 - x0]
            received_area[y0:y1, x0:x1] = True
        known = deblock_tile_borders(known, received_area, frame.tile_px)    # no tile grid in the key region

        description, text_lost = "", True
        if frame.text is not None:
            try:
                description = self._codec("text", frame.text_codec_id).decompress(frame.text)
                text_lost = False
            except ValueError:
                pass
        thumbnail, sketch_lost = None, frame.sketch_lost
        if frame.sketch is not None:
            try:
                thumbnail = sketch_codec.decode_sketch(frame.sketch, w, h)
            except ValueError:
                sketch_lost = True
        radius_px = min(SEAM_FEATHER_PX, frame.mask_block_px)
        alpha = blend_alpha(key_mask, received_area & frame.coded_mask(), radius_px)
        image = self.generator.generate(description, known, alpha, seed=frame.image_id if seed is None else seed,
                                        sketch=thumbnail)
        tiles_received = sum(1 for i in expected if i in frame.key_tiles) - corrupt + len(outside)
        return Reconstruction(image, key_mask, received_area & key_mask, len(expected), max(tiles_received, 0), corrupt,
                              description, text_lost, thumbnail is not None, sketch_lost)
