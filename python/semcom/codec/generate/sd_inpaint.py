"""Generate the background with Stable Diffusion inpainting (diffusers), prompted by the caption.

The region to generate is where ``known_alpha`` < 1 (mask = 1 - known_alpha, binarised by the
pipeline at 0.5) grown by the VAE factor (8 px), so that no latent cell half over the key border keeps
the starting picture's paint; after generation the decoded key pixels are blended back with
``known_alpha``, so the key region is exactly what the key codec decoded. The image is resized up or
down so its long side is the model's native size (512 px for SD 1.5, which degrades well below it) or
``max_side_px``, each side a multiple of 8, and the result back to the original size.

When the frame carried a sketch, the starting picture is the sketch super-resolved by the ``esrgan``
generator and inpainting runs image-to-image at ``sketch_strength`` (default 0.7: the low-rate picture
fixes layout and colours, the caption-prompted model redraws the detail; the design of the generative
semantic-communication papers). Without a sketch it starts from the layout painting at ``strength``.
"""

from __future__ import annotations

import cv2
import numpy as np

from semcom.codec.describe.blip import caption_of
from semcom.codec.hf import load_pretrained, require, torch_device, torch_dtype
from semcom.codec.registry import register

NEUTRAL_PROMPT = "a photo"     # when the text was lost or carries no caption


def model_size(height: int, width: int, side_px: int, multiple: int = 8) -> tuple[int, int]:
    """(h, w) for the model: scaled up or down so the long side is ``side_px``, each a multiple of ``multiple``."""
    scale = side_px / max(height, width)
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    return h, w


def _resize_filter(from_px: int, to_px: int) -> int:
    """Area averaging to shrink (no aliasing), bicubic to enlarge."""
    return cv2.INTER_AREA if to_px < from_px else cv2.INTER_CUBIC


def grow_mask(mask: np.ndarray, grow_px: int) -> np.ndarray:
    """(h, w) uint8 repaint mask (255 = generate) dilated by ``grow_px`` in every direction."""
    if grow_px <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * grow_px + 1, 2 * grow_px + 1))
    return cv2.dilate(mask, kernel)


def native_side_px(pipe) -> int:
    """The resolution the UNet was trained at: its latent sample size times the VAE factor."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def load_inpaint_pipeline(model: str, device: str = "cpu", dtype: str | None = None, quantization: str = "fp32",
                          lora_path: str | None = None, revision: str | None = None):
    """A StableDiffusionInpaintPipeline with every component on ``device`` in ``dtype`` (checked).

    "int8"/"int8wo" quantize the UNet and text encoder linears with torchao (CPU), after merging the
    LoRA adapter ``lora_path`` into the UNet; "8bit"/"nf4" load the UNet through bitsandbytes (CUDA) and
    put the adapter on top."""
    diffusers = require("diffusers")
    require("transformers")
    from semcom.codec.lightweight_hf import apply_post_load, check_placement, load_kwargs_for, load_lora

    torch_dtype_ = torch_dtype(dtype, device)
    common = {"revision": revision} if revision else {}
    extra = {}
    unet_kwargs = load_kwargs_for(quantization, device, "diffusers", compute_dtype=torch_dtype_)
    if unet_kwargs:
        extra["unet"] = load_pretrained(diffusers.UNet2DConditionModel.from_pretrained, model, what="SD inpainting UNet",
                                        subfolder="unet", torch_dtype=torch_dtype_, **unet_kwargs, **common)
    pipe = load_pretrained(diffusers.StableDiffusionInpaintPipeline.from_pretrained, model,
                           what="SD inpainting pipeline", torch_dtype=torch_dtype_, safety_checker=None,
                           requires_safety_checker=False, **extra, **common)
    # Every component, the bitsandbytes UNet too (diffusers moves 4-bit/8-bit modules correctly):
    # skipping this for a quantized UNet left the VAE and text encoder on the CPU.
    pipe = pipe.to(device)
    if lora_path:
        load_lora(pipe.unet, lora_path)
    pipe.unet = apply_post_load(pipe.unet, quantization)
    pipe.text_encoder = apply_post_load(pipe.text_encoder, quantization)
    check_placement(pipe.components, device, torch_dtype_)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@register("generate", "sd-inpaint")
class DiffusionInpainter:
    """Caption-conditioned SD inpainting of everything outside the received key pixels.

    ``model``: hub id (e.g. "stable-diffusion-v1-5/stable-diffusion-inpainting") or local directory.
    ``steps``, ``guidance_scale``, ``negative_prompt``: as in diffusers. ``strength`` < 1 starts from the
    built-in renderer's painting of the layout colours instead of pure noise. ``sketch_strength``: the
    strength when a sketch arrived (the start is then the super-resolved sketch); 0.7 by default, a
    common image-to-image setting, not tuned here (no real SD checkpoint offline). ``max_side_px``: the long
    side the model works at (default: its native size, 512 for SD 1.5; smaller images are upscaled).
    ``lora_path``: UNet LoRA adapter from ``semcom finetune --target unet``. ``revision``: the hub commit
    to load (pin it).
    """

    def __init__(self, model: str = "stable-diffusion-v1-5/stable-diffusion-inpainting", device: str = "cpu",
                 steps: int = 25, guidance_scale: float = 7.5, negative_prompt: str = "", strength: float = 1.0,
                 max_side_px: int | None = None, dtype: str | None = None, quantization: str = "fp32",
                 lora_path: str | None = None, revision: str | None = None, sketch_strength: float = 0.7):
        if not 1 <= int(steps) <= 1000:
            raise ValueError(f"steps must be in 1..1000, got {steps}")
        for name, value in (("strength", strength), ("sketch_strength", sketch_strength)):
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if max_side_px is not None and not 64 <= int(max_side_px) <= 2048:
            raise ValueError(f"max_side_px must be in 64..2048, got {max_side_px}")
        self.device = torch_device(device)
        self.steps, self.guidance_scale, self.negative_prompt = int(steps), float(guidance_scale), negative_prompt
        self.strength, self.sketch_strength = float(strength), float(sketch_strength)
        self._start_painter = None      # the esrgan generator, built on the first frame with a sketch
        self.pipe = load_inpaint_pipeline(model, self.device, dtype, quantization, lora_path, revision)
        self.max_side_px = int(max_side_px) if max_side_px is not None else native_side_px(self.pipe)
        self.mask_grow_px = int(self.pipe.vae_scale_factor)

    def prompt_for(self, text: str) -> str:
        return caption_of(text) or NEUTRAL_PROMPT

    def start_picture(self, text: str, known: np.ndarray, alpha: np.ndarray, seed: int,
                      sketch: np.ndarray | None) -> np.ndarray:
        """Known pixels over the super-resolved sketch, or over the layout painting without one."""
        from semcom.codec.generate.esrgan import SketchSuperResolver
        from semcom.codec.generate.render import LayoutRenderer

        if sketch is None:
            return LayoutRenderer().generate(text, known, alpha, seed=seed)
        if self._start_painter is None:
            self._start_painter = SketchSuperResolver()
        return self._start_painter.generate(text, known, alpha, seed=seed, sketch=sketch)

    def generate(self, text: str, known: np.ndarray, known_alpha: np.ndarray, seed: int = 0,
                 sketch: np.ndarray | None = None) -> np.ndarray:
        """known (H, W, 3) uint8, known_alpha (H, W) float in [0, 1], sketch (h, w, 3) uint8 or None
        -> (H, W, 3) uint8."""
        import torch
        from PIL import Image

        known = np.asarray(known)
        alpha = np.clip(np.asarray(known_alpha, np.float32), 0.0, 1.0)
        if known.ndim != 3 or known.shape[2] != 3 or alpha.shape != known.shape[:2]:
            raise ValueError(f"need known (H, W, 3) and known_alpha (H, W), got {known.shape} and {alpha.shape}")
        height, width = alpha.shape
        if alpha.min() >= 1.0:
            return known.astype(np.uint8).copy()
        # The starting picture, what strength < 1 keeps a trace of.
        start = self.start_picture(text, known, alpha, seed, sketch)
        mh, mw = model_size(height, width, self.max_side_px)
        image = Image.fromarray(cv2.resize(start, (mw, mh), interpolation=_resize_filter(width, mw)))
        mask = cv2.resize(((1.0 - alpha) * 255).round().astype(np.uint8), (mw, mh), interpolation=cv2.INTER_NEAREST)
        mask = grow_mask(mask, self.mask_grow_px)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        with torch.inference_mode():
            result = self.pipe(prompt=self.prompt_for(text), negative_prompt=self.negative_prompt or None,
                               image=image, mask_image=Image.fromarray(mask), height=mh, width=mw,
                               num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                               strength=self.strength if sketch is None else self.sketch_strength,
                               generator=generator, output_type="np")
        generated = (np.clip(result.images[0], 0.0, 1.0) * 255.0).round().astype(np.uint8)
        if (mh, mw) != (height, width):
            generated = cv2.resize(generated, (width, height), interpolation=_resize_filter(mw, width))
        a = alpha[..., None]
        out = a * known.astype(np.float32) + (1.0 - a) * generated.astype(np.float32)
        return np.clip(out.round(), 0, 255).astype(np.uint8)
