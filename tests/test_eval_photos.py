"""The evaluation photos never trained or tuned a shipped model (../shared/PHOTOS.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from semcom.eval import photos
from semcom.paths import data_path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# skimage names one photo twice: "cat" is chelsea.
ALIASES = {"chelsea": {"chelsea", "cat"}}


def _model_card_training_lists() -> dict[str, list[str]]:
    lists = {}
    for card in ("key_codec.json", "deepjscc.json"):
        meta = json.loads(data_path("weights", card).read_text())
        assert "train_photos" in meta, f"{card} does not say which photos trained the model"
        lists[card] = meta["train_photos"]
    return lists


def _eval_names() -> set[str]:
    names = set()
    for photo in photos.EVAL_PHOTOS:
        names |= ALIASES.get(photo.name, {photo.name})
        names.add(photo.origin)
    return names


def test_at_least_16_evaluation_photos_each_with_provenance_and_licence():
    assert len(photos.EVAL_PHOTOS) >= 16
    assert len(set(photos.EVAL_PHOTO_NAMES)) == len(photos.EVAL_PHOTOS)
    for photo in photos.EVAL_PHOTOS:
        assert photo.source and photo.origin and photo.author and photo.licence, photo


def test_no_evaluation_photo_is_in_a_model_cards_training_list():
    evaluation = _eval_names()
    for card, training in _model_card_training_lists().items():
        assert training, card
        assert not evaluation & set(training), f"{card} trained on evaluation photos {evaluation & set(training)}"


def test_no_evaluation_photo_is_in_a_training_scripts_photo_list():
    sys.path.insert(0, str(SCRIPTS))
    import train_key_codec

    training = set(train_key_codec.TRAIN_COLOUR) | set(train_key_codec.TRAIN_GREY)
    assert not _eval_names() & training
    # pixel-level too: no training photo is one of the skimage evaluation photos under another name
    import skimage.data

    evaluation_pixels = [np.asarray(skimage.data.chelsea()), np.asarray(skimage.data.coffee())]
    for name in training:
        image = train_key_codec.load_photo(name)
        assert not any(image.shape == e.shape and np.array_equal(image, e) for e in evaluation_pixels), name


def test_an_evaluation_photo_in_a_training_list_is_caught(monkeypatch):
    """The check above can fail: a card that trained on chelsea (as skimage's "cat") is refused."""
    original = json.loads
    monkeypatch.setattr(json, "loads", lambda text: {**original(text), "train_photos": ["astronaut", "cat"]})
    with pytest.raises(AssertionError, match="trained on evaluation photos"):
        test_no_evaluation_photo_is_in_a_model_cards_training_list()


def test_resize_keeps_aspect_and_width():
    image = np.zeros((1600, 2560, 3), np.uint8)
    assert photos.resize_to_width(image).shape == (320, 512, 3)
