"""Key tiles as Stable Diffusion VAE latents (diffusers ``AutoencoderKL``), uniformly quantized.

The VAE sees the whole key region at once: the encoder runs over the bounding box of all key tiles plus
``CONTEXT_PX`` of real image around it (GroupNorm and attention see the region, not a 64-px crop, so a
real VAE leaves no seams at tile borders), and the latent map is then cut into one chunk per tile for
the wire. The receiver puts the chunks it got back into one latent map (lost tiles filled with the
received per-channel mean) and decodes it in one pass. Regions larger than the VAE's sample size go
through diffusers' tiled VAE (overlapping 512-px tiles for SD, blended), which bounds memory.

Wire format of one tile (all integers big-endian)::

    byte 0        flags: bits per latent value (1..8) in the low 4 bits, 0x80 = payload is zlib-compressed
    bytes 1-4C    per latent channel c: lo_c, hi_c as float16 (that channel's quantizer range)
    then          payload: the C x h x w latents, each q = round((z - lo_c) / (hi_c - lo_c) * (2^bits - 1)),
                  packed MSB-first at ``bits`` bits per value (zlib'd when that is smaller)

Latents are the posterior mean times the VAE's ``scaling_factor``; a tile of H x W pixels carries
h = ceil(H/f) by w = ceil(W/f) latents (f = 8 for SD, C = 4). Raw size:

    bytes = 1 + 4*C + ceil(C * ceil(H/f) * ceil(W/f) * bits / 8)

so a 64x64 tile through the SD VAE is 1 + 16 + 4*8*8*8/8 = 273 bytes at the default 8 bits (145 at
4 bits), before zlib, which saves little on latents (they are close to white noise).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from semcom.codec.hf import load_pretrained, require, torch_device, torch_dtype
from semcom.codec.registry import register

SD_VAE_CODEC_ID = 4
_ZLIB_FLAG = 0x80
_MAX_LATENT_VALUES = 1 << 20     # refuse regions whose latent count would exceed this (bounds allocation)
CONTEXT_PX = 16                  # real pixels around the key region's bounding box that the encoder sees


def header_bytes(channels: int) -> int:
    """Flags byte + a float16 (lo, hi) pair per latent channel."""
    return 1 + 4 * channels


def latent_payload_bytes(channels: int, height: int, width: int, factor: int, bits: int) -> int:
    """Raw tile size in bytes (header + packed latents) for an (height, width) tile: the formula above."""
    values = channels * -(-height // factor) * -(-width // factor)
    return header_bytes(channels) + -(-values * bits // 8)


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned ints < 2^bits -> bytes, MSB-first, ``bits`` per value, zero-padded to a whole byte."""
    values = np.asarray(values, np.uint8).ravel()
    if bits == 8:
        return values.tobytes()
    bit_array = np.unpackbits(values[:, None], axis=1)[:, 8 - bits:]
    return np.packbits(bit_array.ravel()).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`; raises ValueError when ``data`` has the wrong length."""
    need = -(-count * bits // 8)
    if len(data) != need:
        raise ValueError(f"latent payload is {len(data)} bytes, expected {need} for {count} values at {bits} bits")
    raw = np.frombuffer(data, np.uint8)
    if bits == 8:
        return raw.copy()
    bit_array = np.unpackbits(raw)[:count * bits].reshape(count, bits)
    padded = np.zeros((count, 8), np.uint8)
    padded[:, 8 - bits:] = bit_array
    return np.packbits(padded, axis=1).ravel()


def quantize_latents(latents: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(C, h, w) float -> (uint8 codes < 2^bits, lo (C,), hi (C,)), one range per channel, rounded to
    float16 (as sent): SD latent channels have different spreads, so one shared range wastes levels."""
    flat = latents.reshape(latents.shape[0], -1)
    lo = flat.min(axis=1).astype(np.float16).astype(np.float32)
    hi = flat.max(axis=1).astype(np.float16).astype(np.float32)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise ValueError("latents out of float16 range")
    hi = np.where(hi <= lo, (lo + np.float32(1e-3)).astype(np.float16).astype(np.float32), hi)
    levels = (1 << bits) - 1
    scale = ((hi - lo) / levels)[:, None, None]
    codes = np.clip(np.round((latents - lo[:, None, None]) / scale), 0, levels).astype(np.uint8)
    return codes, lo, hi


def dequantize_latents(codes: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """(C, h, w) codes and per-channel (C,) ranges -> (C, h, w) float32 latents."""
    lo = np.asarray(lo, np.float32)[:, None, None]
    hi = np.asarray(hi, np.float32)[:, None, None]
    return (lo + codes.astype(np.float32) / ((1 << bits) - 1) * (hi - lo)).astype(np.float32)


def _bounding_box(boxes) -> tuple[int, int, int, int]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


@register("key", "sd-vae")
class SDVaeTileCodec:
    """Key region <-> quantized SD VAE latents, one chunk per tile on the wire.

    ``model``: hub id (e.g. "stabilityai/sd-vae-ft-mse") or local directory; ``revision``: the hub
    commit to load (pin it: a hub repo can change under the same id); ``subfolder``: "vae" for a whole
    SD pipeline repo (found by itself for local directories that have ``vae/config.json``).
    ``bits``: 1..8 per latent value; ``compress``: zlib the payload when that is smaller.
    ``quantization``: "fp32" or "int8" (CPU torchao int8 of the VAE's linear layers; they are few).

    The pipeline calls :meth:`encode_tiles_at` / :meth:`decode_tiles_at` with the whole region;
    :meth:`encode_tile` / :meth:`decode_tile` code one tile on its own (the region is that tile).
    """

    codec_id = SD_VAE_CODEC_ID

    def __init__(self, model: str = "stabilityai/sd-vae-ft-mse", subfolder: str | None = None, bits: int = 8,
                 device: str = "cpu", dtype: str | None = None, compress: bool = True, quantization: str = "fp32",
                 revision: str | None = None):
        if not 1 <= int(bits) <= 8:
            raise ValueError(f"bits must be in 1..8, got {bits}")
        self.bits, self.compress = int(bits), bool(compress)
        self.device = torch_device(device)
        require("torch")
        diffusers = require("diffusers")
        from semcom.codec.lightweight_hf import apply_post_load, check_quantization, check_placement

        check_quantization(quantization, self.device, "diffusers")
        if subfolder is None and (Path(model).expanduser() / "vae" / "config.json").is_file() \
                and not (Path(model).expanduser() / "config.json").is_file():
            subfolder = "vae"
        kwargs = {"subfolder": subfolder} if subfolder else {}
        if revision:
            kwargs["revision"] = revision
        dtype = torch_dtype(dtype, self.device)
        vae = load_pretrained(diffusers.AutoencoderKL.from_pretrained, model, what="SD VAE", torch_dtype=dtype,
                              **kwargs)
        self.vae = apply_post_load(vae.to(self.device).eval(), quantization)
        self.vae.enable_tiling()        # only regions larger than the VAE's sample size are tiled
        check_placement({"vae": self.vae}, self.device, dtype)
        config = vae.config
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        self.channels = int(config.latent_channels)
        self.scaling = float(getattr(config, "scaling_factor", 1.0) or 1.0)
        self.dtype = dtype

    def tile_bytes(self, height: int, width: int) -> int:
        """Raw (pre-zlib) coded size of an (height, width) tile; the encoder never sends more."""
        return latent_payload_bytes(self.channels, height, width, self.factor, self.bits)

    def _cells(self, pixels: int) -> int:
        return -(-pixels // self.factor)

    def encode_latents(self, image: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 -> (C, ceil(h/f), ceil(w/f)) float32 scaled posterior mean (edge-padded to a
        multiple of f first). Pixels go in as [-1, 1], as the VAE was trained."""
        import torch

        h, w = image.shape[:2]
        ph, pw = self._cells(h) * self.factor, self._cells(w) * self.factor
        padded = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        x = torch.from_numpy(padded).permute(2, 0, 1)[None].to(self.device, self.dtype) / 127.5 - 1.0
        with torch.inference_mode():
            mean = self.vae.encode(x).latent_dist.mean * self.scaling
        return mean[0].float().cpu().numpy()

    def decode_latents(self, latents: np.ndarray, height: int, width: int) -> np.ndarray:
        """(C, h', w') scaled latents -> (height, width, 3) uint8 (decoded, then cropped)."""
        import torch

        z = torch.from_numpy(np.ascontiguousarray(latents))[None].to(self.device, self.dtype) / self.scaling
        with torch.inference_mode():
            x = self.vae.decode(z).sample
        pixels = ((x[0].float().clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(pixels[:height, :width])

    def _check_boxes(self, boxes, height: int, width: int) -> None:
        for y0, x0, y1, x1 in boxes:
            if y0 % self.factor or x0 % self.factor or not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
                raise ValueError(f"tile box {(y0, x0, y1, x1)} is not inside {width}x{height} on the "
                                 f"VAE's {self.factor}-px latent grid")

    def encode_tiles_at(self, image: np.ndarray, boxes) -> list[bytes]:
        """image (H, W, 3) uint8, boxes [(y0, x0, y1, x1)] of key tiles (starts on the f-px grid) ->
        one coded chunk per box. One VAE pass over the boxes' bounding box plus CONTEXT_PX around it."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape[:2]:
            raise ValueError(f"image must be non-empty (h, w, 3) uint8, got {image.shape} {image.dtype}")
        boxes = [tuple(int(v) for v in b) for b in boxes]
        if not boxes:
            return []
        height, width = image.shape[:2]
        self._check_boxes(boxes, height, width)
        f, margin = self.factor, -(-CONTEXT_PX // self.factor) * self.factor
        by0, bx0, by1, bx1 = _bounding_box(boxes)
        cy0, cx0 = max(0, by0 - margin), max(0, bx0 - margin)
        cy1, cx1 = min(height, by1 + margin), min(width, bx1 + margin)
        if self.channels * self._cells(cy1 - cy0) * self._cells(cx1 - cx0) > _MAX_LATENT_VALUES:
            raise ValueError(f"key region {cx1 - cx0}x{cy1 - cy0} is too large for the SD VAE codec")
        latents = self.encode_latents(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]))
        out = []
        for y0, x0, y1, x1 in boxes:
            ly, lx = (y0 - cy0) // f, (x0 - cx0) // f
            chunk = latents[:, ly:ly + self._cells(y1 - y0), lx:lx + self._cells(x1 - x0)]
            out.append(self._pack(chunk))
        return out

    def _pack(self, latents: np.ndarray) -> bytes:
        codes, lo, hi = quantize_latents(latents, self.bits)
        payload = pack_bits(codes, self.bits)
        flags = self.bits
        if self.compress:
            packed = zlib.compress(payload, 9)
            if len(packed) < len(payload):
                payload, flags = packed, flags | _ZLIB_FLAG
        ranges = np.stack([lo, hi], axis=1).astype(">f2").tobytes()    # lo_0, hi_0, lo_1, hi_1, ...
        return struct.pack(">B", flags) + ranges + payload

    def chunk_latents(self, data: bytes, height: int, width: int) -> np.ndarray:
        """One chunk -> (C, ceil(height/f), ceil(width/f)) latents; ValueError on corrupt data."""
        data = bytes(data)
        header = header_bytes(self.channels)
        if len(data) < header:
            raise ValueError(f"SD VAE tile of {len(data)} bytes is shorter than its {header}-byte header")
        if not (1 <= height and 1 <= width):
            raise ValueError(f"bad tile size {width}x{height}")
        flags = data[0]
        bits = flags & 0x0F
        if not 1 <= bits <= 8 or flags & 0x70:
            raise ValueError(f"SD VAE tile header has bad flags 0x{flags:02x}")
        ranges = np.frombuffer(data[1:header], ">f2").astype(np.float32).reshape(self.channels, 2)
        lo, hi = ranges[:, 0], ranges[:, 1]
        if not (np.isfinite(ranges).all() and (hi > lo).all()):
            raise ValueError("SD VAE tile header has a bad latent range")
        shape = (self.channels, self._cells(height), self._cells(width))
        count = int(np.prod(shape))
        if count > _MAX_LATENT_VALUES:
            raise ValueError(f"tile {width}x{height} would need {count} latents; limit {_MAX_LATENT_VALUES}")
        payload = data[header:]
        if flags & _ZLIB_FLAG:
            need = -(-count * bits // 8)
            try:
                payload = zlib.decompressobj().decompress(payload, need + 1)
            except zlib.error as exc:
                raise ValueError(f"corrupt zlib latent payload: {exc}") from exc
        codes = unpack_bits(payload, bits, count).reshape(shape)
        return dequantize_latents(codes, lo, hi, bits)

    def decode_tiles_at(self, items) -> list[np.ndarray | None]:
        """[(chunk, (y0, x0, y1, x1))] -> per item (y1-y0, x1-x0, 3) uint8, or None for a corrupt chunk.

        The good chunks go back into one latent map over their bounding box (gaps: the per-channel mean
        of what arrived) and are decoded in one pass, so tile borders see their neighbours."""
        boxes = [tuple(int(v) for v in box) for _, box in items]
        for y0, x0, y1, x1 in boxes:
            if y0 % self.factor or x0 % self.factor or y1 <= y0 or x1 <= x0 or min(y0, x0) < 0:
                raise ValueError(f"tile box {(y0, x0, y1, x1)} is not on the VAE's {self.factor}-px latent grid")
        chunks: list[np.ndarray | None] = []
        for (data, _), (y0, x0, y1, x1) in zip(items, boxes):
            try:
                chunks.append(self.chunk_latents(data, y1 - y0, x1 - x0))
            except ValueError:
                chunks.append(None)
        good = [(z, b) for z, b in zip(chunks, boxes) if z is not None]
        if not good:
            return [None] * len(items)
        by0, bx0, by1, bx1 = _bounding_box([b for _, b in good])
        shape = (self.channels, self._cells(by1 - by0), self._cells(bx1 - bx0))
        if int(np.prod(shape)) > _MAX_LATENT_VALUES:
            raise ValueError(f"key region {bx1 - bx0}x{by1 - by0} is too large for the SD VAE codec")
        mean = np.mean([z.reshape(self.channels, -1).mean(axis=1) for z, _ in good], axis=0)
        canvas = np.broadcast_to(mean[:, None, None], shape).astype(np.float32)
        for z, (y0, x0, _, _) in good:
            ly, lx = (y0 - by0) // self.factor, (x0 - bx0) // self.factor
            canvas[:, ly:ly + z.shape[1], lx:lx + z.shape[2]] = z
        pixels = self.decode_latents(canvas, shape[1] * self.factor, shape[2] * self.factor)
        return [None if z is None else np.ascontiguousarray(pixels[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0])
                for z, (y0, x0, y1, x1) in zip(chunks, boxes)]

    def encode_tile(self, tile: np.ndarray) -> bytes:
        """tile: (h, w, 3) uint8 RGB coded on its own -> header + packed quantized latents."""
        tile = np.asarray(tile)
        if tile.ndim != 3 or tile.shape[2] != 3 or tile.dtype != np.uint8 or 0 in tile.shape[:2]:
            raise ValueError(f"tile must be non-empty (h, w, 3) uint8, got {tile.shape} {tile.dtype}")
        return self.encode_tiles_at(tile, [(0, 0, tile.shape[0], tile.shape[1])])[0]

    def decode_tile(self, data: bytes, height: int, width: int) -> np.ndarray:
        """Returns (height, width, 3) uint8; ValueError on corrupt data or a size mismatch."""
        return self.decode_latents(self.chunk_latents(data, height, width), height, width)
