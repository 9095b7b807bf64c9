"""Learned key-tile codec: a small factorized-prior autoencoder + rANS entropy coding, trained by the project.

Tile bytes: one header byte (high nibble: the weights' bitstream version, low nibble: quality level
1..15) followed by
a rANS stream (see ``rans.py``) of the quantized latents, channel-major, each channel coded with its
own static frequency table fitted on training crops after training (a factorized prior).

``quality`` (1..number of levels in the weights file, default ``DEFAULT_LEARNED_QUALITY``) picks the
quantization step of the latents: level q codes ``round(latents / steps[q-1])``, so a higher level
means a finer step, more bytes and a better tile. The steps and one table per level ship in the
weights file; the receiver reads the level from the header byte, so it needs no configuration.

The weights are trained by ``scripts/train_key_codec.py`` and loaded from
``gr-semcom/weights/key_codec.safetensors``; loading never trains.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from semcom.codec.key.rans import FrequencyTables
from semcom.codec.registry import register

WEIGHTS_NAME = "key_codec.safetensors"
TRAIN_COMMAND = "python scripts/train_key_codec.py --out gr-semcom/weights/key_codec.safetensors"
# Weights files name the bitstream version their tiles carry (1..15); a receiver whose weights carry
# another version refuses the tiles (they are then generated) instead of decoding them into wrong pixels.
DEFAULT_BITSTREAM_VERSION = 1     # files written before the version was recorded
DEFAULT_LEARNED_QUALITY = 4
MAX_TILE_SIDE_PX = 256            # the frame's tiles are at most 64 px; refuse anything far larger

_cache: dict[str, "_LoadedCodec"] = {}
_cache_lock = threading.Lock()


def default_weights_path() -> Path:
    from semcom.paths import data_path

    try:
        return data_path("weights", WEIGHTS_NAME)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"learned key codec weights not found ({exc}); "
                                f"train them with: {TRAIN_COMMAND}") from None


class _LoadedCodec:
    """Model + tables read from one safetensors file; shared by every codec instance using that file."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        from semcom.codec.key.learned_model import LearnedCodecConfig, TileAutoencoder

        if not path.is_file():
            raise FileNotFoundError(f"learned key codec weights not found at {path}; train them with: {TRAIN_COMMAND}")
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != "semcom-key-codec-1":
            raise ValueError(f"{path} is not a semcom key codec weights file (format {meta.get('format')!r})")
        self.config = LearnedCodecConfig(**json.loads(meta["config"]))
        self.steps = [float(s) for s in json.loads(meta["steps"])]
        self.bitstream_version = int(meta.get("bitstream_version", DEFAULT_BITSTREAM_VERSION))
        if not 1 <= self.bitstream_version <= 15 or not 1 <= len(self.steps) <= 15:
            raise ValueError(f"{path}: bitstream version {self.bitstream_version} and {len(self.steps)} levels "
                             f"must each be 1..15 (one header nibble)")
        self.model = TileAutoencoder(self.config)
        state = {k[len("model."):]: v.float() for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(state)
        self.model.eval()
        # Tables back to back, level-major then channel: level q, channel c codes -K..K, K = support[q, c].
        self.support = tensors["tables.support"].numpy().astype(np.int64)     # (Q, M)
        if self.support.shape != (len(self.steps), self.config.latent_channels):
            raise ValueError(f"{path}: tables {self.support.shape} do not match {len(self.steps)} steps x "
                             f"{self.config.latent_channels} channels")
        self.tables = FrequencyTables.from_flat(tensors["tables.freq"].numpy(), (2 * self.support + 1).ravel())
        self.metadata = meta
        self.path = path

    @property
    def levels(self) -> int:
        return len(self.steps)


def load_codec_weights(path: str | Path | None = None) -> _LoadedCodec:
    path = Path(path) if path is not None else default_weights_path()
    key = str(path.resolve())
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _LoadedCodec(path)
        return _cache[key]


def _check_tile(tile: np.ndarray) -> np.ndarray:
    tile = np.asarray(tile)
    if tile.ndim != 3 or tile.shape[2] != 3 or tile.dtype != np.uint8 or 0 in tile.shape[:2]:
        raise ValueError(f"tile must be non-empty (h, w, 3) uint8, got {tile.shape} {tile.dtype}")
    if max(tile.shape[:2]) > MAX_TILE_SIDE_PX:
        raise ValueError(f"tile of {tile.shape[1]}x{tile.shape[0]} px exceeds {MAX_TILE_SIDE_PX} px")
    return tile


def _padded(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@register("key", "learned")
class LearnedTileCodec:
    """Key tiles through the project's learned autoencoder; see the module docstring for the bytes."""

    codec_id = 3

    def __init__(self, quality: int = DEFAULT_LEARNED_QUALITY, weights: str | Path | None = None):
        self._weights = load_codec_weights(weights)
        if not 1 <= int(quality) <= self._weights.levels:
            raise ValueError(f"learned codec quality must be in 1..{self._weights.levels}, got {quality}")
        self.quality = int(quality)

    @property
    def model(self):
        return self._weights.model

    @property
    def max_quality(self) -> int:
        """Quality levels run 1..max_quality (one quantization step each, from the weights file)."""
        return self._weights.levels

    @property
    def downsample(self) -> int:
        """Tiles are edge-padded to a multiple of this before the transforms."""
        return self._weights.config.downsample

    # --- latents <-> pixels (the deterministic model path) ---------------------------------------

    def analyse(self, tiles: list[np.ndarray]) -> list[np.ndarray]:
        """Same-shaped (h, w, 3) uint8 tiles -> integer latents (M, ceil(h/d), ceil(w/d)) int64 each, d = downsample."""
        import torch

        h, w = tiles[0].shape[:2]
        ph, pw = _padded(h, self.downsample), _padded(w, self.downsample)
        batch = np.stack([np.pad(t, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge") for t in tiles])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
        step = self._weights.steps[self.quality - 1]
        with torch.inference_mode():
            y = self.model.encode(x) / step
        k = torch.from_numpy(self._weights.support[self.quality - 1])[None, :, None, None]
        q = torch.maximum(torch.minimum(torch.round(y), k), -k)     # clip to the table's alphabet
        return list(q.to(torch.int64).numpy())

    def synthesise(self, latents: list[np.ndarray], quality: int, height: int, width: int) -> list[np.ndarray]:
        """Integer latents (same shapes) -> (height, width, 3) uint8 tiles."""
        import torch

        step = self._weights.steps[quality - 1]
        y = torch.from_numpy(np.stack(latents)).float() * step
        with torch.inference_mode():
            x = self.model.decode(y)[:, :, :height, :width]
        x = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
        return list(np.ascontiguousarray(x.numpy()))

    # --- latents <-> bytes ----------------------------------------------------------------------

    def _table_ids(self, quality: int, shape: tuple[int, int, int]) -> np.ndarray:
        m, lh, lw = shape
        ids = (quality - 1) * m + np.arange(m)
        return np.repeat(ids, lh * lw)

    def pack(self, latents: np.ndarray, quality: int | None = None) -> bytes:
        quality = self.quality if quality is None else quality
        k = self._weights.support[quality - 1][:, None, None]
        symbols = (latents + k).ravel()
        header = bytes([(self._weights.bitstream_version << 4) | quality])
        return header + self._weights.tables.encode(symbols, self._table_ids(quality, latents.shape))

    def unpack(self, data: bytes, height: int, width: int) -> tuple[np.ndarray, int]:
        """Bytes -> (integer latents, quality level); ValueError on anything malformed."""
        if not (1 <= height <= MAX_TILE_SIDE_PX and 1 <= width <= MAX_TILE_SIDE_PX):
            raise ValueError(f"tile of {width}x{height} px: each side must be 1..{MAX_TILE_SIDE_PX}")
        data = bytes(data)
        if len(data) < 5:
            raise ValueError(f"learned tile of {len(data)} bytes is too short")
        version, quality = data[0] >> 4, data[0] & 0x0F
        if version != self._weights.bitstream_version or not 1 <= quality <= self._weights.levels:
            raise ValueError(f"learned tile header 0x{data[0]:02x}: version {version}, level {quality} unsupported")
        d = self.downsample
        shape = (self._weights.config.latent_channels, _padded(height, d) // d, _padded(width, d) // d)
        # A stream can never need more than 2 words per symbol plus the final state; longer is forged.
        if len(data) - 1 > 4 * int(np.prod(shape)) + 4:
            raise ValueError(f"learned tile of {len(data)} bytes is longer than any {width}x{height} tile can be")
        symbols = self._weights.tables.decode(data[1:], self._table_ids(quality, shape))
        k = self._weights.support[quality - 1][:, None, None]
        return symbols.reshape(shape) - k, quality

    # --- the KeyTileCodec protocol --------------------------------------------------------------

    def encode_tile(self, tile: np.ndarray) -> bytes:
        """tile: (h, w, 3) uint8 RGB, h, w <= 256 -> header byte + rANS bytes."""
        tile = _check_tile(tile)
        return self.pack(self.analyse([tile])[0])

    def decode_tile(self, data: bytes, height: int, width: int) -> np.ndarray:
        """Returns (height, width, 3) uint8; corrupt or truncated data raises ValueError."""
        latents, quality = self.unpack(data, height, width)
        return self.synthesise([latents], quality, height, width)[0]

    # --- batched helpers: one network call per tile shape. They agree with the per-tile methods up to
    # float rounding (a batch may use another convolution algorithm): the odd latent on a rounding
    # boundary, the odd pixel one level off. Each stream is still decoded exactly by either path.

    def encode_tiles(self, tiles: list[np.ndarray]) -> list[bytes]:
        tiles = [_check_tile(t) for t in tiles]
        out: list[bytes | None] = [None] * len(tiles)
        for shape in {t.shape for t in tiles}:
            idx = [i for i, t in enumerate(tiles) if t.shape == shape]
            for i, latents in zip(idx, self.analyse([tiles[i] for i in idx])):
                out[i] = self.pack(latents)
        return out  # type: ignore[return-value]

    def decode_tiles(self, items: list[tuple[bytes, int, int]]) -> list[np.ndarray]:
        """items: (data, height, width) each; raises ValueError on the first corrupt tile."""
        unpacked = [self.unpack(d, h, w) + (h, w) for d, h, w in items]
        out: list[np.ndarray | None] = [None] * len(items)
        for key in {(q, h, w) for _, q, h, w in unpacked}:
            idx = [i for i, u in enumerate(unpacked) if u[1:] == key]
            for i, tile in zip(idx, self.synthesise([unpacked[i][0] for i in idx], *key)):
                out[i] = tile
        return out  # type: ignore[return-value]
