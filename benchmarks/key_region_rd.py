#!/usr/bin/env python3
"""Which key codec holds up on photos the module never saw: key PSNR/SSIM at equal frame bytes.

    python benchmarks/key_region_rd.py [--photos eval-photos] [--json OUT] [--images DIR_FOR_SIDE_BY_SIDES]
                                       [--no-rd] [--no-levels] [--masks-only]

For every photo of the evaluation set (``scripts/eval_photos.sh`` puts PHOTOS.md's evaluation photos,
512 px wide, in ``~/.cache/gr-semcom/eval-photos``), through ``SemanticEncoder`` / ``SemanticDecoder``:

1. Key codecs at equal frame bytes: budgets of 0.5, 1 and 2 bits per key pixel (whole frame:
   every PDU, header copies, text and sketch counted). Each codec (learned as shipped, AVIF, WebP and
   JPEG tiles) gets its largest quality whose frame fits (every learned level; Pillow
   quality on the grid ``PILLOW_GRID``); '-' = not even its lowest quality fits (scored
   as a loss). The winner is the codec with the highest mean key PSNR over photos and budgets, where
   a codec that does not fit scores the PSNR of the mean key colour; ``winner()`` is what the test of
   the default codec calls.
2. The default pipeline (``PipelineConfig()``): frame bytes over the bytes of the smallest whole-image
   JPEG whose key-region PSNR is at least ours (no PDU lost, as on the 20 dB loopback), the seam ratio
   (mean absolute gradient across tile borders over that inside tiles, decoded over original, on key
   pixels: 1.0 = no seam added), and the IoU of the key mask with the hand-drawn reference mask in
   ``gr-semcom/masks/`` where there is one (and the bare saliency blob's IoU, ``refine=False``).
3. Seams at every key level: ``level_for_budget`` at each level's budget (levels 1-8 of
   ``semcom.codec.rate``: AVIF quality, 1/2 and 1/4 scale tiles, a shrunk key region), the decoded
   frame's seam ratio; the largest per photo and over all photos (``--no-levels`` skips it).

The key region is scored on the mask both ends see (the frame's 8 px block mask); key pixels are
exactly the decoded tiles (after deblocking), so the background generator does not change the scores
and the rate-distortion runs draw it with the plain renderer to save time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from semcom.codec import registry  # noqa: E402
from semcom.codec.imageio import load_image  # noqa: E402
from semcom.codec.key.deblock import seam_ratio  # noqa: E402
from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder, coarse_mask  # noqa: E402
from semcom.codec.rate import KEY_LEVEL_BITS_PER_KEY_PIXEL, OnceDescriber, level_budget_bytes, level_for_budget  # noqa: E402
from semcom.eval.baselines import jpeg_at_key_psnr  # noqa: E402
from semcom.eval.metrics import psnr_db, ssim  # noqa: E402
from semcom.eval.photos import default_eval_photos_dir  # noqa: E402

# name -> the qualities searched (ascending bytes): every learned level, a grid for the Pillow codecs
PILLOW_GRID = (1, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100)
CODECS = {"learned": tuple(range(1, 9)), "avif": PILLOW_GRID, "webp": PILLOW_GRID, "jpeg": PILLOW_GRID}
BUDGETS_BITS_PER_KEY_PIXEL = (0.5, 1.0, 2.0)
MASKS_DIR = ROOT / "gr-semcom" / "masks"



class CodecLadder:
    """One photo and key mask through the pipeline with one key codec, memoised per quality."""

    def __init__(self, image: np.ndarray, key_mask: np.ndarray, codec: str, describer, base: PipelineConfig):
        self.image, self.key_mask, self.codec = image, key_mask, codec
        self.config = replace(base, key=codec, generate="render")
        self.encoder = SemanticEncoder(self.config)
        self.encoder.describer = describer
        self.decoder = SemanticDecoder(self.config)
        self.points = lru_cache(maxsize=None)(self._point)

    def _point(self, quality: int) -> dict:
        self.encoder.key_codec = registry.create("key", self.codec, quality=quality)
        encoded = self.encoder.encode(self.image, key_mask=self.key_mask)
        recon = self.decoder.decode(encoded.frame, seed=0)
        key = encoded.key_mask
        return {"codec": self.codec, "quality": quality, "bytes": sum(map(len, encoded.to_pdus(self.config.pdu_bytes))),
                "key_psnr_db": psnr_db(self.image, recon.image, key), "key_ssim": ssim(self.image, recon.image, key)}

    def at_bytes(self, budget: int) -> dict | None:
        """The largest searched quality whose frame fits ``budget`` (bytes grow with quality), or None."""
        grid = CODECS[self.codec]
        low, high = 0, len(grid) - 1
        if self.points(grid[low])["bytes"] > budget:
            return None
        while low < high:
            middle = (low + high + 1) // 2
            if self.points(grid[middle])["bytes"] <= budget:
                low = middle
            else:
                high = middle - 1
        return self.points(grid[low])


def frame_key_mask(key_mask: np.ndarray, block_px: int) -> np.ndarray:
    """(H, W) bool: the key mask as the frame carries it (blocks of ``block_px``), what both ends score."""
    blocks = coarse_mask(key_mask, block_px)
    return np.repeat(np.repeat(blocks, block_px, axis=0), block_px, axis=1)[: key_mask.shape[0], : key_mask.shape[1]]


def flat_key_psnr(image: np.ndarray, key_mask: np.ndarray) -> float:
    """Key PSNR of painting the key region in its mean colour: the score of a codec that does not fit."""
    flat = image.copy()
    flat[key_mask] = image[key_mask].mean(axis=0).round().astype(np.uint8)
    return psnr_db(image, flat, key_mask)


def rd_rows(name: str, image: np.ndarray, key_mask: np.ndarray, codecs=tuple(CODECS),
            budgets=BUDGETS_BITS_PER_KEY_PIXEL, base: PipelineConfig | None = None) -> list[dict]:
    """One row per budget: each codec's point at that frame budget (None when nothing fits)."""
    base = base or PipelineConfig()
    describer = OnceDescriber(registry.create("describe", base.describe, **base.describe_options))
    ladders = {c: CodecLadder(image, key_mask, c, describer, base) for c in codecs}
    frame_key = frame_key_mask(key_mask, base.mask_block_px)
    key_px = int(frame_key.sum())
    floor = flat_key_psnr(image, frame_key)
    rows = []
    for bits in budgets:
        budget = int(bits * key_px / 8)
        row = {"photo": name, "bits_per_key_pixel": bits, "budget_bytes": budget, "floor_psnr_db": floor}
        for codec, ladder in ladders.items():
            row[codec] = ladder.at_bytes(budget)
        rows.append(row)
    return rows


def winner(rows: list[dict], codecs=tuple(CODECS)) -> tuple[str, dict[str, float]]:
    """(best codec, mean key PSNR per codec) over all rows; a codec that does not fit scores the floor."""
    means = {c: float(np.mean([r[c]["key_psnr_db"] if r[c] else r["floor_psnr_db"] for r in rows])) for c in codecs}
    return max(means, key=means.get), means


@lru_cache(maxsize=None)
def _default_encoder() -> SemanticEncoder:
    return SemanticEncoder(PipelineConfig())


@lru_cache(maxsize=None)
def _default_decoder() -> SemanticDecoder:
    return SemanticDecoder(PipelineConfig())


def default_pipeline_row(name: str, image: np.ndarray, key_mask: np.ndarray, reference: np.ndarray | None,
                         side_by_side: Path | None = None) -> dict:
    """The default configuration end to end: frame/JPEG ratio, seam ratio, mask IoU."""
    config = PipelineConfig()
    encoded = _default_encoder().encode(image, key_mask=key_mask)
    recon = _default_decoder().decode(encoded.frame, seed=0)
    key = encoded.key_mask
    frame_bytes = sum(map(len, encoded.to_pdus(config.pdu_bytes)))
    key_psnr = psnr_db(image, recon.image, key)
    jpeg = jpeg_at_key_psnr(image, key, key_psnr)
    row = {"photo": name, "codec": config.key, "frame_bytes": frame_bytes, "key_psnr_db": key_psnr,
           "key_ssim": ssim(image, recon.image, key), "key_share": float(key_mask.mean()),
           "jpeg_bytes_same_key_psnr": jpeg.bytes, "jpeg_reaches": jpeg.key_psnr_db >= key_psnr,
           "frame_over_jpeg": frame_bytes / jpeg.bytes,
           "seam_ratio": seam_or_none(image, recon.image, recon.received_mask, encoded.frame.tile_px),
           "mask_iou": None if reference is None else iou(key_mask, reference)}
    if side_by_side is not None:
        side_by_side.parent.mkdir(parents=True, exist_ok=True)
        outline = image.copy()
        outline[~key] = (outline[~key] * 0.35).astype(np.uint8)
        gap = np.full((image.shape[0], 6, 3), 255, np.uint8)
        Image.fromarray(np.hstack([image, gap, outline, gap, recon.image])).save(side_by_side)
    return row


def seam_or_none(original: np.ndarray, decoded: np.ndarray, mask: np.ndarray, tile_px: int) -> float | None:
    """``seam_ratio``, or None when the key pixels cross no tile border (one tile: no seam to see)."""
    try:
        return seam_ratio(original, decoded, mask, tile_px)
    except ValueError:
        return None


def level_seams(image: np.ndarray, key_mask: np.ndarray) -> list[dict]:
    """Per key level: the frame level_for_budget picks for that level's budget, and its seam ratio."""
    config = PipelineConfig()
    rows = []
    for level in range(1, len(KEY_LEVEL_BITS_PER_KEY_PIXEL) + 1):
        fit = level_for_budget(image, key_mask, level_budget_bytes(key_mask, level), config)
        recon = _default_decoder().decode(fit.encoded.frame, seed=0)
        key = recon.received_mask & fit.encoded.key_mask
        rows.append({"level": level, "frame_bytes": fit.frame_bytes, "shrunk": fit.shrunk, **fit.key_options,
                     "key_psnr_db": psnr_db(image, recon.image, key),
                     "seam_ratio": seam_or_none(image, recon.image, key, fit.encoded.frame.tile_px)})
    return rows


def iou(mask: np.ndarray, reference: np.ndarray) -> float:
    return float((mask & reference).sum() / (mask | reference).sum())


def reference_mask(name: str, shape: tuple[int, int]) -> np.ndarray | None:
    """The hand-drawn reference of photo ``name`` (file names compared case-insensitively), or None."""
    paths = [p for p in MASKS_DIR.glob("*.png") if p.stem.lower() == name.lower()]
    if not paths:
        return None
    path = paths[0]
    mask = Image.open(path).convert("L").resize((shape[1], shape[0]), Image.NEAREST)
    return np.asarray(mask) >= 128


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def fmt(point: dict | None) -> str:
    return "-" if point is None else f"q{point['quality']} {point['key_psnr_db']:.1f} / {point['key_ssim']:.3f}"


def masks_only(photos: list[Path], splitter) -> int:
    """IoU per photo that has a reference mask: the default splitter and the bare saliency blob."""
    blob_splitter = registry.create("regions", "saliency", refine=False)
    print("| photo | key share | reference share | mask IoU | saliency blob IoU |")
    print("|---|---:|---:|---:|---:|")
    ious, blobs = [], []
    for path in photos:
        image = load_image(path)
        reference = reference_mask(path.stem, image.shape[:2])
        if reference is None:
            continue
        mask = splitter.split(image)
        ious.append(iou(mask, reference))
        blobs.append(iou(blob_splitter.split(image), reference))
        print(f"| {path.stem} | {mask.mean():.2f} | {reference.mean():.3f} | {ious[-1]:.2f} | {blobs[-1]:.2f} |")
    if ious:
        print(f"mean IoU {np.mean(ious):.2f} over {len(ious)} reference masks (saliency blob {np.mean(blobs):.2f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, default=default_eval_photos_dir(),
                   help="evaluation photos (PNG; default: where scripts/eval_photos.sh puts them)")
    p.add_argument("--json", type=Path, default=None, help="also write every row as JSON here")
    p.add_argument("--images", type=Path, default=None, help="write original | key region | received per photo here")
    p.add_argument("--codecs", default=",".join(CODECS), help="comma-separated key codecs to compare")
    p.add_argument("--no-rd", action="store_true", help="only the default pipeline's rows (frame/JPEG, seams, IoU)")
    p.add_argument("--no-levels", action="store_true", help="skip the seam ratio at every key level")
    p.add_argument("--masks-only", action="store_true", help="only the mask IoU per photo with a reference mask")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    photos = sorted(args.photos.glob("*.png"))
    if not photos:
        p.error(f"no PNG photos in {args.photos}: run scripts/eval_photos.sh (PHOTOS.md's evaluation set)")
    codecs = tuple(args.codecs.split(","))
    blob_splitter = registry.create("regions", "saliency", refine=False)
    splitter = SemanticEncoder(PipelineConfig()).splitter
    if args.masks_only:
        return masks_only(photos, splitter)
    rd, default_rows, levels = [], [], {}
    print("Key PSNR (dB) / key SSIM at equal frame bytes, largest quality that fits ('-': nothing fits)")
    print("| photo | bits/key px | budget B | " + " | ".join(codecs) + " |")
    print("|---|---:|---:|" + "---|" * len(codecs))
    for path in photos:
        name, image = path.stem, load_image(path)
        key_mask = splitter.split(image)
        rows = [] if args.no_rd else rd_rows(name, image, key_mask, codecs)
        rd += rows
        for r in rows:
            print(f"| {name} | {r['bits_per_key_pixel']} | {r['budget_bytes']} | "
                  + " | ".join(fmt(r[c]) for c in codecs) + " |", flush=True)
        side = None if args.images is None else args.images / f"{name}.png"
        reference = reference_mask(name, image.shape[:2])
        default_rows.append(default_pipeline_row(name, image, key_mask, reference, side))
        if reference is not None:
            default_rows[-1]["blob_iou"] = iou(blob_splitter.split(image), reference)
        if not args.no_levels:
            levels[name] = level_seams(image, key_mask)
    best, means = winner(rd, codecs) if rd else (None, {})
    if rd:
        print()
        print("Mean key PSNR over photos and budgets: " + ", ".join(f"{c} {means[c]:.2f} dB" for c in codecs)
              + f"; winner: {best}")
        for bits in BUDGETS_BITS_PER_KEY_PIXEL:
            rows = [r for r in rd if r["bits_per_key_pixel"] == bits]
            print(f"  {bits} bits/key px: " + ", ".join(
                f"{c} {np.mean([r[c]['key_psnr_db'] if r[c] else r['floor_psnr_db'] for r in rows]):.2f} dB"
                f" (fits {sum(r[c] is not None for r in rows)}/{len(rows)})" for c in codecs))
    print()
    print(f"Default pipeline ({PipelineConfig().key}), no PDU lost: frame bytes vs the whole-image JPEG of equal "
          "key PSNR; seam ratio; mask IoU vs gr-semcom/masks")
    print("| photo | key share | frame B | key PSNR / SSIM | JPEG B | frame/JPEG | seam ratio | seam max, levels 1-8 | mask IoU (blob) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in default_rows:
        mask_iou = "-" if r["mask_iou"] is None else f"{r['mask_iou']:.2f} ({r['blob_iou']:.2f})"
        jpeg = f"{r['jpeg_bytes_same_key_psnr']}" + ("" if r["jpeg_reaches"] else " (q95 short)")
        scored = [x for x in levels.get(r["photo"], []) if x["seam_ratio"] is not None]
        worst = max(scored, key=lambda x: x["seam_ratio"]) if scored else None
        level_seam = "-" if worst is None else f"{worst['seam_ratio']:.2f} (L{worst['level']})"
        print(f"| {r['photo']} | {r['key_share']:.2f} | {r['frame_bytes']} | {r['key_psnr_db']:.1f} / "
              f"{r['key_ssim']:.3f} | {jpeg} | {r['frame_over_jpeg']:.2f} | {fmt_ratio(r['seam_ratio'])} | {level_seam} | {mask_iou} |")
    ratios = [r["frame_over_jpeg"] for r in default_rows]
    seams = [r["seam_ratio"] for r in default_rows if r["seam_ratio"] is not None]
    ious = [r["mask_iou"] for r in default_rows if r["mask_iou"] is not None]
    print(f"frame/JPEG: median {statistics.median(ratios):.2f}, max {max(ratios):.2f}; "
          f"seam ratio: median {statistics.median(seams):.2f}, max {max(seams):.2f}"
          + (f"; mask IoU: mean {np.mean(ious):.2f} over {len(ious)} reference masks (bare saliency blob "
             f"{np.mean([r['blob_iou'] for r in default_rows if r['mask_iou'] is not None]):.2f})" if ious else ""))
    if levels:
        every = [x for rows in levels.values() for x in rows if x["seam_ratio"] is not None]
        per_level = {lv: [x["seam_ratio"] for x in every if x["level"] == lv]
                     for lv in range(1, len(KEY_LEVEL_BITS_PER_KEY_PIXEL) + 1)}
        print("Seam ratio per key level, over photos (max / median): " + ", ".join(
            f"L{lv} {max(v):.2f} / {statistics.median(v):.2f}" if v else f"L{lv} -" for lv, v in per_level.items())
              + f"; above 1.2: {sum(x['seam_ratio'] > 1.2 for x in every)} of {len(every)} "
              f"({sum(len(rows) for rows in levels.values()) - len(every)} frames whose key pixels cross no tile border)")
    if args.json:
        args.json.write_text(json.dumps({"rd": rd, "default": default_rows, "levels": levels, "winner": best,
                                         "mean_key_psnr_db": means},
                                        indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
