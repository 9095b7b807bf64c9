"""Shared fixtures: the bundled photos and a small deterministic test image."""

from __future__ import annotations

import numpy as np
import pytest

from semcom.codec.imageio import load_image
from semcom.paths import bundled_photos


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return {p.stem: load_image(p) for p in bundled_photos()}


@pytest.fixture(scope="session")
def chelsea(photos) -> np.ndarray:
    return photos["chelsea"]
