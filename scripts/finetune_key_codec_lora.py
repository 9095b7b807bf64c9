#!/usr/bin/env python3
"""LoRA fine-tuning of the learned key codec's *encoder* on a new domain, with peft.

    python scripts/finetune_key_codec_lora.py [--domain faces|text] [--steps 600] [--out ADAPTER.safetensors]

Why encoder only: peft's LoRA wraps Conv2d but not ConvTranspose2d, and the synthesis transform is
made of ConvTranspose2d. An encoder-only adapter has a deployment upside: the bitstream, the tables
and the receiver are unchanged (same codec id, stock decoder), only the transmitter loads the adapter.

Domains (grey images replicated to 3 channels), all offline from the scikit-image wheel:
- ``faces``: ``lfw_subset()`` (200 grey 25x25 faces) upscaled to 64x64 (bicubic); faces 0..149 train,
  150..199 are held out.
- ``text``: printed text, which the codec's training photos lack: random 64x64 crops of ``text()``
  train, every full 64x64 tile of another document, ``page()``, is held out.

Loss: the training objective of
``train_key_codec.py`` (Laplace-prior bits + lambda * 255^2 * MSE) at the chosen level's step.
Prints bytes / PSNR / SSIM on the held-out faces before and after, through the real entropy coder,
after saving the adapter to safetensors and loading it back into a fresh model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from semcom.codec.key.learned import DEFAULT_LEARNED_QUALITY, LearnedTileCodec  # noqa: E402
from semcom.codec.key.learned_model import TileAutoencoder  # noqa: E402



def analysis_convs(model: TileAutoencoder) -> list[str]:
    """The LoRA targets: every analysis convolution (peft wraps Conv2d, not ConvTranspose2d)."""
    return [f"analysis.{i}" for i, layer in enumerate(model.analysis) if isinstance(layer, torch.nn.Conv2d)]


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(grey)[..., None], 3, axis=-1)


def faces(rng: np.random.Generator) -> tuple[Callable[[int], np.ndarray], np.ndarray, str]:
    from skimage import data

    out = []
    for face in data.lfw_subset():
        g = Image.fromarray((np.clip(face, 0, 1) * 255).round().astype(np.uint8)).resize((64, 64), Image.BICUBIC)
        out.append(_rgb(g))
    all_faces = np.stack(out)
    train = all_faces[:150]
    return (lambda n: train[rng.integers(0, len(train), n)]), all_faces[150:], "faces (lfw_subset 150..199)"


def text(rng: np.random.Generator) -> tuple[Callable[[int], np.ndarray], np.ndarray, str]:
    from skimage import data

    source, page = _rgb(data.text()), _rgb(data.page())

    def crops(n: int) -> np.ndarray:
        ys = rng.integers(0, source.shape[0] - 63, n)
        xs = rng.integers(0, source.shape[1] - 63, n)
        return np.stack([source[y:y + 64, x:x + 64] for y, x in zip(ys, xs)])

    held_out = np.stack([page[y:y + 64, x:x + 64] for y in range(0, page.shape[0] - 63, 64)
                         for x in range(0, page.shape[1] - 63, 64)])
    return crops, held_out, f"page() tiles ({len(held_out)})"


DOMAINS = {"faces": faces, "text": text}


def with_lora(model: TileAutoencoder, rank: int):
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=analysis_convs(model), lora_dropout=0.0)
    return inject_adapter_in_model(config, model)


def evaluate(codec: LearnedTileCodec, encoder: TileAutoencoder, tiles: np.ndarray) -> dict:
    """Encode with ``encoder``'s analysis transform, decode with the stock codec (the receiver)."""
    from skimage.metrics import structural_similarity

    w = codec._weights
    step = w.steps[codec.quality - 1]
    k = torch.from_numpy(w.support[codec.quality - 1])[None, :, None, None]
    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
    with torch.inference_mode():
        q = torch.maximum(torch.minimum(torch.round(encoder.encode(x) / step), k), -k).to(torch.int64).numpy()
    data = [codec.pack(l) for l in q]
    out = [codec.decode_tile(d, 64, 64) for d in data]
    psnr = [10 * np.log10(255**2 / max(np.mean((a.astype(float) - b) ** 2), 1e-10)) for a, b in zip(tiles, out)]
    ssim = [structural_similarity(a, b, channel_axis=2, data_range=255) for a, b in zip(tiles, out)]
    return {"bytes": float(np.mean([len(d) for d in data])), "psnr_db": float(np.mean(psnr)),
            "ssim": float(np.mean(ssim))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domain", choices=sorted(DOMAINS), default="faces")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lmbda", type=float, default=0.035)
    p.add_argument("--quality", type=int, default=DEFAULT_LEARNED_QUALITY)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="default: /tmp/key_codec_<domain>_lora.safetensors")
    args = p.parse_args(argv)
    args.out = args.out or Path(f"/tmp/key_codec_{args.domain}_lora.safetensors")
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    codec = LearnedTileCodec(quality=args.quality, weights=args.weights)
    sample, held_out, held_out_name = DOMAINS[args.domain](rng)
    before = evaluate(codec, codec.model, held_out)

    def fresh() -> TileAutoencoder:
        m = TileAutoencoder(codec.model.config)
        m.load_state_dict(codec.model.state_dict())
        return m

    targets = analysis_convs(codec.model)
    model = with_lora(fresh(), args.rank)
    for name, param in model.named_parameters():
        param.requires_grad = "lora_" in name
    trainable = [p_ for p_ in model.parameters() if p_.requires_grad]
    opt = torch.optim.Adam(trainable, lr=args.lr)
    step = codec._weights.steps[args.quality - 1]
    t0 = time.time()
    for it in range(1, args.steps + 1):
        batch = sample(16)
        if rng.random() < 0.5:
            batch = batch[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255.0
        y = model.encode(x)
        y_noisy = y + (torch.rand_like(y) - 0.5) * step
        mse = torch.mean((model.decode(y_noisy) - x) ** 2)
        loss = model.rate_bits(y_noisy, step).mean() / 4096 + args.lmbda * 255**2 * mse
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 100 == 0:
            print(f"step {it}  loss {loss.item():.3f}  [{time.time() - t0:.0f} s]", flush=True)
    adapter = {k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(adapter, str(args.out), metadata={"base": "key_codec.safetensors", "domain": args.domain,
                                                "targets": ",".join(targets),
                                                "rank": str(args.rank), "quality": str(args.quality)})
    # Load it back into a fresh model, as a transmitter would.
    reloaded = with_lora(fresh(), args.rank)
    result = set_peft_model_state_dict(reloaded, load_file(str(args.out)))
    assert not [k for k in result.unexpected_keys if "lora_" in k], result
    reloaded.eval()
    after = evaluate(codec, reloaded, held_out)
    n_adapter = sum(v.numel() for v in adapter.values())
    print(f"\nLoRA rank {args.rank} on {targets}: {n_adapter} parameters, {args.out.stat().st_size} bytes "
          f"({args.out}); {args.steps} steps in {time.time() - t0:.0f} s")
    print(f"Held-out {held_out_name}, 64x64, quality {args.quality}, stock decoder:")
    print("| encoder | bytes/tile | PSNR dB | SSIM |\n|---|---|---|---|")
    for name, r in (("base", before), (f"base + {args.domain} LoRA", after)):
        print(f"| {name} | {r['bytes']:.0f} | {r['psnr_db']:.2f} | {r['ssim']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
