"""Lightweight deployment of the Hugging Face backends (re-exported by ``semcom.codec.lightweight``).

int8 dynamic quantization on CPU (torch.ao), 8-bit / NF4 loading on CUDA (bitsandbytes through the
libraries' ``quantization_config``), LoRA adapters (peft) for the diffusion UNet and the captioner,
saved and loaded as safetensors. Heavy libraries are imported inside functions.

Quantization names: "fp32" (as trained), "int8" (CPU, dynamic int8 weights of every nn.Linear, applied
after loading), "8bit" and "nf4" (CUDA only, bitsandbytes, applied while loading).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from semcom.codec.hf import NeedsCuda, require

QUANTIZATIONS = ("fp32", "int8", "8bit", "nf4")
CUDA_QUANTIZATIONS = ("8bit", "nf4")
_LORA_METADATA_KEY = "semcom_lora_config"


def check_quantization(quantization: str, device: str) -> str:
    """Refuse combinations that cannot run, with the reason: bitsandbytes needs CUDA, torch.ao int8 is CPU."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    on_cuda = str(device).startswith("cuda")
    if quantization in CUDA_QUANTIZATIONS:
        import torch

        if not on_cuda or not torch.cuda.is_available():
            kind = "NF4 4-bit" if quantization == "nf4" else "8-bit"
            have = "no CUDA GPU" if not torch.cuda.is_available() else f"a CUDA GPU but device={device!r}"
            raise NeedsCuda(f"quantization={quantization!r} (bitsandbytes {kind} loading) needs a CUDA GPU "
                            f"and device='cuda'; here there is {have}. On CPU use quantization='int8' "
                            f"(torch dynamic int8) or 'fp32'.")
    if quantization == "int8" and on_cuda:
        raise ValueError("quantization='int8' is torch dynamic int8 for CPU; on CUDA use '8bit' or 'nf4'")
    return quantization


def load_kwargs_for(quantization: str = "fp32", device: str = "cpu", library: str = "transformers") -> dict[str, Any]:
    """Extra ``from_pretrained`` kwargs for ``quantization`` on ``device``.

    "fp32"/"int8" -> {} ("int8" is applied afterwards by :func:`apply_post_load`); "8bit"/"nf4" ->
    ``{"quantization_config": BitsAndBytesConfig(...)}`` of ``library`` ("transformers" or "diffusers"),
    raising NeedsCuda without a CUDA GPU.
    """
    if library not in ("transformers", "diffusers"):
        raise ValueError(f"library must be 'transformers' or 'diffusers', got {library!r}")
    check_quantization(quantization, device)
    if quantization not in CUDA_QUANTIZATIONS:
        return {}
    import torch

    require("bitsandbytes")
    config_cls = require(library).BitsAndBytesConfig
    if quantization == "8bit":
        config = config_cls(load_in_8bit=True)
    else:
        config = config_cls(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                            bnb_4bit_compute_dtype=torch.float16)
    kwargs: dict[str, Any] = {"quantization_config": config}
    if library == "transformers":
        kwargs["device_map"] = {"": str(device)}
    return kwargs


def apply_post_load(module, quantization: str):
    """What ``quantization`` does after loading: "int8" -> :func:`quantize_int8_dynamic`, else unchanged."""
    return quantize_int8_dynamic(module) if quantization == "int8" else module


def quantize_int8_dynamic(module):
    """Dynamic int8 (torch.ao) of every ``nn.Linear``: weights stored int8 per tensor, activations
    quantized on the fly; CPU only. Covers the BLIP vision/text transformers and the UNet's attention
    and feed-forward linears (convolutions stay float). Returns a new module; ``module`` is unchanged."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(module.eval(), {torch.nn.Linear}, dtype=torch.qint8, inplace=False)


def model_weight_bytes(module) -> int:
    """Bytes of the weights as held in memory: every state-dict tensor, and the int8 weight and float
    bias inside the packed params of dynamic-quantized linears (which are not ``parameters()``)."""
    import torch

    total = 0
    for value in module.state_dict().values():
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, torch.Tensor):
                total += item.numel() * item.element_size()
    return total


def add_lora(model, r: int = 4, alpha: float = 4.0, target_modules: Iterable[str] = ("to_q", "to_k", "to_v", "to_out.0"),
             dropout: float = 0.0):
    """Add a LoRA adapter named "default" in place (diffusers ``ModelMixin`` and transformers
    ``PreTrainedModel`` both have ``add_adapter``); freezes every weight but the adapter's.

    Typical ``target_modules``: UNet ``("to_q", "to_k", "to_v", "to_out.0")``; BLIP text decoder
    ``("query", "value")``. A fresh adapter is an identity (B = 0), so outputs are unchanged until trained.
    """
    peft = require("peft")
    if not hasattr(model, "add_adapter"):
        raise TypeError(f"{type(model).__name__} has no add_adapter; pass a diffusers or transformers model")
    config = peft.LoraConfig(r=int(r), lora_alpha=float(alpha), target_modules=sorted(set(target_modules)),
                             lora_dropout=float(dropout), init_lora_weights=True)
    model.add_adapter(config)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return model


def lora_parameters(model) -> list:
    return [p for n, p in model.named_parameters() if "lora_" in n]


def save_lora(model, path: str | Path) -> Path:
    """Write the "default" adapter's weights and config to one ``.safetensors`` file (config in metadata)."""
    peft = require("peft")
    from safetensors.torch import save_file

    config = model.peft_config["default"]
    state = {k: v.detach().to("cpu").contiguous() for k, v in
             peft.get_peft_model_state_dict(model, adapter_name="default").items()}
    if not state:
        raise ValueError("the model has no LoRA weights to save")
    meta = {"r": config.r, "alpha": config.lora_alpha, "target_modules": sorted(config.target_modules),
            "dropout": config.lora_dropout, "model_class": type(model).__name__}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={_LORA_METADATA_KEY: json.dumps(meta)})
    return path


def read_lora_config(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = (f.metadata() or {}).get(_LORA_METADATA_KEY)
    if meta is None:
        raise ValueError(f"{path}: not a semcom LoRA adapter (no {_LORA_METADATA_KEY} metadata)")
    return json.loads(meta)


def load_lora(model, path: str | Path):
    """Add the adapter saved by :func:`save_lora` to ``model`` (same architecture) and load its weights.
    Raises FileNotFoundError for a missing file and ValueError when the weights do not fit the model."""
    peft = require("peft")
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA adapter {path} does not exist")
    meta = read_lora_config(path)
    add_lora(model, meta["r"], meta["alpha"], meta["target_modules"], meta.get("dropout", 0.0))
    result = peft.set_peft_model_state_dict(model, load_file(str(path)), adapter_name="default")
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"{path}: adapter weights do not fit {type(model).__name__}: {unexpected[:3]}...")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
