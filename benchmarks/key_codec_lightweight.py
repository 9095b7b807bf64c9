#!/usr/bin/env python3
"""Learned key codec: fp32 vs int8 variants in one run: parameter bytes, latency per tile, PSNR, bytes.

    python benchmarks/key_codec_lightweight.py [--weights PATH] [--quality Q]

Variants:
  fp32            the shipped model (fp16 on disk, fp32 in memory)
  int8 dynamic    torchao int8 of Linear layers: the codec has none, so nothing changes
  int8 static     torchao PT2E static int8 of the Conv2d layers (simulated in eager), GDN and
                  ConvTranspose2d in float; calibrated on
                  training-photo crops (astronaut, rocket), never on the held-out tiles
  int8 storage    per-channel int8 conv weights dequantized to fp32 on load (size only)
Tiles: every full 64x64 tile of held-out chelsea + coffee. Latency = analysis + synthesis network time
per tile at batch 1 and one thread (the entropy coder is the same for all variants and is excluded).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from semcom.codec.key.learned import DEFAULT_LEARNED_QUALITY, LearnedTileCodec  # noqa: E402
from semcom.codec.key.learned_model import TileAutoencoder  # noqa: E402
from key_codec_rd import TILE, held_out_tiles  # noqa: E402  (same held-out tiles as the RD table)
from semcom.codec.lightweight import (  # noqa: E402
    Int8WeightStorage,
    count_dynamic_quantized,
    parameter_bytes,
    quantize_conv_static_int8,
    quantize_dynamic_int8,
)



def calibration_batches() -> list[torch.Tensor]:
    from skimage import data

    rng = np.random.default_rng(0)
    out = []
    for image in (data.astronaut(), data.rocket()):
        for _ in range(4):
            crops = []
            for _ in range(8):
                y, x = rng.integers(image.shape[0] - TILE), rng.integers(image.shape[1] - TILE)
                crops.append(image[y:y + TILE, x:x + TILE])
            out.append(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0)
    return out


def to_tensor(tile: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(tile).permute(2, 0, 1)[None].float() / 255.0


def evaluate(model: torch.nn.Module, codec: LearnedTileCodec, tiles: list[np.ndarray]) -> dict:
    """Code every tile through ``model`` with the shipped tables; PSNR, bytes and network latency."""
    weights = codec._weights
    step = weights.steps[codec.quality - 1]
    k = torch.from_numpy(weights.support[codec.quality - 1])[None, :, None, None]
    psnrs, sizes, seconds = [], [], []
    with torch.inference_mode():
        for _ in range(3):                                   # warm-up
            model.decode(model.encode(to_tensor(tiles[0])))
        for tile in tiles:
            x = to_tensor(tile)
            t0 = time.perf_counter()
            q = torch.maximum(torch.minimum(torch.round(model.encode(x) / step), k), -k)
            t1 = time.perf_counter()
            sizes.append(len(codec.pack(q[0].to(torch.int64).numpy())))
            t2 = time.perf_counter()
            out = model.decode(q.float() * step).clamp(0, 1)
            t3 = time.perf_counter()
            seconds.append((t1 - t0) + (t3 - t2))
            out = (out[0].permute(1, 2, 0) * 255).round().numpy()
            mse = np.mean((out - tile.astype(np.float64)) ** 2)
            psnrs.append(10 * np.log10(255**2 / max(mse, 1e-10)))
    return {"psnr_db": float(np.mean(psnrs)), "bytes": float(np.mean(sizes)),
            "ms_per_tile": 1e3 * float(np.median(seconds))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--quality", type=int, default=DEFAULT_LEARNED_QUALITY)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    codec = LearnedTileCodec(quality=args.quality, weights=args.weights)
    fp32 = codec.model
    tiles = held_out_tiles()

    dynamic = quantize_dynamic_int8(fp32)
    batches = calibration_batches()

    def calibrate(m):
        for b in batches:
            m.decode(m.encode(b))

    static = quantize_conv_static_int8(fp32, calibrate)
    storage = Int8WeightStorage.from_model(fp32)
    stored = storage.load_into(TileAutoencoder(fp32.config)).eval()

    rows = [("fp32", fp32, parameter_bytes(fp32), "-"),
            ("int8 dynamic (Linear)", dynamic, parameter_bytes(dynamic),
             f"{count_dynamic_quantized(dynamic)} layers quantized"),
            ("int8 static (convs)", static, parameter_bytes(static), "int8 Conv2d (PT2E, simulated), GDN float"),
            ("int8 storage", stored, storage.nbytes, "fp32 arithmetic")]
    base = None
    print(f"Learned key codec, quality {args.quality}, {len(tiles)} held-out 64x64 tiles, 1 thread")
    print("| variant | param bytes | size vs fp32 | ms/tile (enc+dec net) | latency vs fp32 | PSNR dB | "
          "dPSNR | bytes/tile | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, model, nbytes, note in rows:
        r = evaluate(model, codec, tiles)
        if base is None:
            base = dict(r, nbytes=nbytes)
        print(f"| {name} | {nbytes:,} | {nbytes / base['nbytes']:.2f}x | {r['ms_per_tile']:.2f} | "
              f"{r['ms_per_tile'] / base['ms_per_tile']:.2f}x | {r['psnr_db']:.2f} | "
              f"{r['psnr_db'] - base['psnr_db']:+.2f} | {r['bytes']:.0f} | {note} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
