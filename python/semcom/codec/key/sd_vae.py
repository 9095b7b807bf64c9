"""Key tiles as Stable Diffusion VAE latents (diffusers ``AutoencoderKL``), uniformly quantized.

Wire format of one tile (all integers big-endian)::

    byte 0      flags: bits per latent value (1..8) in the low 4 bits, 0x80 = payload is zlib-compressed
    bytes 1-4   lo, hi: float16 min and max of the tile's latents (the quantizer's range)
    bytes 5-    payload: the C x h x w latents, each q = round((z - lo) / (hi - lo) * (2^bits - 1)),
                packed MSB-first at ``bits`` bits per value (zlib'd when that is smaller)

Latents are the posterior mean times the VAE's ``scaling_factor``, of the tile edge-padded to a
multiple of the VAE's downsampling factor f (8 for SD: h = ceil(H/8), w = ceil(W/8), C = 4). Raw size:

    bytes = 5 + ceil(C * ceil(H/f) * ceil(W/f) * bits / 8)

so a 64x64 tile through the SD VAE is 5 + 4*8*8*8/8 = 261 bytes at the default 8 bits (133 at 4 bits),
before zlib, which saves little on latents (they are close to white noise).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from semcom.codec.hf import load_pretrained, require, torch_device, torch_dtype
from semcom.codec.registry import register

SD_VAE_CODEC_ID = 4
HEADER_BYTES = 5
_ZLIB_FLAG = 0x80
_MAX_LATENT_VALUES = 1 << 20     # refuse tiles whose latent count would exceed this (bounds allocation)


def latent_payload_bytes(channels: int, height: int, width: int, factor: int, bits: int) -> int:
    """Raw tile size in bytes (header + packed latents) for an (height, width) tile: the formula above."""
    values = channels * -(-height // factor) * -(-width // factor)
    return HEADER_BYTES + -(-values * bits // 8)


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


def quantize_latents(latents: np.ndarray, bits: int) -> tuple[np.ndarray, float, float]:
    """(C, h, w) float -> (uint8 codes < 2^bits, lo, hi) with lo/hi rounded to float16 (as sent)."""
    lo = float(np.float16(latents.min()))
    hi = float(np.float16(latents.max()))
    if not np.isfinite([lo, hi]).all():
        raise ValueError("latents out of float16 range")
    if hi <= lo:
        hi = lo + 1e-3
    levels = (1 << bits) - 1
    codes = np.clip(np.round((latents - lo) / (hi - lo) * levels), 0, levels).astype(np.uint8)
    return codes, lo, hi


def dequantize_latents(codes: np.ndarray, lo: float, hi: float, bits: int) -> np.ndarray:
    return (lo + codes.astype(np.float32) / ((1 << bits) - 1) * (hi - lo)).astype(np.float32)


@register("key", "sd-vae")
class SDVaeTileCodec:
    """Key tile <-> quantized SD VAE latents.

    ``model``: hub id (e.g. "stabilityai/sd-vae-ft-mse") or local directory; ``subfolder``: "vae" for a
    whole SD pipeline repo (found by itself for local directories that have ``vae/config.json``).
    ``bits``: 1..8 per latent value; ``compress``: zlib the payload when that is smaller.
    ``quantization``: "fp32" or "int8" (CPU dynamic int8 of the VAE's linear layers; they are few).
    """

    codec_id = SD_VAE_CODEC_ID

    def __init__(self, model: str = "stabilityai/sd-vae-ft-mse", subfolder: str | None = None, bits: int = 8,
                 device: str = "cpu", dtype: str | None = None, compress: bool = True, quantization: str = "fp32"):
        if not 1 <= int(bits) <= 8:
            raise ValueError(f"bits must be in 1..8, got {bits}")
        self.bits, self.compress = int(bits), bool(compress)
        self.device = torch_device(device)
        require("torch")
        diffusers = require("diffusers")
        from semcom.codec.lightweight_hf import apply_post_load, check_quantization

        check_quantization(quantization, self.device)
        if subfolder is None and (Path(model).expanduser() / "vae" / "config.json").is_file() \
                and not (Path(model).expanduser() / "config.json").is_file():
            subfolder = "vae"
        kwargs = {"subfolder": subfolder} if subfolder else {}
        dtype = torch_dtype(dtype, self.device)
        vae = load_pretrained(diffusers.AutoencoderKL.from_pretrained, model, what="SD VAE", torch_dtype=dtype,
                              **kwargs)
        self.vae = apply_post_load(vae.to(self.device).eval(), quantization)
        config = vae.config
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        self.channels = int(config.latent_channels)
        self.scaling = float(getattr(config, "scaling_factor", 1.0) or 1.0)
        self.dtype = dtype

    def tile_bytes(self, height: int, width: int) -> int:
        """Raw (pre-zlib) coded size of an (height, width) tile; the encoder never sends more."""
        return latent_payload_bytes(self.channels, height, width, self.factor, self.bits)

    def _padded(self, height: int, width: int) -> tuple[int, int]:
        f = self.factor
        return -(-height // f) * f, -(-width // f) * f

    def encode_latents(self, tile: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 -> (C, ceil(h/f), ceil(w/f)) float32 scaled posterior mean."""
        import torch

        h, w = tile.shape[:2]
        ph, pw = self._padded(h, w)
        padded = np.pad(tile, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        x = torch.from_numpy(padded).permute(2, 0, 1)[None].to(self.device, self.dtype) / 127.5 - 1.0
        with torch.inference_mode():
            mean = self.vae.encode(x).latent_dist.mean * self.scaling
        return mean[0].float().cpu().numpy()

    def decode_latents(self, latents: np.ndarray, height: int, width: int) -> np.ndarray:
        """(C, h', w') float -> (height, width, 3) uint8 (decoded, then cropped from the padded size)."""
        import torch

        z = torch.from_numpy(np.ascontiguousarray(latents))[None].to(self.device, self.dtype) / self.scaling
        with torch.inference_mode():
            x = self.vae.decode(z).sample
        pixels = ((x[0].float().clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return np.ascontiguousarray(pixels[:height, :width])

    def encode_tile(self, tile: np.ndarray) -> bytes:
        """tile: (h, w, 3) uint8 RGB -> header + packed quantized latents (see the module docstring)."""
        tile = np.asarray(tile)
        if tile.ndim != 3 or tile.shape[2] != 3 or tile.dtype != np.uint8 or 0 in tile.shape[:2]:
            raise ValueError(f"tile must be non-empty (h, w, 3) uint8, got {tile.shape} {tile.dtype}")
        codes, lo, hi = quantize_latents(self.encode_latents(tile), self.bits)
        payload = pack_bits(codes, self.bits)
        flags = self.bits
        if self.compress:
            packed = zlib.compress(payload, 9)
            if len(packed) < len(payload):
                payload, flags = packed, flags | _ZLIB_FLAG
        return struct.pack(">Bee", flags, lo, hi) + payload

    def decode_tile(self, data: bytes, height: int, width: int) -> np.ndarray:
        """Returns (height, width, 3) uint8; ValueError on corrupt data or a size mismatch."""
        data = bytes(data)
        if len(data) < HEADER_BYTES:
            raise ValueError(f"SD VAE tile of {len(data)} bytes is shorter than its {HEADER_BYTES}-byte header")
        if not (1 <= height and 1 <= width):
            raise ValueError(f"bad tile size {width}x{height}")
        flags, lo, hi = struct.unpack(">Bee", data[:HEADER_BYTES])
        bits = flags & 0x0F
        if not 1 <= bits <= 8 or flags & 0x70:
            raise ValueError(f"SD VAE tile header has bad flags 0x{flags:02x}")
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ValueError(f"SD VAE tile header has a bad latent range [{lo}, {hi}]")
        ph, pw = self._padded(height, width)
        shape = (self.channels, ph // self.factor, pw // self.factor)
        count = int(np.prod(shape))
        if count > _MAX_LATENT_VALUES:
            raise ValueError(f"tile {width}x{height} would need {count} latents; limit {_MAX_LATENT_VALUES}")
        payload = data[HEADER_BYTES:]
        if flags & _ZLIB_FLAG:
            need = -(-count * bits // 8)
            try:
                inflater = zlib.decompressobj()
                payload = inflater.decompress(payload, need + 1)
            except zlib.error as exc:
                raise ValueError(f"corrupt zlib latent payload: {exc}") from exc
        codes = unpack_bits(payload, bits, count).reshape(shape)
        return self.decode_latents(dequantize_latents(codes, lo, hi, bits), height, width)
