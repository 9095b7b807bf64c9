"""Hugging Face backends on tiny random models built from configs here (no download, no network).

They check shapes, round trips, byte counts, int8 and LoRA, clear errors and the loopback flowgraph;
not caption or picture quality (the weights are random). Real-weight runs: docs/hf_backends.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
        assert len(data) == (17 + 256 if bits == 8 else 17 + 128)     # the documented 64x64 sizes
    out = codec.decode_tile(data, h, w)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    # Quantization error in latent space is bounded by half a step of each channel's range.
    z = codec.encode_latents(tile)
    step = (z.max(axis=(1, 2)) - z.min(axis=(1, 2))) / ((1 << bits) - 1)
    error = np.abs(codec.chunk_latents(data, h, w) - z).max(axis=(1, 2))
    assert (error <= step / 2 + 2e-3 * step * ((1 << bits) - 1)).all()


def test_latent_ranges_are_per_channel():
    from semcom.codec.key.sd_vae import dequantize_latents, quantize_latents

    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 8, 8)).astype(np.float32) * np.array([0.1, 1.0, 5.0, 20.0], np.float32)[:, None, None]
    codes, lo, hi = quantize_latents(z, 4)
    error = np.abs(dequantize_latents(codes, lo, hi, 4) - z).max(axis=(1, 2))
    step = (z.max(axis=(1, 2)) - z.min(axis=(1, 2))) / 15
    assert (error <= step / 2 * 1.01 + 1e-3).all()     # the narrow channel keeps its own fine step


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
    assert caption and text.startswith(caption + "; ")     # the tiny random BLIP does say something
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
    # ADE20K's id2label has names with trailing spaces ("person "): they still match and count as things.
    assert (choose_key_segments([("sky", sky), ("person ", cat)], labels=["Person"]) == cat).all()
    assert (choose_key_segments([("sky ", sky), ("person ", cat)]) == cat).all()


def test_int8_models_run_and_stay_close(tiny, chelsea, vae, captioner):
    import torch

    from semcom.codec.lightweight import model_weight_bytes, quantize_int8

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
    linear = quantize_int8(torch.nn.Sequential(torch.nn.Linear(8, 8)))[0]
    assert type(linear.weight).__module__.startswith("torchao") and linear.weight.qdata.dtype == torch.int8
    assert type(int8.model.vision_model.encoder.layers[0].mlp.fc1.weight).__module__.startswith("torchao")


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
            load_kwargs_for(quantization, "cpu", "diffusers")
        with pytest.raises(NeedsCuda, match="needs a CUDA GPU"):
            registry.create("generate", "sd-inpaint", model=tiny["sd"], quantization=quantization)
        # transformers models run bitsandbytes on CPU (bitsandbytes >= 0.49 has CPU kernels).
        assert "quantization_config" in load_kwargs_for(quantization, "cpu", "transformers")
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


# --- bugs a user with real checkpoints meets first (issue 17); tests/mutants/ holds a breakage for each ---

def _region_image(h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth synthetic picture (no photo): gradients plus a disc, so neighbouring tiles differ."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack([x / w * 255, y / h * 255, 128 + 100 * np.sin(x / 9.0)], axis=-1)
    image[(y - h / 2) ** 2 + (x - w / 2) ** 2 < (h / 3) ** 2] = (220, 40, 60)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_vae_codes_the_region_in_one_pass_then_splits_it_into_tiles(vae):
    """Each tile's chunk is its crop of ONE latent map of the region (not a latent map of its own
    64-px crop), and the receiver decodes the reassembled map in one pass: a real VAE's GroupNorm and
    attention then see the whole region, with no seams at tile borders."""
    image = _region_image()
    boxes = [(y, x, min(y + 32, 96), min(x + 32, 128)) for y in range(0, 96, 32) for x in range(0, 128, 32)]
    chunks = vae.encode_tiles_at(image, boxes)
    assert [len(c) for c in chunks] == [vae.tile_bytes(y1 - y0, x1 - x0) for y0, x0, y1, x1 in boxes]
    z = vae.encode_latents(image)                       # the region is the whole image: no context to add
    canvas = np.zeros_like(z)
    for data, (y0, x0, y1, x1) in zip(chunks, boxes):
        got = vae.chunk_latents(data, y1 - y0, x1 - x0)
        want = z[:, y0 // 8:y0 // 8 + got.shape[1], x0 // 8:x0 // 8 + got.shape[2]]
        step = (want.max(axis=(1, 2)) - want.min(axis=(1, 2))) / 255
        assert (np.abs(got - want).max(axis=(1, 2)) <= step / 2 + 1e-3).all()
        canvas[:, y0 // 8:y0 // 8 + got.shape[1], x0 // 8:x0 // 8 + got.shape[2]] = got
    decoded = vae.decode_tiles_at(list(zip(chunks, boxes)))
    whole = vae.decode_latents(canvas, 96, 128)
    for pixels, (y0, x0, y1, x1) in zip(decoded, boxes):
        np.testing.assert_array_equal(pixels, whole[y0:y1, x0:x1])
    # A corrupt chunk is reported (None) and the others still decode.
    damaged = vae.decode_tiles_at([(b"\x00" * 3, boxes[0])] + list(zip(chunks[1:], boxes[1:])))
    assert damaged[0] is None and all(p is not None and p.shape == (32, 32, 3) for p in damaged[1:])


def test_vae_matches_diffusers_pixel_and_latent_conventions(vae):
    """Pixels enter the VAE in [-1, 1] and latents travel times scaling_factor, as diffusers' own
    image processor and pipelines do (a VAE fed [0, 1], or decoded without the factor, runs fine
    on random weights and ruins every real picture)."""
    import torch
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image

    image = _region_image(64, 64)
    processor = VaeImageProcessor(vae_scale_factor=8)
    with torch.inference_mode():
        ref = vae.vae.encode(processor.preprocess(Image.fromarray(image))).latent_dist.mean
        ref = ref * vae.vae.config.scaling_factor
    np.testing.assert_allclose(vae.encode_latents(image), ref[0].numpy(), atol=1e-4)
    z = ref[0].numpy()
    with torch.inference_mode():
        pixels = vae.vae.decode(ref / vae.vae.config.scaling_factor).sample
    want = processor.postprocess(pixels, output_type="np")[0] * 255
    assert np.abs(vae.decode_latents(z, 64, 64).astype(float) - want).max() <= 1.0


class _PipeSpy:
    """Records what the inpainter hands to the diffusers pipeline; delegates everything."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.pipe(**kwargs)

    def __getattr__(self, name):
        return getattr(self.pipe, name)


def test_inpainter_mask_marks_the_background_grown_by_the_vae_factor(tiny, inpainter, chelsea, monkeypatch):
    """diffusers repaints where the mask is white: that must be the background (alpha 0), grown 8 px
    into the key region so no latent cell over the border keeps the starting picture's paint."""
    spy = _PipeSpy(inpainter.pipe)
    monkeypatch.setattr(inpainter, "pipe", spy)
    h, w = 128, 128                                          # = max_side_px: the mask is not resized
    alpha = np.zeros((h, w), np.float32)
    alpha[32:96, 32:96] = 1.0
    inpainter.generate("a cat", chelsea[:h, :w], alpha, seed=0)
    mask = np.asarray(spy.calls[0]["mask_image"]) > 127
    assert mask[alpha == 0].all()                            # background: generate
    assert not mask[48:80, 48:80].any()                      # deep inside the key: keep
    assert mask[32:40, 32:96].all() and mask[32:96, 88:96].all()   # the 8-px rim inside the key: generate


def test_small_images_are_inpainted_at_the_models_native_size(tiny, chelsea, monkeypatch):
    gen = registry.create("generate", "sd-inpaint", model=tiny["sd"], steps=1)
    assert gen.max_side_px == 64                  # tiny UNet: sample_size 8 x VAE factor 8 (SD 1.5: 512)
    spy = _PipeSpy(gen.pipe)
    monkeypatch.setattr(gen, "pipe", spy)
    alpha = np.zeros((30, 40), np.float32)
    alpha[10:20, 10:20] = 1
    out = gen.generate("a cat", chelsea[:30, :40], alpha, seed=0)
    assert (spy.calls[0]["height"], spy.calls[0]["width"]) == (48, 64)   # upscaled, aspect kept
    assert spy.calls[0]["image"].size == (64, 48) and out.shape == (30, 40, 3)


@pytest.fixture(scope="module")
def unet_lora(tiny, tmp_path_factory):
    """A UNet adapter with random B (a fresh adapter is the identity), saved with save_lora."""
    import torch
    from diffusers import UNet2DConditionModel

    from semcom.codec.lightweight import add_lora, save_lora

    unet = UNet2DConditionModel.from_pretrained(tiny["sd"], subfolder="unet")
    add_lora(unet, r=2, alpha=4)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return str(save_lora(unet, tmp_path_factory.mktemp("lora") / "unet.safetensors"))


def test_inpainter_lora_changes_the_output_and_survives_int8(tiny, chelsea, inpainter, unet_lora):
    """lora_path takes effect, and int8 + LoRA (adapter merged, then torchao int8) runs and keeps it."""
    alpha = np.zeros((64, 64), np.float32)
    alpha[16:48, 16:48] = 1
    known = chelsea[:64, :64]
    options = dict(model=tiny["sd"], steps=2, max_side_px=128)
    base = inpainter.generate("a cat", known, alpha, seed=1).astype(float)
    lora = registry.create("generate", "sd-inpaint", lora_path=unet_lora, **options).generate(
        "a cat", known, alpha, seed=1).astype(float)
    int8_lora = registry.create("generate", "sd-inpaint", lora_path=unet_lora, quantization="int8", **options)
    assert type(int8_lora.pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q.weight
                ).__module__.startswith("torchao")
    out = int8_lora.generate("a cat", known, alpha, seed=1).astype(float)
    assert np.abs(lora - base).mean() > 3 * np.abs(out - lora).mean()


def test_inpainter_nf4_with_lora_refuses_clearly_on_cpu(tiny, unet_lora):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(NeedsCuda, match="diffusers refuses bitsandbytes without one"):
        registry.create("generate", "sd-inpaint", model=tiny["sd"], quantization="nf4", lora_path=unet_lora)


def test_all_pipeline_components_land_on_the_requested_device(tiny, monkeypatch):
    """A separately loaded UNet (as the bitsandbytes path loads it) must not leave the VAE and text
    encoder behind: simulated without a GPU by asking for the "meta" device, which nothing is on by
    default, with a stand-in for the quantized UNet's load arguments."""
    import torch

    import semcom.codec.lightweight_hf as lightweight_hf
    from semcom.codec.generate.sd_inpaint import load_inpaint_pipeline

    monkeypatch.setattr(lightweight_hf, "load_kwargs_for", lambda *a, **k: {"low_cpu_mem_usage": True})
    pipe = load_inpaint_pipeline(tiny["sd"], "meta")
    devices = {name: {p.device.type for p in m.parameters()} for name, m in pipe.components.items()
               if isinstance(m, torch.nn.Module)}
    assert devices == {"vae": {"meta"}, "text_encoder": {"meta"}, "unet": {"meta"}}


def test_components_agree_on_dtype_bf16_on_cpu(tiny, chelsea):
    """dtype reaches every component (bf16 on CPU stands in for fp16 on CUDA), the inpainter runs in
    it, and check_placement names a component that disagrees."""
    import torch

    from semcom.codec.lightweight import check_placement

    gen = registry.create("generate", "sd-inpaint", model=tiny["sd"], steps=1, dtype="bfloat16")
    for name in ("vae", "unet", "text_encoder"):
        assert {p.dtype for p in getattr(gen.pipe, name).parameters()} == {torch.bfloat16}, name
    alpha = np.zeros((64, 64), np.float32)
    alpha[16:48, 16:48] = 1
    assert gen.generate("a cat", chelsea[:64, :64], alpha, seed=0).shape == (64, 64, 3)
    gen.pipe.vae.float()
    with pytest.raises(RuntimeError, match=r"vae\..* is torch.float32"):
        check_placement(gen.pipe.components, "cpu", torch.bfloat16)


def test_finetune_unet_with_a_bf16_base_trains_an_fp32_adapter(tiny, tmp_path):
    """The CUDA fp16 case on CPU: a bf16 pipeline, float32 LoRA weights and optimiser, finite loss."""
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    from semcom.finetune import train_unet_lora

    Image.fromarray(_region_image(64, 64)).save(tmp_path / "a.png")
    report = train_unet_lora(tiny["sd"], [tmp_path / "a.png"], ["a red disc"], tmp_path / "u.safetensors",
                             steps=2, lr=1e-3, size_px=64, dtype="bfloat16")
    assert np.isfinite([report["loss_first"], report["loss_last"]]).all()
    weights = load_file(str(tmp_path / "u.safetensors"))
    assert weights and {w.dtype for w in weights.values()} == {torch.float32}


def _captioner_lora(tiny, path, seed=1):
    import torch

    from semcom.codec.describe.blip import load_captioner
    from semcom.codec.lightweight import add_lora, save_lora

    _, net = load_captioner(tiny["blip"])
    add_lora(net, r=2, alpha=4, target_modules=("query", "value"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return str(save_lora(net, path))


def _logits(describer, image):
    import torch

    inputs = describer.processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        return describer.model(pixel_values=inputs["pixel_values"].to(describer.model.dtype),
                               input_ids=torch.tensor([[5, 6, 7]])).logits.float()


@pytest.fixture(scope="module")
def blip64(tmp_path_factory):
    """A tiny BLIP 64 wide: bitsandbytes' NF4 path for AVX512-BF16 CPUs needs layers of a whole block."""
    from semcom.testing.hf_tiny import build_tiny_blip

    return {"blip": str(build_tiny_blip(tmp_path_factory.mktemp("tiny-blip64"), hidden_size=64))}


@pytest.mark.parametrize("quantization", ["int8", "nf4"])
def test_captioner_quantization_with_lora_keeps_both(blip64, chelsea, tmp_path, quantization):
    """int8 + LoRA merges the adapter and then quantizes (it crashed in peft); nf4 + LoRA (bitsandbytes
    runs on CPU for transformers) keeps NF4 layers under the adapter (it was silently dropped)."""
    tiny = blip64
    path = _captioner_lora(tiny, tmp_path / "cap.safetensors")
    options = dict(model=tiny["blip"], max_new_tokens=4)
    fp32_lora = _logits(registry.create("describe", "blip", lora_path=path, **options), chelsea)
    fp32 = _logits(registry.create("describe", "blip", **options), chelsea)
    quantized_lora = registry.create("describe", "blip", lora_path=path, quantization=quantization, **options)
    query = quantized_lora.model.text_decoder.bert.encoder.layer[0].attention.self.query
    if quantization == "int8":          # merged (no LoRA layer left, so no int8 LoRA weights), then quantized
        assert not hasattr(query, "lora_A") and type(query.weight).__module__.startswith("torchao")
    else:
        assert type(query.base_layer).__name__ == "Linear4bit" and hasattr(query, "lora_A")
    assert isinstance(quantized_lora.caption(chelsea), str)
    # The adapter's effect survives quantization: what it adds to the quantized model is what it adds
    # to the fp32 one (quantization drift itself is of the same order as the effect on a tiny model).
    quantized = _logits(registry.create("describe", "blip", quantization=quantization, **options), chelsea)
    effect = fp32_lora - fp32
    assert ((_logits(quantized_lora, chelsea) - quantized) - effect).abs().mean() < 0.5 * effect.abs().mean()


def test_captioner_training_predicts_the_first_word_from_the_generation_start(tiny):
    """BLIP generates from the bos token [DEC]; the training sequence must start with it too, so that
    the first word is trained under the same context generation sees (with [CLS] it never is)."""
    import torch

    from semcom.codec.describe.blip import load_captioner
    from semcom.finetune import caption_training_batch

    processor, net = load_captioner(tiny["blip"])
    image = _region_image(32, 32)
    batch = caption_training_batch(processor, net, image, "red grass", "cpu")
    tokens = processor.tokenizer.convert_ids_to_tokens(batch["labels"][0].tolist())
    assert tokens[1:3] == ["red", "grass"]
    with torch.inference_mode():
        teacher = net(**batch).logits[0, 0]
        start = torch.tensor([[net.config.text_config.bos_token_id]])
        generation = net(pixel_values=batch["pixel_values"], input_ids=start).logits[0, 0]
    torch.testing.assert_close(teacher, generation)


def test_gpu_preset_pins_a_hub_revision_for_each_pinned_model():
    """A hub repo can change under the same id: the GPU preset loads fixed commits (Mask2Former has
    no known commit hash and is documented as not pinned)."""
    import re

    config = PipelineConfig.from_file(Path(__file__).resolve().parents[1] / "gr-semcom/presets/hf_gpu.yaml")
    for options in (config.key_options, config.describe_options, config.generate_options):
        assert re.fullmatch(r"[0-9a-f]{40}", options["revision"]), options
