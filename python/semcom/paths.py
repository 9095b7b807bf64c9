"""Find the module's shared data (photos, presets, weights) whether installed or run from a checkout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DATA_DIR_ENV = "SEMCOM_DATA_DIR"
_DATA_DIR_NAME = "gr-semcom"


def _candidates() -> list[Path]:
    here = Path(__file__).resolve()
    found = []
    if os.environ.get(DATA_DIR_ENV):
        found.append(Path(os.environ[DATA_DIR_ENV]))
    found.append(here.parents[2] / _DATA_DIR_NAME)                       # checkout: python/semcom/paths.py
    if len(here.parents) > 4:    # cmake install, any prefix: <prefix>/lib/python3.X/*-packages/semcom/paths.py
        found.append(here.parents[4] / "share" / _DATA_DIR_NAME)
    for prefix in (sys.prefix, "/usr/local", "/usr"):
        found.append(Path(prefix) / "share" / _DATA_DIR_NAME)            # cmake install: share/gr-semcom
    return found


def data_dir() -> Path:
    """The first existing data directory; raises with every place looked at when there is none."""
    candidates = _candidates()
    for path in candidates:
        if (path / "photos").is_dir():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"gr-semcom data directory not found (looked in: {looked}); "
                            f"set {DATA_DIR_ENV} or install the module with cmake")


def data_path(*parts: str) -> Path:
    """Path of a file under the data directory, e.g. data_path('photos', 'chelsea.png')."""
    path = data_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist in the gr-semcom data directory")
    return path


def bundled_photos() -> list[Path]:
    """The sample photos that ship with the module, sorted by name."""
    return sorted(p for p in (data_dir() / "photos").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
