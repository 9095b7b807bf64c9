"""Helpers for tests, benchmarks and smoke runs; not used by the codec.

``semcom.testing.hf_tiny`` builds tiny random Hugging Face models from configs (no download), so that
``semcom finetune --tiny``, ``benchmarks/lightweight_hf.py`` and the tests run the real loading,
quantization and LoRA code offline.
"""
