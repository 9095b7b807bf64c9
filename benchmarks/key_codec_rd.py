#!/usr/bin/env python3
"""Rate-distortion of the learned key codec vs JPEG and WebP at equal bytes, on held-out photos.

    python benchmarks/key_codec_rd.py [--weights PATH] [--json OUT]

1. Key regions (what a receiver shows): held-out chelsea and coffee through the default pipeline
   (saliency key region, 64 px tiles) with the learned codec at every quality level. At the same frame
   bytes (every PDU counted) the same pipeline with JPEG tiles and with WebP tiles gets its largest
   quality 1..100 that fits, and a whole-image JPEG gets its largest quality that fits. Prints the
   key-region PSNR and SSIM (the SSIM map averaged over the key mask).
2. Single tiles: every full 64x64 tile of skimage's chelsea and coffee (never seen in training). For each
learned quality level and each tile, JPEG and WebP get the highest Pillow quality (1..100) whose
bytes are <= the learned tile's bytes. Where even quality 1 is larger, quality 1 is used anyway
(so the classical codec gets *more* bytes than the learned one) and the tile is counted in "over".
Prints mean bytes, PSNR (dB) and SSIM per tile; "ssim wins" = tiles where the learned SSIM is higher.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from semcom.codec.key.learned import LearnedTileCodec  # noqa: E402
from semcom.codec.pipeline import SemanticEncoder  # noqa: E402
from semcom.eval.baselines import jpeg_at_bytes, pipeline_at_bytes, pipeline_point  # noqa: E402
from semcom.eval.metrics import psnr_db, ssim  # noqa: E402

TILE = 64
HELD_OUT = ("chelsea", "coffee")


def key_region_rows(weights: Path | None) -> list[dict]:
    """Per held-out photo and learned level: the learned pipeline and its rate-matched rivals."""
    from skimage import data

    options = {} if weights is None else {"weights": str(weights)}
    levels = LearnedTileCodec(weights=weights).max_quality
    rows = []
    for name in HELD_OUT:
        image = getattr(data, name)()
        mask = SemanticEncoder().splitter.split(image)
        for level in range(1, levels + 1):
            ours = pipeline_point(image, mask, "learned", level, key_options=options)
            row = {"photo": name, "quality": level, "learned": vars(ours)}
            for rival, point in (("jpeg_tiles", pipeline_at_bytes(image, mask, "jpeg", ours.bytes)),
                                 ("webp_tiles", pipeline_at_bytes(image, mask, "webp", ours.bytes)),
                                 ("jpeg_image", jpeg_at_bytes(image, mask, ours.bytes))):
                row[rival] = None if point is None else vars(point)
            rows.append(row)
    return rows


def print_key_region_table(rows: list[dict]) -> None:
    print("Key regions of held-out photos through the default pipeline; rivals get the same frame bytes "
          "(largest quality that fits; '-' = nothing fits)")
    print("| photo | level | bytes | learned PSNR / SSIM | JPEG tiles q: PSNR / SSIM | WebP tiles q: PSNR / SSIM "
          "| whole-image JPEG q: PSNR / SSIM |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["photo"], str(r["quality"]), str(r["learned"]["bytes"]),
                 f"{r['learned']['key_psnr_db']:.2f} / {r['learned']['key_ssim']:.4f}"]
        for rival in ("jpeg_tiles", "webp_tiles", "jpeg_image"):
            p = r[rival]
            cells.append("-" if p is None else f"q{p['quality']}: {p['key_psnr_db']:.2f} / {p['key_ssim']:.4f}")
        print("| " + " | ".join(cells) + " |")


def held_out_tiles() -> list[np.ndarray]:
    from skimage import data

    tiles = []
    for image in (data.chelsea(), data.coffee()):
        for y in range(0, image.shape[0] - TILE + 1, TILE):
            for x in range(0, image.shape[1] - TILE + 1, TILE):
                tiles.append(np.ascontiguousarray(image[y:y + TILE, x:x + TILE]))
    return tiles


def pillow_ladder(tile: np.ndarray, fmt: str) -> list[bytes]:
    """Encodings at quality 1..100, the same options as semcom.codec.key.classical."""
    options = {"JPEG": {"optimize": True}, "WEBP": {"method": 6}}[fmt]
    out = []
    for q in range(1, 101):
        buf = io.BytesIO()
        Image.fromarray(tile).save(buf, format=fmt, quality=q, **options)
        out.append(buf.getvalue())
    return out


def decode_pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def run(weights: Path | None) -> list[dict]:
    tiles = held_out_tiles()
    ladders = {fmt: [pillow_ladder(t, fmt) for t in tiles] for fmt in ("JPEG", "WEBP")}
    levels = LearnedTileCodec(weights=weights).max_quality
    rows = []
    for level in range(1, levels + 1):
        codec = LearnedTileCodec(quality=level, weights=weights)
        data = [codec.encode_tile(t) for t in tiles]
        dec = [codec.decode_tile(d, TILE, TILE) for d in data]
        learned_ssim = [ssim(t, o) for t, o in zip(tiles, dec)]
        row = {"quality": level, "tiles": len(tiles),
               "learned": {"bytes": float(np.mean([len(d) for d in data])),
                           "psnr_db": float(np.mean([psnr_db(t, o) for t, o in zip(tiles, dec)])),
                           "ssim": float(np.mean(learned_ssim))}}
        for fmt, ladder in ladders.items():
            sizes, ps, ss, over = [], [], [], 0
            for tile, budget, encodings in zip(tiles, data, ladder):
                fits = [e for e in encodings if len(e) <= len(budget)]
                if not fits:
                    over += 1
                chosen = fits[-1] if fits else encodings[0]
                out = decode_pillow(chosen)
                sizes.append(len(chosen))
                ps.append(psnr_db(tile, out))
                ss.append(ssim(tile, out))
            row[fmt.lower()] = {"bytes": float(np.mean(sizes)), "psnr_db": float(np.mean(ps)),
                                "ssim": float(np.mean(ss)), "over": over,
                                "learned_ssim_wins": int(np.sum(np.array(learned_ssim) > np.array(ss)))}
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    n = rows[0]["tiles"]
    print(f"Key tiles: {n} full 64x64 tiles of held-out chelsea + coffee; mean per tile; classical codecs "
          f"rate-matched (bytes <= learned)")
    print("| level | learned B | PSNR | SSIM | JPEG B | PSNR | SSIM | over | SSIM wins | WebP B | PSNR | SSIM "
          "| over | SSIM wins |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = [str(r["quality"]), f"{r['learned']['bytes']:.0f}", f"{r['learned']['psnr_db']:.2f}",
                 f"{r['learned']['ssim']:.4f}"]
        for fmt in ("jpeg", "webp"):
            c = r[fmt]
            cells += [f"{c['bytes']:.0f}", f"{c['psnr_db']:.2f}", f"{c['ssim']:.4f}", str(c["over"]),
                      f"{c['learned_ssim_wins']}/{n}"]
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=None, help="default: the shipped key_codec.safetensors")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    region_rows = key_region_rows(args.weights)
    print_key_region_table(region_rows)
    print()
    rows = run(args.weights)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"key_regions": region_rows, "tiles": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
