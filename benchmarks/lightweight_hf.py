"""fp32 vs torchao int8 vs torch.ao int8 vs bitsandbytes 8-bit/NF4 vs LoRA for the Hugging Face captioner
and inpainter, in one table and one run.

    python benchmarks/lightweight_hf.py                      # tiny random models built here (CPU)
    python benchmarks/lightweight_hf.py --device cuda \\
        --captioner Salesforce/blip-image-captioning-base \\
        --inpainter stable-diffusion-v1-5/stable-diffusion-inpainting --steps 25 --max-side 512 \\
        --captioner-lora cap.safetensors --inpainter-lora unet.safetensors

Variants: fp32; int8 (torchao int8 weights + dynamic int8 activations of every Linear); int8wo (torchao
int8 weight-only); torch.ao (the deprecated torch.ao.quantization.quantize_dynamic that int8 replaced,
kept here only as the reference it is measured against); 8bit and nf4 (bitsandbytes; transformers runs
them on CPU, diffusers refuses them without a CUDA GPU); lora (fp32 + adapter); int8+lora (adapter
merged, then torchao int8).

Each row runs in a fresh process, so memory is not shared between rows. Columns:
  weights_MB  bytes of the weights as held (int8: int8 data + scales + float biases/others)
  peak_MB     peak RSS during model load + inference minus the RSS before loading (sampled every 5 ms
              from /proc/self/statm; CPU RAM; on CUDA also torch.cuda.max_memory_allocated in cuda_MB)
  s/image     mean wall time per image after one warm-up image
  quality     captioner: mean word agreement with the fp32 caption (Jaccard, 1 = same words);
              inpainter: mean squared error vs the fp32 output, 0..255 scale, generated pixels only
              (LoRA rows are compared with fp32 too: they are meant to differ)
Rows that cannot run here say "not run" and why.
With tiny random models the quality column measures numerical drift, not caption or image quality.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = ("fp32", "int8", "int8wo", "torch.ao", "8bit", "nf4", "lora", "int8+lora")


class PeakRss:
    """Peak resident set size while the block runs, minus the RSS at its start (MB), sampled every
    5 ms from /proc/self/statm. (getrusage's ru_maxrss is a lifetime peak: imports would hide the model.)"""

    def __enter__(self):
        import threading

        self._page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.mb = (self.peak - self.start) / 2**20


def _images(folder: str | None, limit: int) -> list[np.ndarray]:
    from semcom.codec.imageio import load_image
    from semcom.paths import bundled_photos

    paths = sorted(Path(folder).glob("*.png")) if folder else bundled_photos()
    return [load_image(p) for p in paths[:limit]]


def _key_mask(image: np.ndarray) -> np.ndarray:
    from semcom.codec.regions.saliency import SaliencySplitter

    return SaliencySplitter().split(image)


def _torch_ao_int8(module):
    """The deprecated torch.ao dynamic int8 of every Linear (what quantization="int8" used before torchao)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(module.eval(), {torch.nn.Linear}, dtype=torch.qint8, inplace=False)


def run_row(component: str, variant: str, args) -> dict:
    """In a fresh process: load one variant, run it on every image, return measurements + outputs."""
    import torch

    from semcom.codec import registry
    from semcom.codec.describe.blip import blank_key_region
    from semcom.codec.lightweight_hf import model_weight_bytes

    images = _images(args.images, args.limit)
    masks = [_key_mask(im) for im in images]
    rss = PeakRss().__enter__()
    quantization = {"torch.ao": "fp32", "lora": "fp32", "int8+lora": "int8"}.get(variant, variant)
    lora = variant.endswith("lora")
    if component == "captioner":
        options = {"model": args.captioner, "device": args.device, "max_new_tokens": args.max_new_tokens,
                   "quantization": quantization}
        if lora:
            options["lora_path"] = args.captioner_lora
        backend = registry.create("describe", "blip", **options)
        if variant == "torch.ao":
            backend.model = _torch_ao_int8(backend.model)
        weights = model_weight_bytes(backend.model)
        run = lambda im, m: backend.caption(blank_key_region(im, m, "grey"))  # noqa: E731
    else:
        options = {"model": args.inpainter, "device": args.device, "steps": args.steps,
                   "max_side_px": args.max_side, "quantization": quantization}
        if lora:
            options["lora_path"] = args.inpainter_lora
        backend = registry.create("generate", "sd-inpaint", **options)
        if variant == "torch.ao":
            backend.pipe.unet = _torch_ao_int8(backend.pipe.unet)
            backend.pipe.text_encoder = _torch_ao_int8(backend.pipe.text_encoder)
        weights = sum(model_weight_bytes(m) for m in (backend.pipe.unet, backend.pipe.text_encoder, backend.pipe.vae))
        run = lambda im, m: backend.generate("a photo", im, m.astype(np.float32), seed=0)  # noqa: E731
    run(images[0], masks[0])                                   # warm-up
    outputs, started = [], time.perf_counter()
    for im, m in zip(images, masks):
        outputs.append(run(im, m))
    seconds = (time.perf_counter() - started) / len(images)
    rss.__exit__(None, None, None)
    row = {"weights_MB": weights / 2**20, "peak_MB": rss.mb, "s_per_image": seconds}
    if args.device.startswith("cuda"):
        row["cuda_MB"] = torch.cuda.max_memory_allocated() / 2**20
    if component == "captioner":
        row["outputs"] = outputs
    else:
        path = Path(args.work) / f"{component}-{variant}.npz"
        np.savez_compressed(path, *outputs)
        row["outputs_npz"] = str(path)
    return row


def _quality(component: str, row: dict, reference: dict, args) -> str:
    if component == "captioner":
        scores = []
        for a, b in zip(row["outputs"], reference["outputs"]):
            wa, wb = set(a.split()), set(b.split())
            scores.append(1.0 if not (wa | wb) else len(wa & wb) / len(wa | wb))
        return f"agree {np.mean(scores):.2f}"
    a, b = np.load(row["outputs_npz"]), np.load(reference["outputs_npz"])
    images = _images(args.images, args.limit)
    errors = []
    for key, image in zip(a.files, images):
        generate = ~_key_mask(image)
        errors.append(float(((a[key].astype(float) - b[key].astype(float))[generate] ** 2).mean()))
    return f"MSE {np.mean(errors):.1f}"


def _child(component: str, variant: str, args) -> dict:
    cmd = [sys.executable, __file__, "--row", f"{component}:{variant}"] + args.passthrough
    result = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["failed"])[-1]
        if "NeedsCuda" in tail:
            return {"error": "not run (needs CUDA): diffusers refuses bitsandbytes without a CUDA GPU"}
        return {"error": "not run: " + tail.split(": ", 1)[-1][:110]}
    return json.loads(lines[-1])


def _make_tiny_loras(args) -> None:
    """Short LoRA runs on the tiny models (so the LoRA row has an adapter that changes the output)."""
    from semcom.finetune import train_captioner_lora, train_unet_lora, training_photos

    files = training_photos()              # never the evaluation photos (PHOTOS.md), whatever --images says
    captions = ["a photo of a scene"] * len(files)
    if not args.captioner_lora:
        args.captioner_lora = str(Path(args.work) / "captioner-lora.safetensors")
        train_captioner_lora(args.captioner, files, captions, args.captioner_lora, steps=20, lr=2e-2)
    if not args.inpainter_lora:
        args.inpainter_lora = str(Path(args.work) / "unet-lora.safetensors")
        train_unet_lora(args.inpainter, files, captions, args.inpainter_lora, steps=4, lr=1e-3, size_px=64)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captioner", help="captioner id/dir (default: tiny BLIP built in --tiny-dir)")
    p.add_argument("--inpainter", help="SD inpainting id/dir (default: tiny pipeline built in --tiny-dir)")
    p.add_argument("--captioner-lora", help="adapter for the LoRA row (default: a few tiny training steps)")
    p.add_argument("--inpainter-lora", help="UNet adapter for the LoRA row (default: a few tiny training steps)")
    p.add_argument("--tiny-dir", default="out/tiny-hf")
    p.add_argument("--images", help="folder of .png images (default: the bundled photos)")
    p.add_argument("--limit", type=int, default=4, help="images used")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=4, help="inpainting steps")
    p.add_argument("--max-side", type=int, default=128, help="inpainting resolution (long side, px)")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--components", default="captioner,inpainter")
    p.add_argument("--work", help="directory for outputs and adapters (default: a temporary one)")
    p.add_argument("--row", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.row:
        component, variant = args.row.split(":")
        print(json.dumps(run_row(component, variant, args)))
        return 0
    if not (args.captioner and args.inpainter):
        from semcom.testing.hf_tiny import build_tiny_models

        tiny = build_tiny_models(args.tiny_dir)
        args.captioner = args.captioner or str(tiny["blip"])
        args.inpainter = args.inpainter or str(tiny["sd"])
    args.work = args.work or tempfile.mkdtemp(prefix="semcom-bench-")
    os.makedirs(args.work, exist_ok=True)
    if not (args.captioner_lora and args.inpainter_lora):
        _make_tiny_loras(args)
    args.passthrough = []
    for name in ("captioner", "inpainter", "captioner_lora", "inpainter_lora", "images", "limit", "device",
                 "steps", "max_side", "max_new_tokens", "work"):
        value = getattr(args, name)
        if value is not None:
            args.passthrough += [f"--{name.replace('_', '-')}", str(value)]
    print(f"device={args.device}  images={args.limit}  captioner={args.captioner}  inpainter={args.inpainter}")
    print(f"{'component':<10} {'variant':<9} {'weights_MB':>10} {'peak_MB':>8} {'s/image':>8}  quality")
    for component in args.components.split(","):
        reference = None
        for variant in VARIANTS:
            row = _child(component, variant, args)
            if "error" in row:
                print(f"{component:<10} {variant:<9} {'-':>10} {'-':>8} {'-':>8}  {row['error']}")
                continue
            if variant == "fp32":
                reference = row
            quality = _quality(component, row, reference, args) if reference else "-"
            extra = f"  cuda_MB {row['cuda_MB']:.0f}" if "cuda_MB" in row else ""
            print(f"{component:<10} {variant:<9} {row['weights_MB']:>10.3f} {row['peak_MB']:>8.1f} "
                  f"{row['s_per_image']:>8.3f}  {quality}{extra}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
