"""Lightweight deployment tools: smaller / faster variants of the project's models.

- ``semcom.codec.lightweight_int8``: CPU int8 for the project's own torch models (the learned key
  codec): torchao int8 of Linear layers, static int8 convolutions, int8 weight storage.
- ``semcom.codec.lightweight_hf``: the Hugging Face backends: torchao int8 on CPU, bitsandbytes
  8-bit / NF4, LoRA adapters as safetensors (merged before int8).

Both are re-exported here; neither imports a heavy library at import time.
"""

from semcom.codec.lightweight_hf import (  # noqa: F401
    BNB_QUANTIZATIONS,
    CUDA_QUANTIZATIONS,
    QUANTIZATIONS,
    TORCHAO_QUANTIZATIONS,
    add_lora,
    apply_post_load,
    check_placement,
    check_quantization,
    load_kwargs_for,
    load_lora,
    lora_parameters,
    merge_lora,
    model_weight_bytes,
    quantize_int8,
    read_lora_config,
    save_lora,
)
from semcom.codec.lightweight_int8 import (  # noqa: F401
    Int8WeightStorage,
    count_dynamic_quantized,
    count_static_int8_convs,
    parameter_bytes,
    quantize_conv_static_int8,
    quantize_dynamic_int8,
)
