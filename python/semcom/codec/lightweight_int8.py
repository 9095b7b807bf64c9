"""int8 variants of the project's CPU torch models (re-exported by ``semcom.codec.lightweight``).

Three tools, each saying what it covers:

- ``quantize_dynamic_int8(model)``: torchao int8 weights with dynamically quantized int8 activations
  of every ``nn.Linear`` (torchao succeeds the deprecated ``torch.ao.quantization.quantize_dynamic``).
  torchao has no int8 kernels for ``Conv2d``/``ConvTranspose2d`` either, so for an all-convolutional model
  such as the learned key codec it changes nothing (``count_dynamic_quantized`` tells how many it took).
- ``quantize_conv_static_int8(model, calibration)``: torchao PT2E static int8 (the x86 quantizer) of the
  ``Conv2d`` layers: int8 per-channel weights and int8 per-tensor activations with ranges observed by
  ``calibration``, as quantize/dequantize pairs around each convolution in an exported graph, so GDN
  (square roots) stays float. torchao's x86 quantizer leaves ``ConvTranspose2d`` in float. In eager
  mode the int8 numerics are simulated around float kernels (as accurate as int8 deployment, not
  faster); int8 kernels come from lowering the graph with ``torch.compile`` (torchao's
  ``lower_pt2e_quantized_to_x86``), which is not done here.
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


def _children_with_convs(model: nn.Module) -> dict[str, nn.Module]:
    return {name: child for name, child in model.named_children()
            if any(isinstance(m, _CONVS) for m in child.modules())}


def quantize_conv_static_int8(model: nn.Module, calibration: Callable[[nn.Module], None]) -> nn.Module:
    """A copy of ``model`` whose direct children that hold convolutions are torchao PT2E static-int8
    graphs (see the module docstring).

    ``calibration(model)`` must run a few representative forward passes. It runs twice: once on a float
    copy to capture each child's example input (the child is exported with dynamic batch, height and
    width), then on the prepared copy so that observers see the activation ranges.
    """
    from semcom.codec.lightweight_hf import import_torchao_quantization

    import_torchao_quantization()          # quiet import of torchao first
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    q = copy.deepcopy(model).eval()
    parts = _children_with_convs(q)
    examples: dict[str, tuple] = {}
    hooks = [child.register_forward_pre_hook(lambda _m, args, name=name: examples.setdefault(name, args))
             for name, child in parts.items()]
    with torch.inference_mode():
        calibration(q)
    for hook in hooks:
        hook.remove()
    missing = sorted(set(parts) - set(examples))
    if missing:
        raise ValueError(f"calibration never ran {missing}: they cannot be calibrated")
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    for name, child in parts.items():
        example = tuple(a.detach().clone() for a in examples[name])
        dims = tuple({0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}
                     if a.dim() == 4 else None for a in example)
        exported = torch.export.export(child, example, dynamic_shapes=dims).module()
        setattr(q, name, prepare_pt2e(exported, quantizer))
    with torch.no_grad():
        calibration(q)
    for name in parts:
        setattr(q, name, convert_pt2e(getattr(q, name)))
    return q


def count_static_int8_convs(model: nn.Module) -> int:
    """How many convolutions of ``model`` read an int8 (dequantized per-channel) weight."""
    count = 0
    for module in model.modules():
        graph = getattr(module, "graph", None)
        if not isinstance(module, torch.fx.GraphModule) or graph is None:
            continue
        for node in graph.nodes:
            if node.op == "call_function" and "conv" in str(node.target) and len(node.args) > 1 \
                    and "dequantize_per_channel" in str(getattr(node.args[1], "target", "")):
                count += 1
    return count


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
