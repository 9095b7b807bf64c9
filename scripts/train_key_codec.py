#!/usr/bin/env python3
"""Train the learned key-tile codec on the photos that ship with scikit-image, fit its entropy tables,
validate it on held-out photos and write ``gr-semcom/weights/key_codec.safetensors`` + ``.json``.

    python scripts/train_key_codec.py --out gr-semcom/weights/key_codec.safetensors

The defaults are the shipped model: 48 000 steps on 2 threads (about 40 minutes on 2 CPU cores).

Data (all offline, from the scikit-image wheel): colour astronaut, rocket, motorcycle_left (the left
view of ``stereo_motorcycle``), hubble_deep_field, retina, immunohistochemistry; grey camera, coins,
moon, grass, gravel, brick (replicated to 3 channels).
Held out (never trained on, used for validation): chelsea (and its duplicate ``cat``) and coffee.
Random 64x64 crops at scales 1, 0.7, 0.5, 0.35 with flips and 90-degree rotations.

Loss: bits-per-pixel under a per-channel Laplace prior + lambda * 255^2 * MSE, with additive uniform
noise of a step drawn log-uniformly from the quality levels' range, so one model serves every level.
After training, per-channel, per-level frequency tables are fitted on fresh training crops.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from semcom.codec.key.learned_model import LearnedCodecConfig, TileAutoencoder  # noqa: E402
from semcom.codec.key.rans import quantize_frequencies  # noqa: E402

TRAIN_COLOUR = ["astronaut", "rocket", "motorcycle_left", "hubble_deep_field", "retina", "immunohistochemistry"]
TRAIN_GREY = ["camera", "coins", "moon", "grass", "gravel", "brick"]
HELD_OUT = ["chelsea", "coffee"]          # skimage's "cat" is chelsea again: also never trained on
SCALES = (1.0, 0.7, 0.5, 0.35)
CROP = 64
# Quantization step per quality level 1..8 (finer step = higher level = more bytes).
QUALITY_STEPS = (4.0, 3.0, 2.3, 1.8, 1.4, 1.1, 0.85, 0.65)
TRAIN_STEP_RANGE = (0.65, 4.0)            # training noise width, drawn log-uniformly from this range
MAX_SUPPORT = 255                         # symbols -K..K per channel, K <= this (latents reach ~65)


def load_photo(name: str) -> np.ndarray:
    from skimage import data

    image = np.asarray(data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)())
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3].astype(np.uint8))


def pyramid(image: np.ndarray) -> list[np.ndarray]:
    out = []
    for s in SCALES:
        h, w = int(image.shape[0] * s), int(image.shape[1] * s)
        if min(h, w) >= CROP:
            out.append(np.asarray(Image.fromarray(image).resize((w, h), Image.LANCZOS)) if s != 1 else image)
    return out


class CropSampler:
    """Random 64x64 crops; colour photos are drawn 60% of the time, grey ones 40%."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.colour = [pyramid(load_photo(n)) for n in TRAIN_COLOUR]
        self.grey = [pyramid(load_photo(n)) for n in TRAIN_GREY]

    def crop(self) -> np.ndarray:
        group = self.colour if self.rng.random() < 0.6 else self.grey
        levels = group[self.rng.integers(len(group))]
        image = levels[self.rng.integers(len(levels))]
        y = self.rng.integers(image.shape[0] - CROP + 1)
        x = self.rng.integers(image.shape[1] - CROP + 1)
        c = image[y:y + CROP, x:x + CROP]
        if self.rng.random() < 0.5:
            c = c[:, ::-1]
        c = np.rot90(c, self.rng.integers(4))
        return c

    def batch(self, n: int) -> torch.Tensor:
        b = np.stack([self.crop() for _ in range(n)]).astype(np.float32) / 255.0
        return torch.from_numpy(b).permute(0, 3, 1, 2).contiguous()


def held_out_tiles() -> list[np.ndarray]:
    """Every full 64x64 tile of the held-out photos on the frame's tile grid."""
    tiles = []
    for name in HELD_OUT:
        image = load_photo(name)
        for y in range(0, image.shape[0] - CROP + 1, CROP):
            for x in range(0, image.shape[1] - CROP + 1, CROP):
                tiles.append(np.ascontiguousarray(image[y:y + CROP, x:x + CROP]))
    return tiles


def validation_batch() -> torch.Tensor:
    """Every other held-out tile as a (N, 3, 64, 64) float batch in [0, 1]."""
    return torch.from_numpy(np.stack(held_out_tiles()[::2]).astype(np.float32) / 255.0).permute(0, 3, 1, 2)


def warmup_cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over 5% of the steps (at most 200), then cosine down to 5% of the base rate."""
    warmup = max(1, min(200, steps // 20))

    def lr_factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)


def fit_tables(model: TileAutoencoder, sampler: CropSampler, n_crops: int) -> tuple[np.ndarray, np.ndarray]:
    """Per level and channel: histogram of round(latents / step) -> (flat freq, support (Q, M)).

    Table (q, c) codes -K..K with K = support[q, c], a quarter past the largest value seen (so held-out
    tiles are rarely clipped); the tables are stored back to back, level-major.
    """
    m = model.config.latent_channels
    with torch.inference_mode():
        ys = torch.cat([model.encode(sampler.batch(64)) for _ in range(n_crops // 64)])
    ys = ys.permute(1, 0, 2, 3).reshape(m, -1)                    # (M, samples)
    freq = []
    support = np.zeros((len(QUALITY_STEPS), m), np.int64)
    for level, step in enumerate(QUALITY_STEPS):
        q = torch.round(ys / step).clamp(-MAX_SUPPORT, MAX_SUPPORT).to(torch.int64).numpy()
        for c in range(m):
            k = int(min(MAX_SUPPORT, np.ceil(1.25 * np.abs(q[c]).max()) + 2))
            counts = np.bincount(np.clip(q[c], -k, k) + k, minlength=2 * k + 1).astype(np.float64) + 0.05
            support[level, c] = k
            freq.append(quantize_frequencies(counts))
    return np.concatenate(freq), support


def save_weights(path: Path, model: TileAutoencoder, freq: np.ndarray, support: np.ndarray,
                 bitstream_version: int) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    tensors["tables.freq"] = torch.from_numpy(freq.astype(np.int32))        # flat, see fit_tables
    tensors["tables.support"] = torch.from_numpy(support.astype(np.int32))
    meta = {"format": "semcom-key-codec-1", "config": json.dumps(model.config.to_dict()),
            "steps": json.dumps(list(QUALITY_STEPS)), "bitstream_version": str(bitstream_version)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def validate(weights: Path) -> list[dict]:
    """Mean bytes / PSNR / SSIM per quality level over the held-out tiles, through the real codec."""
    from skimage.metrics import structural_similarity

    from semcom.codec.key.learned import LearnedTileCodec

    tiles = held_out_tiles()
    rows = []
    for level in range(1, len(QUALITY_STEPS) + 1):
        codec = LearnedTileCodec(quality=level, weights=weights)
        data = codec.encode_tiles(tiles)
        dec = codec.decode_tiles([(d, CROP, CROP) for d in data])
        mse = [np.mean((a.astype(np.float64) - b) ** 2) for a, b in zip(tiles, dec)]
        ssim = [structural_similarity(a, b, channel_axis=2, data_range=255) for a, b in zip(tiles, dec)]
        rows.append({"quality": level, "step": QUALITY_STEPS[level - 1], "tiles": len(tiles),
                     "mean_bytes": float(np.mean([len(d) for d in data])),
                     "mean_psnr_db": float(np.mean([10 * np.log10(255 ** 2 / max(e, 1e-10)) for e in mse])),
                     "mean_ssim": float(np.mean(ssim))})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=48000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lmbda", type=float, default=0.035, help="weight of 255^2 * MSE against bits per pixel")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--latent-channels", type=int, default=64)
    p.add_argument("--downsample", type=int, default=8, choices=(8, 16))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--table-crops", type=int, default=4096)
    p.add_argument("--bitstream-version", type=int, default=2, choices=range(1, 16), metavar="1..15",
                   help="written into every tile's header byte; give each retrained model a new one, so that "
                        "receivers holding other weights refuse its tiles instead of decoding wrong pixels")
    p.add_argument("--out", type=Path, default=ROOT / "gr-semcom" / "weights" / "key_codec.safetensors")
    p.add_argument("--refit-tables", action="store_true",
                   help="skip training: load the model from --out, refit the tables, re-validate, rewrite")
    args = p.parse_args(argv)
    if args.refit_tables:
        return refit(args)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sampler = CropSampler(args.seed)
    val = validation_batch()
    model = TileAutoencoder(LearnedCodecConfig(args.channels, args.latent_channels, args.downsample))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters; training {args.steps} steps, batch {args.batch}, "
          f"{args.threads} thread(s)", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = warmup_cosine(opt, args.steps)
    log_lo, log_hi = math.log(TRAIN_STEP_RANGE[0]), math.log(TRAIN_STEP_RANGE[1])
    pixels = CROP * CROP
    t0 = time.time()
    history = []
    for it in range(1, args.steps + 1):
        x = sampler.batch(args.batch)
        step = math.exp(sampler.rng.uniform(log_lo, log_hi))
        y = model.encode(x)
        y_noisy = y + (torch.rand_like(y) - 0.5) * step
        x_hat = model.decode(y_noisy)
        mse = torch.mean((x_hat - x) ** 2)
        bpp = model.rate_bits(y_noisy, step).mean() / pixels
        loss = bpp + args.lmbda * 255 ** 2 * mse
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if it % 250 == 0 or it == args.steps:
            with torch.inference_mode():
                yv = torch.round(model.encode(val))       # level-4-like step 1 check on held-out tiles
                xv = model.decode(yv).clamp(0, 1)
                psnr = 10 * math.log10(1 / torch.mean((xv - val) ** 2).item())
                vbpp = (model.rate_bits(yv, 1.0).mean() / pixels).item()
            elapsed = time.time() - t0
            history.append({"step": it, "train_loss": loss.item(), "val_psnr_db_step1": psnr, "val_bpp_step1": vbpp})
            print(f"step {it:6d}  loss {loss.item():.3f}  train bpp {bpp.item():.3f}  mse*255^2 "
                  f"{mse.item() * 255 ** 2:7.1f}  | held-out @step 1: {psnr:.2f} dB {vbpp:.3f} bpp  "
                  f"[{elapsed / 60:.1f} min, eta {elapsed / it * (args.steps - it) / 60:.1f} min]", flush=True)
    train_seconds = time.time() - t0

    model.eval()
    finish(args, model, {"train_seconds": round(train_seconds, 1), "history": history, "parameters": n_params,
                         "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}})
    return 0


def finish(args, model: TileAutoencoder, record: dict) -> None:
    """Fit tables on the model as it will be shipped (fp16-rounded weights), save, validate, record."""
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    freq, support = fit_tables(model, CropSampler(args.seed + 1), args.table_crops)
    save_weights(args.out, model, freq, support, args.bitstream_version)
    rows = validate(args.out)
    for r in rows:
        print(f"held-out quality {r['quality']} (step {r['step']}): {r['mean_bytes']:.0f} bytes/tile  "
              f"{r['mean_psnr_db']:.2f} dB  SSIM {r['mean_ssim']:.4f}", flush=True)
    meta = {"weights": args.out.name, "weights_bytes": args.out.stat().st_size,
            "config": model.config.to_dict(), "quality_steps": list(QUALITY_STEPS),
            "train_step_range": list(TRAIN_STEP_RANGE), "max_support": MAX_SUPPORT,
            "table_crops": args.table_crops, "bitstream_version": args.bitstream_version,
            "train_photos": TRAIN_COLOUR + TRAIN_GREY,
            "held_out_photos": HELD_OUT, "crop_px": CROP, "scales": list(SCALES),
            "torch": torch.__version__, "python": platform.python_version(), **record, "validation": rows}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) and {args.out.with_suffix('.json').name}; "
          f"trained in {record['train_seconds'] / 60:.1f} min")


def refit(args) -> int:
    """Tables only: the model in --out is kept; its training record is carried over from the JSON."""
    from safetensors import safe_open

    torch.set_num_threads(args.threads)
    with safe_open(str(args.out), framework="pt") as f:
        config = LearnedCodecConfig(**json.loads(f.metadata()["config"]))
        state = {k[len("model."):]: f.get_tensor(k).float() for k in f.keys() if k.startswith("model.")}
    model = TileAutoencoder(config)
    model.load_state_dict(state)
    model.eval()
    old = json.loads(args.out.with_suffix(".json").read_text())
    record = {k: old[k] for k in ("train_seconds", "history", "parameters", "args")}
    record["tables_refit"] = True
    finish(args, model, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
