"""The evaluation photos: photos that no shipped model was trained or tuned on (../shared/PHOTOS.md).

``EVAL_PHOTOS`` names each photo with its provenance and licence. ``scripts/eval_photos.sh`` installs the
Debian packages that carry them and calls ``python -m semcom.eval.photos [--out DIR]``, which resizes
each to 512 px wide (aspect ratio kept, Lanczos) as PNG. ``semcom eval`` reads that folder by default
(``default_eval_photos_dir``: ``~/.cache/gr-semcom/eval-photos``). The bundled photos (gr-semcom/photos) are for tests and the demo; two of
them (astronaut, rocket) trained shipped models. ``tests/test_eval_photos.py`` checks that no evaluation
photo appears in a model card's training list.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EVAL_WIDTH_PX = 512
WALLPAPER_ROOT = Path("/usr/share/wallpapers")
MATPLOTLIB_SAMPLE_DATA = Path("/usr/share/matplotlib/mpl-data/sample_data")
# scikit-learn's two sample photos ship inside its wheel; the wheel is downloaded (not installed) and read.
SKLEARN_WHEEL = "scikit-learn==1.5.2"
SKLEARN_IMAGE_DIR = "sklearn/datasets/images/"


@dataclass(frozen=True)
class EvalPhoto:
    name: str           # file stem in the evaluation folder
    source: str         # where the original comes from
    origin: str         # the file inside that source
    author: str
    licence: str


def _wallpaper(name: str, folder: str, file: str, author: str, licence: str) -> EvalPhoto:
    return EvalPhoto(name, "Debian plasma-workspace-wallpapers 4:5.27.5-2",
                     f"{WALLPAPER_ROOT}/{folder}/contents/images/{file}", author, licence)


# Wallpapers: the largest landscape file of each folder; licence from its metadata.json (package: GPL-2+,
# debian/copyright). Looked at one by one: eleven are photographs; MilkyWay (ruvkr, CC-BY-SA-4.0) is a
# digital rendering (a band of glowing particles on a gradient), so it is not in the set.
EVAL_PHOTOS: tuple[EvalPhoto, ...] = (
    _wallpaper("bythewater", "BytheWater", "2560x1600.jpg", "Maciej Wiklo", "LGPL-3.0"),
    _wallpaper("coldripple", "ColdRipple", "2560x1600.jpg", "Risto Saukonpää", "LGPL-3.0"),
    _wallpaper("darkesthour", "DarkestHour", "2560x1600.jpg", "Risto Saukonpää", "LGPL-3.0"),
    _wallpaper("eveningglow", "EveningGlow", "2560x1600.jpg", "Ian Hex", "LGPL-3.0"),
    _wallpaper("fallenleaf", "FallenLeaf", "2560x1600.jpg", "Martin Klapetek", "LGPL-3.0"),
    _wallpaper("kite", "Kite", "2560x1600.jpg", "Risto Saukonpää", "LGPL-3.0"),
    _wallpaper("onestandsout", "OneStandsOut", "2560x1600.jpg", "Risto Saukonpää", "LGPL-3.0"),
    _wallpaper("path", "Path", "2560x1600.jpg", "Risto Saukonpää", "LGPL-3.0"),
    _wallpaper("volna", "Volna", "5120x2880.jpg", "Nikita Babin", "CC-BY-SA-4.0"),
    _wallpaper("summer_1am", "summer_1am", "2560x1600.jpg", "Risto Saukonpää", "LGPL-3.0"),
    _wallpaper("colorfulcups", "ColorfulCups", "2560x1600.jpg", "Dmitri Popov", "LGPL-3.0"),
    EvalPhoto("china", f"scikit-learn wheel ({SKLEARN_WHEEL})", f"{SKLEARN_IMAGE_DIR}china.jpg",
              "scikit-learn sample data", "CC-BY-4.0"),
    EvalPhoto("flower", f"scikit-learn wheel ({SKLEARN_WHEEL})", f"{SKLEARN_IMAGE_DIR}flower.jpg",
              "scikit-learn sample data", "CC-BY-4.0"),
    EvalPhoto("grace_hopper", "Debian python3-matplotlib", f"{MATPLOTLIB_SAMPLE_DATA}/grace_hopper.jpg",
              "US Navy (matplotlib sample data)", "public domain"),
    EvalPhoto("chelsea", "scikit-image wheel (requirements.txt)", "skimage.data.chelsea()",
              "Stefan van der Walt (scikit-image)", "CC0-1.0"),
    EvalPhoto("coffee", "scikit-image wheel (requirements.txt)", "skimage.data.coffee()",
              "Rachel Michetti (scikit-image)", "CC0-1.0"),
)
EVAL_PHOTO_NAMES = tuple(p.name for p in EVAL_PHOTOS)


def default_eval_photos_dir() -> Path:
    """``$SEMCOM_EVAL_PHOTOS``, else ``$XDG_CACHE_HOME/gr-semcom/eval-photos`` (``~/.cache/...``): one
    place whatever the working directory, where scripts/eval_photos.sh writes."""
    env = os.environ.get("SEMCOM_EVAL_PHOTOS")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "gr-semcom" / "eval-photos"


def _sklearn_images(names: list[str]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, SKLEARN_WHEEL],
                       check=True)
        wheel = next(Path(tmp).glob("scikit_learn-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            return {n: archive.read(f"{SKLEARN_IMAGE_DIR}{n}.jpg") for n in names}


def _original(photo: EvalPhoto, sklearn: dict[str, bytes]) -> np.ndarray:
    from PIL import Image

    if photo.origin.startswith("skimage.data."):
        import skimage.data

        return getattr(skimage.data, photo.origin.split(".")[-1].rstrip("()"))()
    if photo.origin.startswith(SKLEARN_IMAGE_DIR):
        return np.asarray(Image.open(io.BytesIO(sklearn[photo.name])).convert("RGB"))
    path = Path(photo.origin)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: install {photo.source} (bash scripts/eval_photos.sh does)")
    return np.asarray(Image.open(path).convert("RGB"))


def resize_to_width(image: np.ndarray, width: int = EVAL_WIDTH_PX) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    height = max(1, round(h * width / w))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))


def install_eval_photos(out: Path) -> list[Path]:
    """Writes every evaluation photo, 512 px wide, as ``out/NAME.png`` (and a provenance README)."""
    from semcom.codec.imageio import save_png

    out.mkdir(parents=True, exist_ok=True)
    sklearn = _sklearn_images([p.name for p in EVAL_PHOTOS if p.origin.startswith(SKLEARN_IMAGE_DIR)])
    paths = []
    for photo in EVAL_PHOTOS:
        path = out / f"{photo.name}.png"
        save_png(resize_to_width(_original(photo, sklearn)), path)
        paths.append(path)
    lines = ["# Evaluation photos (written by scripts/eval_photos.sh; never train or tune on these)", "",
             "| file | source | original | author | licence |", "|---|---|---|---|---|"]
    lines += [f"| {p.name}.png | {p.source} | {p.origin} | {p.author} | {p.licence} |" for p in EVAL_PHOTOS]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description="Write the evaluation photos, 512 px wide, as PNG.")
    parser.add_argument("--out", type=Path, default=default_eval_photos_dir())
    args = parser.parse_args()
    paths = install_eval_photos(args.out)
    print(f"wrote {len(paths)} evaluation photos to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
