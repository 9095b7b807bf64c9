#!/usr/bin/env python3
"""Train the analog (DeepJSCC) key-region model and write ``gr-semcom/weights/deepjscc.safetensors`` + ``.json``.

    python scripts/train_deepjscc.py --steps 6000 --out gr-semcom/weights/deepjscc.safetensors

Data, crops and held-out photos are those of the key codec (``scripts/train_key_codec.py``: random 64x64
crops of scikit-image photos; chelsea and coffee never trained on). The analysis/synthesis transforms
start from the learned key codec's weights (``--warm-start``; its latents already describe a tile well),
the SNR attention modules start at identity. Loss: mean over tiles of log MSE (= mean PSNR) after an AWGN
channel whose SNR (Es/N0 per complex symbol) is drawn uniformly from ``semcom.codec.jscc.TRAIN_SNR_DB``
per tile, and given to both ends.
Seeded: the same command gives the same weights on the same torch build.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "scripts"))

from train_key_codec import (CROP, HELD_OUT, TRAIN_COLOUR, TRAIN_GREY, CropSampler, held_out_tiles,  # noqa: E402
                             validation_batch, warmup_cosine)

from semcom.codec import jscc  # noqa: E402

VALIDATION_SNR_DB = (-2, 0, 2, 5, 10, 15, 20)


def warm_start(model: jscc.DeepJSCC, path: Path, sampler: CropSampler) -> dict:
    """Copy the key codec's transforms; set symbol_scale to the RMS of its latents on training crops."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        state = {k[len("model."):]: f.get_tensor(k).float() for k in f.keys()
                 if k.startswith("model.analysis.") or k.startswith("model.synthesis.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"key codec weights do not fit: {unexpected}")
    with torch.inference_mode():
        y = model.analysis(sampler.batch(64) - 0.5)
        model.symbol_scale.fill_(float(torch.sqrt((y ** 2).mean() * 2)))   # complex symbol = 2 reals
    return {"warm_start": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "symbol_scale_init": float(model.symbol_scale.detach())}


def validate(weights: Path, seeds: int = 2) -> list[dict]:
    """Mean PSNR / SSIM over the held-out 64x64 tiles per SNR, through the shipped (fp16-rounded) weights."""
    from skimage.metrics import structural_similarity

    model = jscc.load_model(weights)
    tiles = held_out_tiles()
    rows = []
    for snr_db in VALIDATION_SNR_DB:
        psnrs, ssims = [], []
        for seed in range(seeds):
            s = torch.from_numpy(jscc.encode_tiles(tiles, snr_db, model))
            g = torch.Generator().manual_seed(1000 + seed)
            r = jscc.awgn(s, torch.full((len(tiles),), float(snr_db)), g).numpy()
            dec = jscc.decode_tiles(r, snr_db, CROP, CROP, model)
            for a, b in zip(tiles, dec):
                mse = np.mean((a.astype(np.float64) - b) ** 2)
                psnrs.append(10 * np.log10(255 ** 2 / max(mse, 1e-10)))
                ssims.append(structural_similarity(a, b, channel_axis=2, data_range=255))
        rows.append({"snr_db": snr_db, "tiles": len(tiles), "seeds": seeds,
                     "mean_psnr_db": float(np.mean(psnrs)), "mean_ssim": float(np.mean(ssims))})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warm-start", type=Path, default=ROOT / "gr-semcom" / "weights" / "key_codec.safetensors",
                   help="key codec weights to start the transforms from; 'none' trains from scratch")
    p.add_argument("--out", type=Path, default=ROOT / "gr-semcom" / "weights" / "deepjscc.safetensors")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sampler = CropSampler(args.seed)
    model = jscc.DeepJSCC(jscc.JSCCConfig())
    record = {}
    if str(args.warm_start) != "none":
        record.update(warm_start(model, args.warm_start, sampler))
    n_params = sum(p.numel() for p in model.parameters())
    val = validation_batch()
    print(f"model: {n_params} parameters; {args.steps} steps, batch {args.batch}, {args.threads} thread(s); "
          f"{jscc.symbols_for(CROP, CROP)} complex symbols per {CROP}x{CROP} tile", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = warmup_cosine(opt, args.steps)
    lo, hi = jscc.TRAIN_SNR_DB
    noise = torch.Generator().manual_seed(args.seed + 1)
    t0 = time.time()
    history = []
    for it in range(1, args.steps + 1):
        x = sampler.batch(args.batch)
        snr = torch.from_numpy(sampler.rng.uniform(lo, hi, args.batch).astype(np.float32))
        x_hat = model.decode(jscc.awgn(model.encode(x, snr), snr, noise), snr, CROP, CROP)
        # Mean of per-tile log MSE (i.e. mean PSNR): a plain MSE lets the low-SNR tiles, whose errors are
        # largest, dominate the gradient and leaves the high-SNR end flat (first run: 20 dB below 15 dB).
        mse = torch.mean((x_hat - x) ** 2, dim=(1, 2, 3))
        loss = torch.mean(torch.log10(mse + 1e-10))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if it % 250 == 0 or it == args.steps:
            row = {"step": it, "train_psnr_db": -10 * loss.item()}
            with torch.inference_mode():
                g = torch.Generator().manual_seed(7)
                for snr_db in (0, 10, 20):
                    s = torch.full((len(val),), float(snr_db))
                    xv = model.decode(jscc.awgn(model.encode(val, s), s, g), s, CROP, CROP).clamp(0, 1)
                    row[f"val_psnr_db_{snr_db}"] = 10 * math.log10(1 / torch.mean((xv - val) ** 2).item())
            elapsed = time.time() - t0
            history.append(row)
            print(f"step {it:6d}  train {row['train_psnr_db']:.2f} dB | held-out 0/10/20 dB: "
                  f"{row['val_psnr_db_0']:.2f} {row['val_psnr_db_10']:.2f} {row['val_psnr_db_20']:.2f} dB  "
                  f"[{elapsed / 60:.1f} min, eta {elapsed / it * (args.steps - it) / 60:.1f} min]", flush=True)
    train_seconds = time.time() - t0

    model.eval()
    jscc.save_weights(args.out, model, {"train_command": jscc.TRAIN_COMMAND})
    rows = validate(args.out)
    for r in rows:
        print(f"held-out SNR {r['snr_db']:3d} dB: PSNR {r['mean_psnr_db']:.2f} dB  SSIM {r['mean_ssim']:.4f}", flush=True)
    meta = {"weights": args.out.name, "weights_bytes": args.out.stat().st_size, "config": model.config.to_dict(),
            "symbols_per_64px_tile": jscc.symbols_for(CROP, CROP), "bandwidth_ratio": "1/16",
            "train_snr_db": list(jscc.TRAIN_SNR_DB), "train_photos": TRAIN_COLOUR + TRAIN_GREY,
            "held_out_photos": HELD_OUT, "crop_px": CROP,
            "parameters": n_params, "train_seconds": round(train_seconds, 1), "history": history,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "torch": torch.__version__, "python": platform.python_version(), **record, "validation": rows}
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) and {args.out.with_suffix('.json').name}; "
          f"trained in {train_seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
