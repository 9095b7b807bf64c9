"""SD inpainting starts from the super-resolved sketch (image-to-image), on tiny random models (no download)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import diffusers  # noqa: F401  (requirements-hf.txt: installed by the set-up, so no skip)

from semcom.codec import registry, sketch as sketch_codec
from semcom.codec.generate.esrgan import SketchSuperResolver
from semcom.codec.imageio import load_image
from semcom.paths import data_path

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(scope="module")
def inpainter(tmp_path_factory):
    from semcom.testing.hf_tiny import build_tiny_models

    tiny = build_tiny_models(tmp_path_factory.mktemp("tiny-hf"))
    return registry.create("generate", "sd-inpaint", model=str(tiny["sd"]), steps=2, max_side_px=128)


class Recorder:
    """Stands in front of the diffusers pipeline and keeps the arguments of each call."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.pipe(**kwargs)


def test_inpainting_starts_from_the_super_resolved_sketch(inpainter, monkeypatch):
    image = load_image(data_path("photos", "chelsea.png"))[60:156, 100:260].copy()     # 160x96
    alpha = np.zeros(image.shape[:2], np.float32)
    alpha[24:72, 48:112] = 1.0
    thumb = sketch_codec.decode_sketch(sketch_codec.encode_sketch(image, 300), image.shape[1], image.shape[0])
    recorder = Recorder(inpainter.pipe)
    monkeypatch.setattr(inpainter, "pipe", recorder)
    text = "a cat; top left: brown, texture: grainy"

    out = inpainter.generate(text, image, alpha, seed=5, sketch=thumb)
    assert out.shape == image.shape and np.array_equal(out[alpha == 1], image[alpha == 1])
    call = recorder.calls[-1]
    assert call["strength"] == inpainter.sketch_strength == 0.7 and call["prompt"] == "a cat"
    start = SketchSuperResolver().generate(text, image, alpha, seed=5, sketch=thumb)
    expected = cv2.resize(start, call["image"].size, interpolation=cv2.INTER_AREA if call["image"].size[0] < 160
                          else cv2.INTER_CUBIC)
    assert np.array_equal(np.asarray(call["image"]), expected), "the start picture is the super-resolved sketch"

    inpainter.generate(text, image, alpha, seed=5)
    assert recorder.calls[-1]["strength"] == inpainter.strength == 1.0, "no sketch: the layout start at strength"
    with pytest.raises(ValueError, match="sketch_strength"):
        registry.create("generate", "sd-inpaint", model="unused", sketch_strength=0.0)
