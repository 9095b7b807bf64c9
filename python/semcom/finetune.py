"""``semcom finetune``: train a LoRA adapter for the captioner (BLIP) or the inpainting UNet.

Images come from a folder; their captions from ``captions.json`` ({"file.png": "caption"}) or
``<image>.txt`` beside each image, or else from the captioner itself. The adapter is one safetensors
file, loaded later by the backends' ``lora_path`` option (describe "blip", generate "sd-inpaint").
``--tiny`` builds tiny random models locally (no download) so the whole path runs on any CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CAPTIONER_TARGETS = ("query", "value")                      # BLIP text decoder self/cross attention
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


# Bundled photos that may train (/work/shared/PHOTOS.md): chelsea and coffee belong to the evaluation set.
TRAINING_PHOTOS = ("astronaut", "rocket")


def training_photos() -> list[Path]:
    """The bundled photos a default ``semcom finetune`` run may train on."""
    from semcom.paths import bundled_photos

    return [p for p in bundled_photos() if p.stem in TRAINING_PHOTOS]


def image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def load_captions(files: list[Path], captions_file: str | Path | None = None, captioner=None) -> list[str]:
    """One caption per image: ``captions_file`` / folder's captions.json, else ``<image>.txt``, else
    ``captioner.caption(image)``; ValueError naming the images that have none."""
    from semcom.codec.describe.blip import clean_caption
    from semcom.codec.imageio import load_image

    table: dict[str, str] = {}
    path = Path(captions_file) if captions_file else files[0].parent / "captions.json"
    if path.is_file():
        table = {str(k): str(v) for k, v in json.loads(path.read_text()).items()}
    elif captions_file:
        raise FileNotFoundError(f"captions file {path} does not exist")
    captions, missing = [], []
    for f in files:
        text = table.get(f.name)
        if text is None and f.with_suffix(".txt").is_file():
            text = f.with_suffix(".txt").read_text()
        if text is None and captioner is not None:
            text = captioner.caption(load_image(f))
        if not text or not clean_caption(text):
            missing.append(f.name)
        captions.append(clean_caption(text or ""))
    if missing:
        raise ValueError(f"no caption for {missing[:5]}{'...' if len(missing) > 5 else ''}: add captions.json or "
                         f"<image>.txt, or give --captioner so the model captions them")
    return captions


def caption_training_batch(processor, net, image: np.ndarray, caption: str, device: str) -> dict:
    """Model inputs that teach ``caption`` the way generation reads it: BLIP's ``generate`` starts
    the text decoder from the bos token [DEC], while the tokenizer starts the sequence with [CLS], so
    the first token is replaced (as Salesforce's BLIP training does) and the first word is trained.
    Padding is excluded from the loss."""
    batch = processor(images=image, text=caption, return_tensors="pt").to(device)
    input_ids = batch["input_ids"].clone()
    input_ids[:, 0] = net.config.text_config.bos_token_id
    batch["input_ids"] = input_ids
    batch["labels"] = input_ids.masked_fill(batch["attention_mask"] == 0, -100)
    batch["pixel_values"] = batch["pixel_values"].to(net.dtype)
    return batch


def _train_in_fp32(model) -> list:
    """The LoRA weights in float32 (AdamW in fp16 loses small updates), the frozen base as loaded."""
    from semcom.codec.lightweight_hf import lora_parameters

    parameters = lora_parameters(model)
    for p in parameters:
        p.data = p.data.float()
    return parameters


def _autocast(device: str, dtype):
    """Mixed precision for a half-precision base (fp32 LoRA weights meet fp16/bf16 activations)."""
    import torch

    return torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)


def train_captioner_lora(model: str, files: list[Path], captions: list[str], out: str | Path, *, rank: int = 4,
                         alpha: float = 8.0, steps: int = 20, lr: float = 1e-3, seed: int = 0,
                         device: str = "cpu", dtype: str | None = None) -> dict:
    """LoRA on the BLIP text decoder's attention (query/value), teacher-forced on the captions.
    ``dtype``: the frozen base's precision (default fp16 on CUDA, fp32 on CPU); the adapter trains in fp32."""
    import torch

    from semcom.codec.describe.blip import load_captioner
    from semcom.codec.hf import torch_dtype
    from semcom.codec.imageio import load_image
    from semcom.codec.lightweight_hf import add_lora, save_lora

    torch.manual_seed(seed)
    base_dtype = torch_dtype(dtype, device)
    processor, net = load_captioner(model, device, dtype)
    add_lora(net, rank, alpha, CAPTIONER_TARGETS)
    parameters = _train_in_fp32(net)
    net.train()
    optimiser = torch.optim.AdamW(parameters, lr=lr)
    images = [load_image(f) for f in files]
    losses = []
    for step in range(steps):
        i = step % len(images)
        batch = caption_training_batch(processor, net, images[i], captions[i], device)
        with _autocast(device, base_dtype):
            loss = net(**batch).loss.float()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    net.eval()
    save_lora(net, out)
    return {"target": "captioner", "steps": steps, "loss_first": losses[0], "loss_last": losses[-1],
            "lora_parameters": sum(p.numel() for p in parameters)}


def train_unet_lora(model: str, files: list[Path], captions: list[str], out: str | Path, *, rank: int = 4,
                    alpha: float = 8.0, steps: int = 20, lr: float = 1e-4, seed: int = 0, device: str = "cpu",
                    size_px: int = 512, dtype: str | None = None) -> dict:
    """LoRA on the inpainting UNet's attention: the standard noise-prediction loss on random box masks.
    ``dtype``: the frozen pipeline's precision (default fp16 on CUDA, fp32 on CPU); inputs are cast to
    it, the adapter and its optimiser stay fp32 and the loss is taken in fp32."""
    import cv2
    import torch
    import torch.nn.functional as F

    from semcom.codec.generate.sd_inpaint import load_inpaint_pipeline
    from semcom.codec.hf import torch_dtype
    from semcom.codec.imageio import load_image
    from semcom.codec.lightweight_hf import add_lora, save_lora

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    base_dtype = torch_dtype(dtype, device)
    pipe = load_inpaint_pipeline(model, device, dtype)
    unet, vae = add_lora(pipe.unet, rank, alpha, UNET_TARGETS), pipe.vae
    parameters = _train_in_fp32(unet)
    unet.train()
    sf = float(vae.config.scaling_factor)
    optimiser = torch.optim.AdamW(parameters, lr=lr)
    losses = []
    for step in range(steps):
        i = step % len(files)
        image = cv2.resize(load_image(files[i]), (size_px, size_px), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].to(device, base_dtype) / 127.5 - 1.0
        mask = torch.zeros(1, 1, size_px, size_px, device=device, dtype=base_dtype)
        h, w = rng.integers(size_px // 4, size_px * 3 // 4, 2)
        y0, x0 = rng.integers(0, size_px - h), rng.integers(0, size_px - w)
        mask[..., y0:y0 + h, x0:x0 + w] = 1.0                  # 1 = generate, as in the pipeline
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.sample() * sf
            masked_latents = vae.encode(x * (1 - mask)).latent_dist.mode() * sf
            ids = pipe.tokenizer([captions[i]], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids.to(device)
            text = pipe.text_encoder(ids)[0]
        mask_latent = F.interpolate(mask, size=latents.shape[-2:])
        noise = torch.randn_like(latents)
        t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (1,), device=device)
        noisy = pipe.scheduler.add_noise(latents, noise, t)
        with _autocast(device, base_dtype):
            pred = unet(torch.cat([noisy, mask_latent, masked_latents], dim=1), t, text).sample
        loss = F.mse_loss(pred.float(), noise.float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    unet.eval()
    save_lora(unet, out)
    return {"target": "unet", "steps": steps, "loss_first": losses[0], "loss_last": losses[-1],
            "lora_parameters": sum(p.numel() for p in parameters)}


def add_finetune_parser(commands) -> None:
    """Register ``semcom finetune`` on the CLI's subparsers."""
    p = commands.add_parser("finetune", help="train a LoRA adapter for the captioner or the inpainting UNet")
    p.add_argument("--images", help="folder of training images (default: the bundled astronaut and rocket photos, "
                                    "which may train; chelsea and coffee are kept for evaluation)")
    p.add_argument("--captions", help="JSON {file name: caption} (default: <images>/captions.json, then <image>.txt)")
    p.add_argument("--target", choices=("captioner", "unet"), default="captioner")
    p.add_argument("--model", help="base model id or directory (captioner: BLIP; unet: SD inpainting pipeline)")
    p.add_argument("--captioner", help="captioner id/dir that captions images that have no caption")
    p.add_argument("--tiny", nargs="?", const="out/tiny-hf", metavar="DIR",
                   help="build tiny random models in DIR (default out/tiny-hf) and train on them: a CPU smoke run")
    p.add_argument("--out", default="out/lora.safetensors", help="adapter file to write")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--alpha", type=float, default=8.0)
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3 captioner, 1e-4 unet)")
    p.add_argument("--size", type=int, default=512, help="UNet training resolution, px (tiny: 64)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                   help="precision of the frozen base model (default float16 on CUDA, float32 on CPU); "
                        "the adapter always trains in float32")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_finetune)


def cmd_finetune(args) -> int:
    from semcom.codec.hf import torch_device

    device = torch_device(args.device)
    if args.steps < 1:
        raise ValueError("--steps must be at least 1")
    model, captioner_model, size = args.model, args.captioner, args.size
    if args.tiny:
        from semcom.testing.hf_tiny import build_tiny_models

        tiny = build_tiny_models(args.tiny)
        model = model or str(tiny["blip" if args.target == "captioner" else "sd"])
        captioner_model = captioner_model or str(tiny["blip"])
        size = 64 if args.size == 512 else args.size
    if not model:
        raise ValueError("give --model (a hub id or directory) or --tiny")
    files = image_files(args.images) if args.images else training_photos()
    captioner = None
    if captioner_model or args.target == "captioner":
        from semcom.codec.describe.blip import CaptionDescriber

        captioner = CaptionDescriber(model=captioner_model or model, device=device)
    captions = load_captions(files, args.captions, captioner)
    started = time.monotonic()
    common = dict(rank=args.rank, alpha=args.alpha, steps=args.steps, seed=args.seed, device=device, dtype=args.dtype)
    if args.target == "captioner":
        report = train_captioner_lora(model, files, captions, args.out, lr=args.lr or 1e-3, **common)
    else:
        report = train_unet_lora(model, files, captions, args.out, lr=args.lr or 1e-4, size_px=size, **common)
    report.update(model=model, images=len(files), out=str(args.out), seconds=round(time.monotonic() - started, 2),
                  bytes=Path(args.out).stat().st_size,
                  use_with={"stage": "describe" if args.target == "captioner" else "generate",
                            "backend": "blip" if args.target == "captioner" else "sd-inpaint",
                            "options": {"model": model, "lora_path": str(args.out)}})
    print(json.dumps(report, indent=2))
    return 0
