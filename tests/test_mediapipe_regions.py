"""The mediapipe person region splitter on the bundled photos (real bundled models, offline).

Skipped when mediapipe is not installed (pip install --no-deps -r requirements-mediapipe.txt).
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import mediapipe  # noqa: E402,F401  (requirements-mediapipe.txt: installed by the set-up, so no skip)

from semcom.codec import registry  # noqa: E402
from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder  # noqa: E402
from semcom.codec.regions.mediapipe_person import MediapipePersonSplitter  # noqa: E402

# astronaut.png (512x512): the person fills the lower left; the space-shuttle model stands top right.
SUIT = (slice(260, 512), slice(30, 360))       # orange suit, below the neck ring
FACE = (slice(20, 180), slice(160, 290))       # hair and face
SHUTTLE = (slice(0, 250), slice(330, 512))     # the model rocket and the wall: not the person
PERSON_BOX = (slice(10, 512), slice(15, 512))  # loose box around the whole person (and her helmet)


@pytest.fixture(scope="module", params=["landscape", "general"])
def splitter(request):
    s = registry.create("regions", "mediapipe", model=request.param)
    yield s
    s.close()


def test_astronaut_mask_covers_the_person(splitter, photos):
    image = photos["astronaut"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # a person is found: no fallback warning, no protobuf noise
        mask = splitter.split(image)
    assert mask.shape == image.shape[:2] and mask.dtype == bool
    assert 0.35 < mask.mean() < 0.75
    assert mask[SUIT].mean() > 0.9
    assert mask[FACE].mean() > 0.7
    assert mask[380, 150] and mask[130, 225]    # centre of the suit, the face
    assert mask[SHUTTLE].mean() < 0.05
    assert mask[PERSON_BOX].sum() / mask.sum() > 0.95


def test_small_person_beside_a_large_object(splitter, photos):
    """The selfie model alone calls the cup "person" too; the face gate keeps only the astronaut."""
    from PIL import Image

    canvas = np.asarray(Image.fromarray(photos["coffee"]).resize((1024, 682))).copy()
    side, x0 = 256, 500
    canvas[682 - side:, x0:x0 + side] = np.asarray(Image.fromarray(photos["astronaut"]).resize((side, side)))
    mask = splitter.split(canvas)
    inset = np.zeros_like(mask)
    inset[682 - side:, x0:x0 + side] = True
    assert mask[inset].mean() > 0.3
    assert (mask & ~inset).sum() < 0.05 * mask.sum()


@pytest.mark.parametrize("name", ["coffee", "rocket"])
def test_no_person_falls_back_to_saliency_with_a_warning(splitter, photos, name):
    image = photos[name]
    with pytest.warns(UserWarning, match="no person"):
        mask = splitter.split(image)
    assert mask.shape == image.shape[:2] and mask.dtype == bool
    assert np.array_equal(mask, registry.create("regions", "saliency").split(image))


def test_fallback_none_raises(photos):
    s = MediapipePersonSplitter(fallback="none")
    with pytest.raises(ValueError, match="no person"):
        s.split(photos["coffee"])
    assert s.split(photos["astronaut"]).any()   # and finds the person when there is one


@pytest.mark.parametrize("options, match", [
    ({"model": "portrait"}, "model"), ({"threshold": 1.5}, "threshold"), ({"fallback": "empty"}, "fallback"),
    ({"min_face_confidence": 0.0}, "min_face_confidence")])
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        MediapipePersonSplitter(**options)


def test_bad_image(splitter):
    with pytest.raises(ValueError, match="uint8"):
        splitter.split(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        splitter.split(np.zeros((32, 32, 3), np.float32))


def test_tiny_and_odd_images(splitter):
    for shape in [(1, 1, 3), (7, 300, 3), (300, 7, 3), (65, 97, 3)]:
        image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mask = splitter.split(image)
        assert mask.shape == shape[:2] and mask.dtype == bool


def test_encoder_uses_it(photos):
    image = photos["astronaut"]
    config = PipelineConfig(regions="mediapipe", regions_options={"model": "landscape"})
    encoded = SemanticEncoder(config).encode(image)
    assert encoded.key_mask.shape == image.shape[:2]
    assert encoded.key_mask[SUIT].mean() > 0.9 and encoded.key_mask[SHUTTLE].mean() < 0.15
    recon = SemanticDecoder(config).decode(encoded.frame)
    assert recon.image.shape == image.shape and recon.tiles_received == recon.tiles_expected


def test_missing_mediapipe_names_the_pip_command():
    code = ("import sys; sys.modules['mediapipe'] = None\n"
            "from semcom.codec import registry\n"
            "try:\n    registry.create('regions', 'mediapipe')\n"
            "except ImportError as e:\n    print('IMPORTERROR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "IMPORTERROR" in out and "pip install --no-deps -r requirements-mediapipe.txt" in out


def test_numpy_and_cv2_are_still_ours():
    """mediapipe went in with --no-deps: Debian's numpy and the headless cv2 4.10 are still the ones imported."""
    import cv2

    assert np.__version__.startswith("1.") and cv2.__version__.startswith("4.10")
    from importlib.metadata import PackageNotFoundError, distribution

    for absent in ("opencv-contrib-python", "jax", "jaxlib"):
        with pytest.raises(PackageNotFoundError):
            distribution(absent)
