"""Built-in codec backends: regions, key tiles, describer, text codec, renderer, feathering."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from PIL import Image

from semcom.codec import registry
from semcom.codec.describe import vocabulary as vocab
from semcom.codec.imageops import feather
from semcom.codec.stages import Describer, Generator, KeyTileCodec, RegionSplitter, TextCodec
from semcom.codec.text.zlib_dict import PRESET
from semcom.constants import DEFAULT_KEY_FRACTION, MAX_TEXT_CHARS
from semcom.paths import bundled_photos

PHOTOS = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in bundled_photos()}


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def saliency_masks():
    splitter = registry.create("regions", "saliency")
    return {name: splitter.split(image) for name, image in PHOTOS.items()}


# --- registry -------------------------------------------------------------------------------------

def test_registry_lists_and_builds_every_backend():
    expected = {"regions": {"saliency", "mask", "box"}, "key": {"webp", "jpeg"},
                "describe": {"colour_layout"}, "text": {"zlib"}, "generate": {"render"}}
    for stage, names in expected.items():
        assert names <= set(registry.available(stage)), stage
    protocols = {"key": KeyTileCodec, "describe": Describer, "text": TextCodec, "generate": Generator}
    for stage, protocol in protocols.items():
        for name in expected[stage]:
            assert isinstance(registry.create(stage, name), protocol)
    assert isinstance(registry.create("regions", "saliency"), RegionSplitter)
    assert isinstance(registry.create("regions", "box", box=(0, 0, 4, 4)), RegionSplitter)


def test_registry_unknown_name_lists_known_ones():
    with pytest.raises(KeyError, match="webp"):
        registry.create("key", "nope")


def test_codec_ids_map_back_to_backends():
    # Wire ids are frozen: a receiver of an older build must read the same codec from the same id.
    assert registry.codec_names("key") == {1: "webp", 2: "jpeg", 3: "learned", 4: "sd-vae", 5: "avif"}
    assert registry.codec_names("text") == {1: "zlib", 2: "zlib-v2"}
    for stage in ("key", "text"):
        for codec_id, name in registry.codec_names(stage).items():
            assert registry.name_for_codec_id(stage, codec_id) == name
            # the class attribute: model-backed codecs (learned, sd-vae) need weights to construct
            assert registry.factory(stage, name).codec_id == codec_id
        with pytest.raises(ValueError, match="unknown"):
            registry.name_for_codec_id(stage, 255)


def test_a_taken_codec_id_cannot_be_registered_again():
    class Clash:
        codec_id = 1

    with pytest.raises(ValueError, match="already 'webp'"):
        registry.register("key", "clash")(Clash)
    assert "clash" not in registry.available("key")


# --- regions --------------------------------------------------------------------------------------

def test_saliency_mask_shape_and_fraction(saliency_masks):
    """The saliency blob covers key_fraction of the image; GrabCut then moves it onto the object,
    within the splitter's share bounds."""
    from semcom.codec.regions.saliency import MAX_KEY_SHARE, MIN_KEY_SHARE

    assert set(saliency_masks) == {"astronaut", "chelsea", "coffee", "rocket"}
    for name, mask in saliency_masks.items():
        assert mask.dtype == bool and mask.shape == PHOTOS[name].shape[:2], name
        assert MIN_KEY_SHARE <= mask.mean() <= MAX_KEY_SHARE, (name, mask.mean())
        blob = registry.create("regions", "saliency", refine=False).split(PHOTOS[name])
        assert abs(blob.mean() - DEFAULT_KEY_FRACTION) < 0.05, (name, blob.mean())


def test_saliency_finds_the_centred_object(saliency_masks):
    # The subject of each bundled photo covers its centre pixel (the cup and rocket are centred; the
    # cat's face and the astronaut's suit are too): the key region must cover most of a central patch.
    for name, mask in saliency_masks.items():
        h, w = mask.shape
        if name == "astronaut":
            continue     # the face sits left of centre; checked by eye on overlays instead
        assert mask[h // 2 - 10:h // 2 + 10, w // 2 - 10:w // 2 + 10].mean() > 0.5, name


def test_saliency_respects_key_fraction_and_is_deterministic():
    image = PHOTOS["chelsea"]
    small = registry.create("regions", "saliency", key_fraction=0.1, refine=False).split(image)
    large = registry.create("regions", "saliency", key_fraction=0.4, refine=False).split(image)
    assert abs(small.mean() - 0.1) < 0.05 and abs(large.mean() - 0.4) < 0.05
    refined = registry.create("regions", "saliency", key_fraction=0.1).split(image)
    assert np.array_equal(refined, registry.create("regions", "saliency", key_fraction=0.1).split(image))


def test_saliency_flat_image_falls_back_to_centred_ellipse():
    mask = registry.create("regions", "saliency").split(np.full((120, 90, 3), 128, np.uint8))
    assert mask.any() and mask[60, 45] and not mask[0, 0]
    assert abs(mask.mean() - DEFAULT_KEY_FRACTION) < 0.03


def test_saliency_rejects_bad_fraction():
    with pytest.raises(ValueError):
        registry.create("regions", "saliency", key_fraction=1.5)


def test_mask_splitter_from_array_and_file(tmp_path):
    image = np.zeros((20, 30, 3), np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:15] = 200
    assert np.array_equal(registry.create("regions", "mask", mask=mask).split(image), mask > 0)
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert np.array_equal(registry.create("regions", "mask", mask=str(tmp_path / "m.png")).split(image), mask > 0)


def test_mask_splitter_errors():
    with pytest.raises(ValueError, match="key mask is empty"):
        registry.create("regions", "mask", mask=np.zeros((4, 4)))
    splitter = registry.create("regions", "mask", mask=np.ones((20, 30)))
    with pytest.raises(ValueError, match=r"30x20.*31x20"):
        splitter.split(np.zeros((20, 31, 3), np.uint8))


def test_box_splitter_clips_and_rejects_outside():
    image = np.zeros((50, 40, 3), np.uint8)
    mask = registry.create("regions", "box", box=(30, -5, 20, 15)).split(image)
    assert mask.sum() == 10 * 10 and mask[0:10, 30:40].all()
    with pytest.raises(ValueError, match="outside"):
        registry.create("regions", "box", box=(40, 0, 5, 5)).split(image)


# --- key tile codecs ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 64), (37, 50)])
def test_webp_tile_round_trip_quality(shape):
    tile = PHOTOS["chelsea"][100:100 + shape[0], 150:150 + shape[1]]
    codec = registry.create("key", "webp", quality=90)
    data = codec.encode_tile(tile)
    decoded = codec.decode_tile(data, *shape)
    assert decoded.shape == (*shape, 3) and decoded.dtype == np.uint8
    assert psnr_db(tile, decoded) > 30
    assert len(data) < tile.nbytes / 5


def test_jpeg_tile_round_trip_quality():
    tile = PHOTOS["coffee"][100:164, 200:264]
    codec = registry.create("key", "jpeg", quality=90)
    assert psnr_db(tile, codec.decode_tile(codec.encode_tile(tile), 64, 64)) > 30


@pytest.mark.parametrize("name", ["webp", "jpeg", "avif"])
def test_threaded_tile_coding_gives_the_sequential_bytes_in_order(name, monkeypatch):
    from semcom.codec.key import classical

    if name == "avif" and "avif" not in registry.available("key"):
        pytest.skip("this Pillow writes no AVIF")
    image = PHOTOS["chelsea"]
    tiles = [np.ascontiguousarray(image[y:y + 64, x:x + 48]) for y in (0, 64, 128) for x in (0, 48, 96, 144)]
    codec = registry.create("key", name)
    monkeypatch.setenv("SEMCOM_TILE_THREADS", "1")
    sequential = codec.encode_tiles(tiles)
    monkeypatch.setenv("SEMCOM_TILE_THREADS", "3")
    assert classical.tile_threads() == 3
    assert codec.encode_tiles(tiles) == sequential == [codec.encode_tile(t) for t in tiles]
    assert len(set(sequential)) == len(tiles)            # distinct tiles: a reordering would show
    monkeypatch.setenv("SEMCOM_TILE_THREADS", "many")
    with pytest.raises(ValueError, match="SEMCOM_TILE_THREADS"):
        codec.encode_tiles(tiles)


@pytest.mark.parametrize("name", ["webp", "jpeg"])
def test_key_codec_rejects_corrupt_and_mis_sized(name):
    codec = registry.create("key", name)
    data = codec.encode_tile(PHOTOS["rocket"][:64, :64])
    with pytest.raises(ValueError, match="expected 32x64"):
        codec.decode_tile(data, 64, 32)
    rng = np.random.default_rng(0)
    for bad in (data[: len(data) // 2], data[:8], b"", rng.bytes(300), b"RIFF" + rng.bytes(100)):
        with pytest.raises(ValueError):
            codec.decode_tile(bad, 64, 64)


# --- describe + text ------------------------------------------------------------------------------

def test_description_compresses_small_and_round_trips(saliency_masks):
    describer, codec = registry.create("describe", "colour_layout"), registry.create("text", "zlib")
    for name, image in PHOTOS.items():
        text = describer.describe(image, saliency_masks[name])
        assert "texture: " in text and "top left: " in text, text
        data = codec.compress(text)
        assert len(data) <= 56, (name, len(data), text)     # measured 41..47 bytes
        assert codec.decompress(data) == text


def test_describer_ignores_key_pixels_and_fills_key_cells():
    image = np.zeros((90, 90, 3), np.uint8)
    image[:] = vocab.COLOURS["sky blue"]
    image[30:60, 30:60] = (255, 0, 0)                  # the key object fills the centre cell
    key = np.zeros((90, 90), bool)
    key[30:60, 30:60] = True
    text = registry.create("describe", "colour_layout").describe(image, key)
    assert "centre: sky blue" in text and "red" not in text
    with_subject = registry.create("describe", "colour_layout", subject="a photo of a ball").describe(image, key)
    assert with_subject == "a photo of a ball; " + text


def test_text_codec_rejects_garbage_and_bombs():
    codec = registry.create("text", "zlib")
    rng = np.random.default_rng(1)
    for bad in (rng.bytes(40), b"\xff" * 10, codec.compress("top: navy, texture: smooth")[:-3],
                codec.compress("top: navy") + b"junk"):
        with pytest.raises(ValueError):
            codec.decompress(bad)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = packer.compress(b"a" * 10_000_000) + packer.flush()
    assert len(bomb) < 20_000
    with pytest.raises(ValueError):
        codec.decompress(bomb[:1000])          # expands far past MAX_TEXT_CHARS within 1000 bytes
    with pytest.raises(ValueError):
        codec.compress("x" * (MAX_TEXT_CHARS + 1))


def test_preset_dictionary_is_frozen():
    # The receiver must inflate with the very same dictionary: changing the vocabulary changes the
    # wire format, so it needs a new text codec_id (then update this CRC).
    assert zlib.crc32(PRESET) == 0xAAA074AC


# --- render + feather -----------------------------------------------------------------------------

def test_render_shape_dtype_determinism_and_exact_known_pixels():
    image = PHOTOS["coffee"]
    alpha = np.zeros(image.shape[:2], np.float32)
    alpha[50:150, 60:200] = 1.0
    alpha[150:160, 60:200] = 0.5
    renderer = registry.create("generate", "render")
    text = "top: sienna, centre: dark brown, texture: grainy"
    out = renderer.generate(text, image, alpha, seed=3)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[50:150, 60:200], image[50:150, 60:200])
    assert np.array_equal(out, renderer.generate(text, image, alpha, seed=3))
    assert not np.array_equal(out, renderer.generate(text, image, alpha, seed=4))


def test_render_reproduces_described_cell_colours():
    names = ["sky blue", "steel blue", "light gray", "forest green", "olive drab", "tan",
             "dark brown", "sienna", "wheat"]
    image = np.zeros((150, 180, 3), np.uint8)
    for i, name in enumerate(names):
        image[50 * (i // 3):50 * (i // 3 + 1), 60 * (i % 3):60 * (i % 3 + 1)] = vocab.COLOURS[name]
    text = registry.create("describe", "colour_layout").describe(image, np.zeros((150, 180), bool))
    assert text.startswith("top left: sky blue, top: steel blue, ") and text.endswith("texture: smooth"), text
    out = registry.create("generate", "render").generate(text, image, np.zeros((150, 180), np.float32))
    for i, name in enumerate(names):
        r, c = i // 3, i % 3
        centre = out[50 * r + 12:50 * r + 38, 60 * c + 15:60 * c + 45].reshape(-1, 3).mean(axis=0)
        assert np.abs(centre - vocab.COLOURS[name]).max() < 25, (name, centre)


@pytest.mark.parametrize("text", ["", "garbled \x00\xff text", "top left: no such colour", "r99c99: navy",
                                  "::,,;;", "a tabby cat; texture: rough"])
def test_render_garbled_text_gives_neutral_background(text):
    out = registry.create("generate", "render").generate(text, np.zeros((40, 60, 3), np.uint8),
                                                         np.zeros((40, 60), np.float32))
    assert out.shape == (40, 60, 3)
    assert np.abs(out.reshape(-1, 3).mean(axis=0) - vocab.NEUTRAL_RGB).max() < 3


def test_render_uses_grid_text_with_unknown_words():
    out = registry.create("generate", "render").generate(
        "a photo of a tabby cat; r0c0: navy, r0c1: navy, r1c0: navy, r1c1: navy, sparkly: yes",
        np.zeros((30, 30, 3), np.uint8), np.zeros((30, 30), np.float32))
    assert np.abs(out.reshape(-1, 3).mean(axis=0) - vocab.COLOURS["navy"]).max() < 4


def test_feather_is_one_inside_zero_outside_and_smooth():
    mask = np.zeros((60, 60), bool)
    mask[10:50, 10:50] = True
    alpha = feather(mask, radius_px=6)
    assert alpha.dtype == np.float32 and alpha.shape == mask.shape
    assert np.all(alpha[~mask] == 0) and np.all(alpha[20:40, 20:40] == 1)
    row = alpha[30, 10:20]
    assert np.all(np.diff(row) >= 0) and 0 < row[0] < 0.2
    assert np.array_equal(feather(mask, radius_px=0), mask.astype(np.float32))
    assert np.all(feather(np.ones((5, 5), bool)) == 1)


def test_other_grid_sizes_round_trip_through_the_renderer():
    image = np.zeros((80, 80, 3), np.uint8)
    image[:, :40] = vocab.COLOURS["navy"]
    image[:, 40:] = vocab.COLOURS["wheat"]
    text = registry.create("describe", "colour_layout", grid=2).describe(image, np.zeros((80, 80), bool))
    assert text == "r0c0: navy, r0c1: wheat, r1c0: navy, r1c1: wheat, texture: smooth"
    out = registry.create("generate", "render").generate(text, image, np.zeros((80, 80), np.float32))
    assert np.abs(out[30:50, 5:15].reshape(-1, 3).mean(axis=0) - vocab.COLOURS["navy"]).max() < 10
