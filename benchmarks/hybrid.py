#!/usr/bin/env python3
"""Hybrid digital-analog (``semcom loopback --mode hybrid``) against whole-image DeepJSCC at the same channel
symbols, both through the real flowgraph (AWGN with the loopback's frequency and timing offsets).

    python benchmarks/hybrid.py [--photos chelsea,flower,kite] [--seeds 10] [--snr-db 0,-3]
    python benchmarks/hybrid.py --single-copies --snr-db=-3,-2,-1,0,1 --seeds 3

Per photo and SNR, over the seeds: images drawn (the hybrid mode needs its header), text received,
key-region and whole-image SSIM (mean over all runs; a run with no image scores the grey image's SSIM),
the channel symbols, and those of the header and text frames with their copies. The hybrid mode gets
exactly the symbols whole-image DeepJSCC spends on the photo (framing included) as its budget: header and text as rate-1/4 coded BPSK in analog frames (the copies of
``HybridLinkConfig``), key tiles as DeepJSCC frames, spare symbols as repeated frames. Key SSIM is
measured on the same mask for both.

``--single-copies`` sends only the protected frames of the first photo (header and text 8 times, the sketch
once) and counts the copies that decode on their own, per SNR: the reason for ``HybridLinkConfig``'s copies.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402


def deepjscc_symbols(image) -> int:
    """Channel symbols of whole-image DeepJSCC through analog_tx (``transmit_tiles``' framing)."""
    from semcom.codec import jscc
    from semcom.radio import analog
    from semcom.radio.analog_loopback import TILES_PER_FRAME

    n_tiles = len(jscc.split_tiles(image)[0])
    k = jscc.symbols_for(jscc.TILE_PX, jscc.TILE_PX, jscc.load_model().config)
    return sum(analog.channel_symbols_for(k * min(TILES_PER_FRAME, n_tiles - i))
               for i in range(0, n_tiles, TILES_PER_FRAME))


def single_copies(image, snrs: list[float], seeds: int) -> None:
    """Protected frames decoded copy by copy (no combining), through the hybrid flowgraph."""
    from semcom.radio import protected_frames
    from semcom.radio.hybrid import HybridLinkConfig, plan_hybrid, send_plan

    print("| Es/N0 | protected frames decoded alone |\n|---|---|")
    for snr in snrs:
        sent = decoded = 0
        for seed in range(seeds):
            link = HybridLinkConfig(snr_db=snr, noise_seed=seed + 1, header_copies=8, text_copies=8)
            plan = plan_hybrid(image, link)
            plan.copies = [0] * len(plan.copies)          # the key frames stay off air
            received, _ = send_plan(plan, link)
            decoded += sum(protected_frames.decode_block([burst]) is not None for burst in received)
            sent += len(plan.bursts())
        print(f"| {snr:g} dB | {decoded}/{sent} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", default="chelsea,flower,kite", help="evaluation photos (scripts/eval_photos.sh)")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--snr-db", default="0,-3", help="Es/N0 per channel symbol, comma-separated")
    p.add_argument("--single-copies", action="store_true", help="the protected frames' decode rate per copy")
    args = p.parse_args(argv)

    import numpy as np

    from semcom.codec.imageio import load_image
    from semcom.codec.pipeline import PipelineConfig
    from semcom.eval.metrics import quality_report
    from semcom.eval.photos import default_eval_photos_dir
    from semcom.radio.analog_loopback import jscc_transmit
    from semcom.radio.hybrid import HybridLinkConfig, run_hybrid_loopback

    started = time.monotonic()
    print(f"machine: {machine()}")
    if args.single_copies:
        single_copies(load_image(default_eval_photos_dir() / f"{args.photos.split(',')[0]}.png"),
                      [float(s) for s in args.snr_db.split(",")], args.seeds)
        print(f"\n{time.monotonic() - started:.0f} s")
        return 0
    print("| photo | Es/N0 | symbols | hybrid: header + text symbols | images out | text out | key SSIM | SSIM "
          "| DeepJSCC: key SSIM | SSIM |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    config = PipelineConfig()
    for name in args.photos.split(","):
        image = load_image(default_eval_photos_dir() / f"{name}.png")
        budget = deepjscc_symbols(image)
        grey = np.full_like(image, 128)
        for snr in (float(s) for s in args.snr_db.split(",")):
            drawn = text = 0
            ours, theirs = [], []
            for seed in range(args.seeds):
                result = run_hybrid_loopback(image, HybridLinkConfig(snr_db=snr, noise_seed=seed + 1,
                                                                     budget_symbols=budget), config)
                assert result.plan.channel_symbols <= budget
                key_mask = result.plan.frame.key_mask()
                recon = result.reconstruction
                drawn += recon is not None
                text += recon is not None and not recon.text_lost
                ours.append(quality_report(image, grey if recon is None else recon.image, key_mask))
                theirs.append(quality_report(image, jscc_transmit(image, snr, via="flowgraph", seed=seed), key_mask))

            def mean(rows, key):
                return statistics.mean(r[key] for r in rows)
            print(f"| {name} | {snr:g} dB | {budget} | {result.plan.digital_symbols} | {drawn}/{args.seeds} "
                  f"| {text}/{args.seeds} "
                  f"| {mean(ours, 'key_ssim'):.3f} | {mean(ours, 'ssim'):.3f} "
                  f"| {mean(theirs, 'key_ssim'):.3f} | {mean(theirs, 'ssim'):.3f} |", flush=True)
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
