"""Shared loading for the Hugging Face backends: one place that turns "model id or local path" into a
loaded model, or into an error that says what is missing, where we looked and how to get it.

Nothing here imports transformers/diffusers at module import time, so ``import semcom.codec`` stays light.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable

# pip package that provides each importable module the HF backends use.
PIP_PACKAGE = {
    "transformers": "transformers",
    "diffusers": "diffusers",
    "peft": "peft",
    "accelerate": "accelerate",
    "huggingface_hub": "huggingface_hub",
    "bitsandbytes": "bitsandbytes",
    "torchao": "torchao",
}
REQUIREMENTS_FILE = "requirements-hf.txt"


class ModelNotAvailable(FileNotFoundError):
    """A model id or path that cannot be loaded here (not cached, no network, or no such directory)."""

    def __init__(self, model: str, what: str = "model", detail: str = ""):
        self.model = model
        self.cache_dir = hf_cache_dir()
        local = Path(model).expanduser().resolve()
        message = (f"{what} {model!r} is not available: looked in the local path {local} (not a model "
                   f"directory) and in the Hugging Face cache {self.cache_dir}"
                   f"{' (HF_HUB_OFFLINE is set)' if offline() else ''}. Get it on a connected machine with "
                   f"`huggingface-cli download {model}` (then copy the cache, or set HF_HOME), or pass a "
                   f"local directory made with save_pretrained.")
        if detail:
            message += f" [{detail.splitlines()[0][:200]}]"
        super().__init__(message)


class NeedsCuda(RuntimeError):
    """An option (8-bit / NF4 bitsandbytes loading, device="cuda") that needs a CUDA GPU this machine lacks."""


def require(module: str) -> Any:
    """Import ``module`` or raise ImportError naming the pip package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = PIP_PACKAGE.get(module.split(".")[0], module.split(".")[0])
        raise ImportError(f"this backend needs the '{package}' package: pip install {package} "
                          f"(pinned versions: pip install -r {REQUIREMENTS_FILE})") from exc


def hf_cache_dir() -> str:
    """Where huggingface_hub keeps downloaded models (honours HF_HOME / HF_HUB_CACHE)."""
    try:
        from huggingface_hub import constants
        return str(constants.HF_HUB_CACHE)
    except ImportError:
        home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
        return os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub"))


def offline() -> bool:
    """True when the user asked the hub libraries not to touch the network (read at call time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_path(model: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a directory."""
    return model.startswith((".", "/", "~")) or "\\" in model or model.count("/") > 1


def load_pretrained(load: Callable[..., Any], model: str, *, what: str = "model", **kwargs: Any) -> Any:
    """``load(model, **kwargs)`` (a ``from_pretrained``), turning "not found" into ModelNotAvailable.

    ``model`` is a local directory (used as is) or a hub id (looked up in the HF cache, downloaded only
    when the network is allowed). Never falls back to another model.
    """
    model = str(model)
    path = Path(model).expanduser()
    if path.exists():
        return load(str(path), **kwargs)
    if _looks_like_path(model):
        raise ModelNotAvailable(model, what, "no such directory")
    if offline():
        kwargs.setdefault("local_files_only", True)
    try:
        return load(model, **kwargs)
    except ModelNotAvailable:
        raise
    except OSError as exc:      # transformers/diffusers raise OSError (EnvironmentError) for missing files
        raise ModelNotAvailable(model, what, str(exc)) from exc


def torch_device(device: str) -> str:
    """Validate a torch device string; "cuda" without a CUDA GPU raises NeedsCuda (no silent CPU fallback)."""
    import torch

    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NeedsCuda(f"device={device!r} needs a CUDA GPU, and torch sees none here "
                        f"(torch {torch.__version__}); use device='cpu'")
    return device


def torch_dtype(dtype: str | None, device: str):
    """"float16"/"bfloat16"/"float32" or None (float16 on CUDA, float32 on CPU)."""
    import torch

    if dtype is None:
        return torch.float16 if device.startswith("cuda") else torch.float32
    try:
        return {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}[str(dtype)]
    except KeyError:
        raise ValueError(f"dtype must be float16, bfloat16 or float32, got {dtype!r}") from None
