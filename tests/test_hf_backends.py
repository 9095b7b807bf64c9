"""Hugging Face backends on tiny random models built from configs here (no download, no network).

They check shapes, round trips, byte counts, int8 and LoRA, clear errors and the loopback flowgraph;
not caption or picture quality (the weights are random). Real-weight runs: docs/hf_backends.md.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import diffusers  # noqa: E402,F401  (requirements-hf.txt: installed by the set-up, so no skip)
import peft  # noqa: E402,F401
import transformers  # noqa: E402,F401

from semcom.codec import registry  # noqa: E402
from semcom.codec.hf import ModelNotAvailable, NeedsCuda  # noqa: E402
from semcom.codec.key.sd_vae import latent_payload_bytes, pack_bits, unpack_bits  # noqa: E402
from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from semcom.testing.hf_tiny import build_tiny_models

    return {k: str(v) for k, v in build_tiny_models(tmp_path_factory.mktemp("tiny-hf")).items()}


@pytest.fixture(scope="module")
def vae(tiny):
    return registry.create("key", "sd-vae", model=tiny["sd"], compress=False)


@pytest.fixture(scope="module")
def captioner(tiny):
    return registry.create("describe", "blip", model=tiny["blip"], max_new_tokens=6)


@pytest.fixture(scope="module")
def inpainter(tiny):
    return registry.create("generate", "sd-inpaint", model=tiny["sd"], steps=2, max_side_px=128)


def test_hf_backends_are_registered_without_importing_transformers():
    code = ("import sys; from semcom.codec import registry; registry.available('key'); "
            "heavy = [m for m in ('transformers', 'diffusers', 'torch', 'peft') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "assert {'sd-vae'} <= set(registry.available('key')); assert 'blip' in registry.available('describe'); "
            "assert 'sd-inpaint' in registry.available('generate'); assert 'hf' in registry.available('regions')")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("bits", [1, 3, 4, 8])
def test_bit_packing_round_trip(bits):
    values = np.random.default_rng(bits).integers(0, 1 << bits, 257).astype(np.uint8)
    data = pack_bits(values, bits)
    assert len(data) == -(-257 * bits // 8)
    np.testing.assert_array_equal(unpack_bits(data, bits, 257), values)
    with pytest.raises(ValueError):
        unpack_bits(data + b"x", bits, 257)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("size", [(64, 64), (40, 23), (16, 16)])
def test_vae_tile_bytes_match_formula_and_round_trip(tiny, vae, chelsea, bits, size):
    codec = vae if bits == 8 else registry.create("key", "sd-vae", model=tiny["sd"], bits=bits, compress=False)
    h, w = size
    tile = np.ascontiguousarray(chelsea[100:100 + h, 150:150 + w])
    data = codec.encode_tile(tile)
    assert codec.codec_id == 4
    assert len(data) == latent_payload_bytes(4, h, w, 8, bits) == codec.tile_bytes(h, w)
    if size == (64, 64):
        assert len(data) == (5 + 256 if bits == 8 else 5 + 128)     # the documented 64x64 sizes
    out = codec.decode_tile(data, h, w)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    # Quantization error in latent space is bounded by half a step of the tile's range.
    z = codec.encode_latents(tile)
    step = (z.max() - z.min()) / ((1 << bits) - 1)
    from semcom.codec.key.sd_vae import dequantize_latents, quantize_latents

    codes, lo, hi = quantize_latents(z, bits)
    assert np.abs(dequantize_latents(codes, lo, hi, bits) - z).max() <= step / 2 + 2e-3 * (hi - lo)


def test_vae_zlib_never_larger_and_rejects_corruption(tiny, chelsea, vae):
    codec = registry.create("key", "sd-vae", model=tiny["sd"])      # compress=True
    tile = np.ascontiguousarray(chelsea[:64, :64])
    data = codec.encode_tile(tile)
    assert len(data) <= codec.tile_bytes(64, 64)
    np.testing.assert_array_equal(codec.decode_tile(data, 64, 64), vae.decode_tile(vae.encode_tile(tile), 64, 64))
    for bad in (data[:3], data[:-1], b"\x09" + data[1:], data[:1] + b"\xff\x7f" + data[3:]):
        with pytest.raises(ValueError):
            codec.decode_tile(bad, 64, 64)
    with pytest.raises(ValueError):
        codec.decode_tile(data, 128, 64)          # shape mismatch -> payload length mismatch


def test_captioner_puts_caption_before_layout(captioner, chelsea):
    from semcom.codec.describe.blip import caption_of, clean_caption
    from semcom.codec.generate.render import parse_layout

    key = np.zeros(chelsea.shape[:2], bool)
    key[80:220, 120:330] = True
    text = captioner.describe(chelsea, key)
    caption = caption_of(text)
    assert caption == captioner.caption(__import__("semcom.codec.describe.blip", fromlist=["x"])
                                        .blank_key_region(chelsea, key, "grey"))
    assert all(ch not in caption for ch in ",:;")
    assert "top left:" in text and "texture:" in text
    colours, texture = parse_layout(text)          # the built-in renderer still reads the layout
    assert colours.shape == (3, 3, 3)
    assert clean_caption("a cat, on: a; mat") == "a cat on a mat"


def test_inpainter_keeps_key_pixels_and_size(inpainter, chelsea):
    h, w = 75, 101                                  # not multiples of 8
    known = chelsea[:h, :w]
    alpha = np.zeros((h, w), np.float32)
    alpha[20:50, 30:70] = 1.0
    alpha[50:55, 30:70] = 0.5
    out = inpainter.generate("a cat; top left: brown, texture: smooth", known, alpha, seed=3)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[20:50, 30:70], known[20:50, 30:70])
    again = inpainter.generate("a cat; top left: brown, texture: smooth", known, alpha, seed=3)
    np.testing.assert_array_equal(out, again)       # seeded
    assert inpainter.prompt_for("top left: brown") == "a photo" and inpainter.prompt_for("a dog; x: y") == "a dog"


def test_segmentation_splitter(tiny, chelsea):
    from semcom.codec.regions.hf_segmentation import choose_key_segments

    splitter = registry.create("regions", "hf", model=tiny["mask2former"], subtask="semantic", threshold=0.0,
                               min_area_share=0.0)
    segments = splitter.segments(chelsea)
    assert segments and all(m.shape == chelsea.shape[:2] for _, m in segments)
    key = splitter.split(chelsea)
    assert key.shape == chelsea.shape[:2] and key.dtype == bool and key.any()
    # Choice logic on hand-made segments: a centred cat beats a large corner sky; labels select exactly.
    h, w = 60, 80
    sky = np.zeros((h, w), bool); sky[:30] = True
    cat = np.zeros((h, w), bool); cat[25:45, 30:50] = True
    small_cat = np.zeros((h, w), bool); small_cat[50:58, 2:10] = True
    assert (choose_key_segments([("sky", sky), ("cat", cat)]) == cat).all()
    assert (choose_key_segments([("sky", sky), ("cat", cat)], labels=["SKY"]) == sky).all()
    assert choose_key_segments([("sky", sky)], labels=["person"]) is None
    assert (choose_key_segments([("cat", cat), ("cat", small_cat)]) == cat).all()     # too small to join


def test_int8_models_run_and_stay_close(tiny, chelsea, vae, captioner):
    from semcom.codec.lightweight import quantize_int8_dynamic, model_weight_bytes

    import torch

    int8 = registry.create("describe", "blip", model=tiny["blip"], max_new_tokens=6, quantization="int8")
    assert isinstance(int8.caption(chelsea), str)
    inputs = captioner.processor(images=chelsea, return_tensors="pt")
    with torch.inference_mode():
        ref = captioner.model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
        q = int8.model.vision_model(pixel_values=inputs["pixel_values"]).last_hidden_state
    assert float((q - ref).abs().mean()) < 0.1 * float(ref.abs().mean())
    assert model_weight_bytes(int8.model) < model_weight_bytes(captioner.model)
    vae8 = registry.create("key", "sd-vae", model=tiny["sd"], compress=False, quantization="int8")
    tile = np.ascontiguousarray(chelsea[:64, :64])
    a = vae.decode_tile(vae.encode_tile(tile), 64, 64).astype(float)
    b = vae8.decode_tile(vae8.encode_tile(tile), 64, 64).astype(float)
    assert np.abs(a - b).mean() < 8.0
    unet8 = quantize_int8_dynamic(torch.nn.Sequential(torch.nn.Linear(8, 8)))
    assert "Quantized" in type(unet8[0]).__module__ + type(unet8[0]).__name__ or "quantized" in type(unet8[0]).__module__


def test_inpainter_int8_runs(tiny, chelsea, inpainter):
    int8 = registry.create("generate", "sd-inpaint", model=tiny["sd"], steps=2, max_side_px=128, quantization="int8")
    alpha = np.zeros((64, 64), np.float32)
    alpha[16:48, 16:48] = 1
    ref = inpainter.generate("a cat", chelsea[:64, :64], alpha, seed=1).astype(float)
    out = int8.generate("a cat", chelsea[:64, :64], alpha, seed=1).astype(float)
    assert np.abs(out - ref).mean() < 10.0


def test_lora_save_reload_identical(tiny, chelsea, tmp_path):
    import torch

    from semcom.codec.describe.blip import load_captioner
    from semcom.codec.lightweight import add_lora, load_lora, save_lora

    processor, net = load_captioner(tiny["blip"])
    add_lora(net, r=2, alpha=4, target_modules=("query", "value"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)              # a trained-looking adapter (fresh B = 0 is the identity)
    path = save_lora(net, tmp_path / "a.safetensors")
    inputs = processor(images=chelsea, return_tensors="pt")
    _, fresh = load_captioner(tiny["blip"])
    load_lora(fresh, path)
    with torch.inference_mode():
        ids = torch.tensor([[5, 6, 7]])
        a = net(pixel_values=inputs["pixel_values"], input_ids=ids).logits
        b = fresh(pixel_values=inputs["pixel_values"], input_ids=ids).logits
        _, base = load_captioner(tiny["blip"])
        c = base(pixel_values=inputs["pixel_values"], input_ids=ids).logits
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    with pytest.raises(FileNotFoundError):
        load_lora(base, tmp_path / "missing.safetensors")


def test_finetune_cli_unet_then_lora_path(tiny, chelsea, tmp_path):
    from semcom.cli import main

    out = tmp_path / "unet.safetensors"
    assert main(["finetune", "--tiny", str(os.path.dirname(tiny["sd"])), "--target", "unet", "--steps", "2",
                 "--out", str(out)]) == 0
    assert out.is_file()
    alpha = np.zeros((64, 64), np.float32)
    alpha[16:48, 16:48] = 1
    gens = [registry.create("generate", "sd-inpaint", model=tiny["sd"], steps=2, max_side_px=64, lora_path=str(out))
            for _ in range(2)]
    a, b = (g.generate("a cat", chelsea[:64, :64], alpha, seed=2) for g in gens)
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_finetune_cli_captioner(tiny, tmp_path):
    from semcom.cli import main

    out = tmp_path / "cap.safetensors"
    assert main(["finetune", "--tiny", str(os.path.dirname(tiny["blip"])), "--steps", "2", "--out", str(out)]) == 0
    d = registry.create("describe", "blip", model=tiny["blip"], max_new_tokens=4, lora_path=str(out))
    assert isinstance(d.caption(np.zeros((32, 32, 3), np.uint8)), str)


def test_missing_model_id_is_model_not_available(tmp_path):
    code = ("from semcom.codec import registry\n"
            "from semcom.codec.hf import ModelNotAvailable\n"
            "for stage, name, model in [('describe', 'blip', 'nobody/no-such-captioner'),\n"
            "                           ('key', 'sd-vae', 'nobody/no-such-vae'),\n"
            "                           ('generate', 'sd-inpaint', 'nobody/no-such-inpainter'),\n"
            "                           ('regions', 'hf', 'nobody/no-such-segmenter')]:\n"
            "    try:\n"
            "        registry.create(stage, name, model=model)\n"
            "    except ModelNotAvailable as exc:\n"
            "        msg = str(exc)\n"
            "        assert isinstance(exc, FileNotFoundError)\n"
            "        assert model in msg and 'huggingface-cli download ' + model in msg, msg\n"
            "        assert exc.cache_dir in msg and 'HF_HUB_OFFLINE' in msg, msg\n"
            "    else:\n"
            "        raise AssertionError(model)\n"
            "print('ok')\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_missing_local_path_is_model_not_available(tmp_path):
    with pytest.raises(ModelNotAvailable, match="no-such-dir"):
        registry.create("key", "sd-vae", model=str(tmp_path / "no-such-dir"))


def test_cuda_only_options_on_cpu_say_so(tiny):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    from semcom.codec.lightweight import load_kwargs_for

    for quantization in ("8bit", "nf4"):
        with pytest.raises(NeedsCuda, match="needs a CUDA GPU"):
            load_kwargs_for(quantization, "cpu")
        with pytest.raises(NeedsCuda, match="needs a CUDA GPU"):
            registry.create("describe", "blip", model=tiny["blip"], quantization=quantization)
    with pytest.raises(NeedsCuda, match="CUDA"):
        registry.create("generate", "sd-inpaint", model=tiny["sd"], device="cuda")
    with pytest.raises(ValueError, match="quantization"):
        load_kwargs_for("int4", "cpu")


def _hf_config(tiny) -> PipelineConfig:
    return PipelineConfig(regions="saliency", key="sd-vae", key_options={"model": tiny["sd"]},
                          describe="blip", describe_options={"model": tiny["blip"], "max_new_tokens": 6},
                          generate="sd-inpaint", generate_options={"model": tiny["sd"], "steps": 2,
                                                                   "max_side_px": 128})


def test_hf_pipeline_codec_round_trip(tiny, chelsea):
    config = _hf_config(tiny)
    encoded = SemanticEncoder(config).encode(chelsea, image_id=7)
    assert encoded.frame.key_codec_id == 4 and encoded.frame.key_tiles
    recon = SemanticDecoder(config).decode(encoded.frame)
    assert recon.image.shape == chelsea.shape and recon.tiles_received == recon.tiles_expected


@pytest.mark.slow
def test_hf_pipeline_through_loopback_flowgraph(tiny, chelsea):
    from semcom.radio.loopback import LinkConfig, run_loopback

    result = run_loopback(chelsea, LinkConfig(snr_db=20.0), _hf_config(tiny), timeout_s=120)
    assert result.encoded is not None and result.encoded.frame.key_codec_id == 4
    assert result.reconstruction is not None
    recon = result.reconstruction
    assert recon.image.shape == chelsea.shape
    assert recon.tiles_received == recon.tiles_expected and not recon.text_lost
    assert recon.description == result.encoded.description
