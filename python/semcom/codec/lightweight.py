"""Lightweight deployment tools: smaller / faster variants of the project's models.

- ``semcom.codec.lightweight_int8``: CPU int8 for the project's own torch models (the learned key
  codec): dynamic quantization of Linear layers, static int8 convolutions, int8 weight storage.
- ``semcom.codec.lightweight_hf``: the Hugging Face backends: int8 dynamic on CPU, 8-bit / NF4 on CUDA,
  LoRA adapters as safetensors.

Both are re-exported here; neither imports a heavy library at import time.
"""

from semcom.codec.lightweight_hf import (  # noqa: F401
    CUDA_QUANTIZATIONS,
    QUANTIZATIONS,
    add_lora,
    apply_post_load,
    check_quantization,
    load_kwargs_for,
    load_lora,
    lora_parameters,
    model_weight_bytes,
    quantize_int8_dynamic,
    read_lora_config,
    save_lora,
)
from semcom.codec.lightweight_int8 import (  # noqa: F401
    Int8WeightStorage,
    count_dynamic_quantized,
    parameter_bytes,
    quantize_conv_static_int8,
    quantize_dynamic_int8,
)
