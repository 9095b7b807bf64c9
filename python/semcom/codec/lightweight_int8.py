"""int8 variants of the project's CPU torch models (re-exported by ``semcom.codec.lightweight``).

Three tools, each saying what it covers:

- ``quantize_dynamic_int8(model)``: torchao int8 weights with dynamically quantized int8 activations
  of every ``nn.Linear`` (torchao succeeds the deprecated ``torch.ao.quantization.quantize_dynamic``).
  torchao has no int8 kernels for ``Conv2d``/``ConvTranspose2d`` either, so for an all-convolutional model
  such as the learned key codec it changes nothing (``count_dynamic_quantized`` tells how many it took).
- ``quantize_conv_static_int8(model, calibration)``: eager-mode static int8 (fbgemm/x86) of every
  ``Conv2d`` and ``ConvTranspose2d``: int8 weights *and* int8 convolution arithmetic, with a
  quantize/dequantize pair around each convolution, so non-quantizable layers between them (GDN,
  which needs square roots) keep running in float. Activation ranges come from ``calibration``.
- ``Int8WeightStorage``: per-output-channel symmetric int8 storage of convolution weights
  (a quarter of fp32), dequantized to fp32 on load; arithmetic stays fp32, so latency is unchanged
  and only the file shrinks.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its Linear layers quantized by torchao (int8 weights, int8 dynamic
    activations; CPU)."""
    from semcom.codec.lightweight_hf import quantize_int8

    return quantize_int8(copy.deepcopy(model).eval())


def count_dynamic_quantized(model: nn.Module) -> int:
    """How many layers of ``model`` hold torchao-quantized weights."""
    return sum(1 for m in model.modules()
               if type(getattr(m, "weight", None)).__module__.startswith("torchao."))


class _QuantizedConv(nn.Module):
    """float -> quint8 -> int8 conv -> float; a drop-in for one float convolution."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub

        self.quant, self.conv, self.dequant = QuantStub(), conv, DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.conv(self.quant(x)))


def _wrap_convs(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, _CONVS):
            setattr(module, name, _QuantizedConv(child))
        else:
            _wrap_convs(child)


def quantize_conv_static_int8(model: nn.Module, calibration: Callable[[nn.Module], None]) -> nn.Module:
    """A copy of ``model`` whose convolutions run in int8 (x86 fbgemm backend).

    ``calibration(prepared_model)`` must run a few representative forward passes so that observers
    see the activation ranges. Weights of Conv2d are quantized per output channel, those of
    ConvTranspose2d per tensor (the only scheme PyTorch supports for them).
    """
    from torch.ao import quantization as tq

    torch.backends.quantized.engine = "fbgemm"
    q = copy.deepcopy(model).eval()
    _wrap_convs(q)
    conv_qconfig = tq.get_default_qconfig("fbgemm")
    deconv_qconfig = tq.QConfig(activation=conv_qconfig.activation,
                                weight=tq.default_weight_observer)        # per-tensor
    for m in q.modules():
        if isinstance(m, _QuantizedConv):
            m.qconfig = deconv_qconfig if isinstance(m.conv, nn.ConvTranspose2d) else conv_qconfig
    tq.prepare(q, inplace=True)
    with torch.inference_mode():
        calibration(q)
    tq.convert(q, inplace=True)
    return q


class Int8WeightStorage:
    """Per-output-channel symmetric int8 copies of a model's convolution weights.

    ``tensors`` maps ``<param>.int8`` (int8) and ``<param>.scale`` (fp32, one per output channel, shaped
    to broadcast over the weight) for every conv weight, and ``<param>`` (fp16) for everything else.
    """

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    @classmethod
    def from_model(cls, model: nn.Module) -> Int8WeightStorage:
        conv_weights = {f"{name}.weight": m for name, m in model.named_modules() if isinstance(m, _CONVS)}
        tensors: dict[str, torch.Tensor] = {}
        for name, value in model.state_dict().items():
            value = value.detach().float()
            if name in conv_weights:
                # Conv2d weight is (out, in, kh, kw); ConvTranspose2d is (in, out, kh, kw).
                axis = 1 if isinstance(conv_weights[name], nn.ConvTranspose2d) else 0
                moved = value.movedim(axis, 0)
                scale = moved.abs().flatten(1).amax(1).clamp_min(1e-12) / 127.0
                q = torch.round(moved / scale.view(-1, *[1] * (moved.dim() - 1))).clamp(-127, 127)
                shape = [1] * value.dim()
                shape[axis] = -1                   # stored ready to broadcast over the weight
                tensors[f"{name}.int8"] = q.to(torch.int8).movedim(0, axis).contiguous()
                tensors[f"{name}.scale"] = scale.view(shape).contiguous()
            else:
                tensors[name] = value.to(torch.float16).contiguous()
        return cls(tensors)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """fp32 state dict: int8 weights times their per-channel scales."""
        out = {}
        for name, value in self.tensors.items():
            if name.endswith(".int8"):
                base = name[: -len(".int8")]
                out[base] = value.float() * self.tensors[f"{base}.scale"]
            elif not name.endswith(".scale"):
                out[name] = value.float()
        return out

    def load_into(self, model: nn.Module) -> nn.Module:
        model.load_state_dict(self.state_dict())
        return model

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        from safetensors.torch import save_file

        save_file(self.tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> Int8WeightStorage:
        from safetensors.torch import load_file

        return cls(load_file(str(path)))


def parameter_bytes(model: nn.Module, tensors: Iterable[torch.Tensor] | None = None) -> int:
    """Bytes of a float model's parameters and buffers, or of a quantized model's packed weights."""
    total = 0
    for t in model.state_dict().values():
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
        elif isinstance(t, tuple):           # packed params of quantized modules: (weight, bias)
            for item in t:
                if isinstance(item, torch.Tensor):
                    total += item.numel() * item.element_size()
    return total
