"""Caption the non-key region with an image-to-text model (BLIP, BLIP-2, GIT, ... via transformers).

The key region is blanked (grey or blurred) first, so the caption says what the *background* shows.
The caption travels as the colour/layout describer's ``subject`` ("a cat on a sofa; top left: ..."):
the built-in renderer ignores it and still paints the layout, a diffusion generator prompts with it.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from semcom.codec.describe.colour_layout import ColourLayoutDescriber
from semcom.codec.hf import load_pretrained, require, torch_device, torch_dtype
from semcom.codec.registry import register

MAX_CAPTION_CHARS = 200        # the caption is a prompt, not an essay; bounds the text segment too
_GREY = 127


def clean_caption(text: str, max_chars: int = MAX_CAPTION_CHARS) -> str:
    """Caption -> words that fit the layout text: no ',', ':' or ';' (they separate layout entries)."""
    text = re.sub(r"[,;:]+", " ", text or "")
    text = " ".join(text.lower().split())
    return text[:max_chars].rsplit(" ", 1)[0] if len(text) > max_chars else text


def blank_key_region(image: np.ndarray, key_mask: np.ndarray, fill: str = "grey") -> np.ndarray:
    """(H, W, 3) uint8 with the key pixels replaced: "grey" (flat mid-grey) or "blur" (a heavy blur of
    the background, so the captioner sees neither the object nor a grey hole)."""
    out = image.copy()
    if not key_mask.any():
        return out
    if fill == "grey":
        out[key_mask] = _GREY
    elif fill == "blur":
        sigma = max(image.shape[:2]) / 16.0
        base = image.copy()
        base[key_mask] = np.asarray(image[~key_mask].mean(axis=0) if (~key_mask).any() else _GREY, np.uint8)
        out[key_mask] = cv2.GaussianBlur(base, (0, 0), sigmaX=sigma)[key_mask]
    else:
        raise ValueError(f"fill must be 'grey' or 'blur', got {fill!r}")
    return out


def load_captioner(model: str, device: str = "cpu", dtype: str | None = None, quantization: str = "fp32",
                   lora_path: str | None = None, revision: str | None = None):
    """(processor, model) for an image-to-text checkpoint, on ``device`` in ``dtype``, with the LoRA
    adapter ``lora_path`` and ``quantization`` applied (int8: adapter merged, then quantized; 8bit/nf4:
    adapter on top of the bitsandbytes layers). ModelNotAvailable when it cannot be found."""
    transformers = require("transformers")
    from semcom.codec.lightweight_hf import apply_post_load, check_placement, load_kwargs_for, load_lora

    weights_dtype = torch_dtype(dtype, device)
    kwargs = load_kwargs_for(quantization, device, "transformers", compute_dtype=weights_dtype)
    if revision:
        kwargs["revision"] = revision
    processor = load_pretrained(transformers.AutoProcessor.from_pretrained, model, what="captioner processor",
                                **({"revision": revision} if revision else {}))
    net = load_pretrained(transformers.AutoModelForImageTextToText.from_pretrained, model, what="captioner",
                          dtype=weights_dtype, **kwargs)
    if "quantization_config" not in kwargs:
        net = net.to(device)
    if lora_path:
        load_lora(net, lora_path)
    net = apply_post_load(net.eval(), quantization)
    check_placement({"captioner": net}, device, weights_dtype)
    return processor, net


@register("describe", "blip")
class CaptionDescriber:
    """Background caption + colour/layout phrase.

    ``model``: hub id ("Salesforce/blip-image-captioning-base") or local directory. ``prompt``: optional
    conditional-captioning prefix (e.g. "a picture of"), removed from the result. ``max_new_tokens``
    caps the caption. ``fill``: how the key region is hidden ("grey" / "blur"). ``quantization``:
    "fp32", "int8"/"int8wo" (torchao, CPU), "8bit"/"nf4" (bitsandbytes). ``lora_path``: a LoRA adapter
    from ``semcom finetune``. ``revision``: the hub commit to load (pin it).
    """

    def __init__(self, model: str = "Salesforce/blip-image-captioning-base", device: str = "cpu",
                 max_new_tokens: int = 20, prompt: str = "", fill: str = "grey", grid: int = 3,
                 dtype: str | None = None, quantization: str = "fp32", lora_path: str | None = None,
                 num_beams: int = 1, revision: str | None = None):
        if not 1 <= int(max_new_tokens) <= 128:
            raise ValueError(f"max_new_tokens must be in 1..128, got {max_new_tokens}")
        blank_key_region(np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), bool), fill)   # validates fill
        require("torch")
        self.device = torch_device(device)
        self.max_new_tokens, self.prompt, self.fill, self.num_beams = int(max_new_tokens), prompt, fill, int(num_beams)
        self.layout = ColourLayoutDescriber(grid=grid)
        self.processor, self.model = load_captioner(model, self.device, dtype, quantization, lora_path, revision)

    def caption(self, image: np.ndarray) -> str:
        """(H, W, 3) uint8 -> cleaned caption (may be empty)."""
        import torch

        inputs = self.processor(images=image, text=self.prompt or None, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                      do_sample=False)
        text = self.processor.batch_decode(ids, skip_special_tokens=True)[0]
        if self.prompt and text.lower().startswith(self.prompt.lower()):
            text = text[len(self.prompt):]
        return clean_caption(text)

    def describe(self, image: np.ndarray, key_mask: np.ndarray) -> str:
        """image (H, W, 3) uint8, key_mask (H, W) bool -> "caption; top left: ..., texture: ..."."""
        image = np.asarray(image)
        key_mask = np.asarray(key_mask, bool)
        if image.ndim != 3 or image.shape[2] != 3 or key_mask.shape != image.shape[:2]:
            raise ValueError(f"need image (H, W, 3) and key_mask (H, W), got {image.shape} and {key_mask.shape}")
        subject = self.caption(blank_key_region(image, key_mask, self.fill))
        layout = self.layout.describe(image, key_mask)
        return f"{subject}; {layout}" if subject else layout


def caption_of(text: str) -> str:
    """The caption part of a description ("" when the text is a bare layout)."""
    head, sep, _ = (text or "").partition("; ")
    if sep:
        return head.strip()
    return "" if ":" in (text or "") else (text or "").strip()
