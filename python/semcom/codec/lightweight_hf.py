"""Lightweight deployment of the Hugging Face backends (re-exported by ``semcom.codec.lightweight``).

int8 on CPU through torchao (the successor of the deprecated ``torch.ao.quantization``), 8-bit / NF4
through bitsandbytes (the libraries' ``quantization_config``), LoRA adapters (peft) for the diffusion
UNet and the captioner, saved and loaded as safetensors. Heavy libraries are imported inside functions.

Quantization names:
  "fp32"    as loaded (the ``dtype`` option still picks fp32/fp16/bf16)
  "int8"    torchao int8 weights and dynamically int8-quantized activations of every nn.Linear (CPU)
  "int8wo"  torchao int8 weight-only: int8 storage, float arithmetic (CPU)
  "8bit"    bitsandbytes LLM.int8() while loading; "nf4": bitsandbytes 4-bit NormalFloat (double quant).
            transformers models run them on CPU too (bitsandbytes >= 0.49 has CPU kernels);
            diffusers refuses bitsandbytes without a CUDA GPU, so the UNet needs one.
With a LoRA adapter, "int8"/"int8wo" merge the adapter into the float weights first and then quantize
(torchao's weights are not plain tensors, so peft cannot wrap them); "8bit"/"nf4" keep the adapter
unmerged in float on top of the quantized layers (as QLoRA does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from semcom.codec.hf import NeedsCuda, require

QUANTIZATIONS = ("fp32", "int8", "int8wo", "8bit", "nf4")
TORCHAO_QUANTIZATIONS = ("int8", "int8wo")
BNB_QUANTIZATIONS = ("8bit", "nf4")
CUDA_QUANTIZATIONS = BNB_QUANTIZATIONS          # ... for diffusers models (the UNet)
_LORA_METADATA_KEY = "semcom_lora_config"


def check_quantization(quantization: str, device: str, library: str = "transformers") -> str:
    """Refuse combinations that cannot run, with the reason: diffusers' bitsandbytes loading needs CUDA,
    the torchao int8 options are for CPU."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    on_cuda = str(device).startswith("cuda")
    if quantization in BNB_QUANTIZATIONS and library == "diffusers":
        import torch

        if not on_cuda or not torch.cuda.is_available():
            kind = "NF4 4-bit" if quantization == "nf4" else "8-bit"
            have = "no CUDA GPU" if not torch.cuda.is_available() else f"a CUDA GPU but device={device!r}"
            raise NeedsCuda(f"quantization={quantization!r} (bitsandbytes {kind} loading of a diffusers model) "
                            f"needs a CUDA GPU and device='cuda': diffusers refuses bitsandbytes without one; "
                            f"here there is {have}. On CPU use quantization='int8' (torchao) or 'fp32'.")
    if quantization in TORCHAO_QUANTIZATIONS and on_cuda:
        raise ValueError(f"quantization={quantization!r} is torchao int8 for CPU; on CUDA use '8bit' or 'nf4'")
    return quantization


def load_kwargs_for(quantization: str = "fp32", device: str = "cpu", library: str = "transformers",
                    compute_dtype=None) -> dict[str, Any]:
    """Extra ``from_pretrained`` kwargs for ``quantization`` on ``device``.

    "fp32"/"int8"/"int8wo" -> {} (torchao is applied afterwards by :func:`apply_post_load`);
    "8bit"/"nf4" -> ``quantization_config`` (a ``BitsAndBytesConfig`` of ``library``, "transformers" or
    "diffusers") and ``device_map`` on ``device``; NeedsCuda for diffusers without a CUDA GPU.
    ``compute_dtype``: the dtype NF4 layers compute in (default float16 on CUDA, float32 on CPU).
    """
    if library not in ("transformers", "diffusers"):
        raise ValueError(f"library must be 'transformers' or 'diffusers', got {library!r}")
    check_quantization(quantization, device, library)
    if quantization not in BNB_QUANTIZATIONS:
        return {}
    import torch

    require("bitsandbytes")
    config_cls = require(library).BitsAndBytesConfig
    if compute_dtype is None:
        compute_dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    if quantization == "8bit":
        config = config_cls(load_in_8bit=True)
    else:
        config = config_cls(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                            bnb_4bit_compute_dtype=compute_dtype)
    return {"quantization_config": config, "device_map": {"": str(device)}}


def apply_post_load(module, quantization: str):
    """What ``quantization`` does after loading: the torchao options quantize (a LoRA adapter, if any,
    is merged first); the others leave the module unchanged."""
    if quantization not in TORCHAO_QUANTIZATIONS:
        return module
    return quantize_int8(merge_lora(module), weight_only=quantization == "int8wo")


def quantize_int8(module, weight_only: bool = False):
    """torchao int8 of every ``nn.Linear``, in place: int8 weights per output channel and, unless
    ``weight_only``, int8 activations quantized per token on the fly. Covers the BLIP vision/text
    transformers and the UNet's and CLIP's attention and feed-forward linears; convolutions stay float.
    Returns ``module``."""
    quantization = import_torchao_quantization()
    config_cls = quantization.Int8WeightOnlyConfig if weight_only else quantization.Int8DynamicActivationInt8WeightConfig
    quantization.quantize_(module.eval(), config_cls())
    return module


def import_torchao_quantization():
    """``torchao.quantization``, imported with its load-time chatter muted: torchao 0.18 logs a warning
    for each CUDA-only kernel library it cannot load on a CPU machine, and torch logs one about an enum
    it registers; neither matters for the CPU int8 used here."""
    import logging

    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        return require("torchao.quantization")
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def merge_lora(model):
    """Fold every peft LoRA layer of ``model`` into its base weight and put the base layer back, in
    place, so that the model holds plain ``nn.Linear``s again (what torchao can quantize). A model
    without adapters is returned unchanged."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return model
    merged = False
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
            merged = True
    if merged:      # transformers/diffusers read these to decide whether the model carries an adapter
        if hasattr(model, "peft_config"):
            del model.peft_config
        if hasattr(model, "_hf_peft_config_loaded"):
            model._hf_peft_config_loaded = False
    return model


def _is_bnb_weight(parameter) -> bool:
    return type(parameter).__module__.startswith("bitsandbytes")


def check_placement(modules: dict[str, Any], device: str, dtype) -> None:
    """Raise RuntimeError unless every parameter and buffer of ``modules`` ({name: nn.Module}) is on
    ``device`` and every float weight is ``dtype`` (LoRA weights may be float32: they train in fp32;
    bitsandbytes weights are packed integers). A component left behind on another device fails later
    with an opaque error deep in a forward pass; this names it at load time."""
    import torch

    want = torch.device(device)
    wrong = []
    for component, module in modules.items():
        if not isinstance(module, torch.nn.Module):
            continue
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.device.type != want.type or (want.index is not None and tensor.device.index != want.index):
                wrong.append(f"{component}.{name} is on {tensor.device}")
            elif (dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype
                  and "lora_" not in name and not _is_bnb_weight(tensor) and name.endswith("weight")):
                wrong.append(f"{component}.{name} is {tensor.dtype}")
            if len(wrong) >= 3:
                break
    if wrong:
        raise RuntimeError(f"model components disagree with device={device!r}, dtype={dtype}: "
                           f"{'; '.join(wrong)}")


def model_weight_bytes(module) -> int:
    """Bytes of the weights as held in memory: every state-dict tensor, counting the int8 data and
    scales inside torchao tensors and the packed bytes of bitsandbytes weights, not their logical size."""
    import torch

    total = 0
    for value in module.state_dict().values():
        for item in (value if isinstance(value, tuple) else (value,)):
            if not isinstance(item, torch.Tensor):
                continue
            inner = getattr(item, "__tensor_flatten__", None)
            if inner is not None and type(item) is not torch.Tensor and type(item) is not torch.nn.Parameter:
                names, _ = inner()
                total += sum(getattr(item, n).numel() * getattr(item, n).element_size() for n in names)
            else:
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
