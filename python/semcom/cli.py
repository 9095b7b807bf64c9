"""The ``semcom`` command: a thin face on semcom.codec, semcom.radio and semcom.eval."""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from semcom.codec import registry
from semcom.codec.imageio import load_image, save_png
from semcom.codec.key.avif import DEFAULT_AVIF_QUALITY
from semcom.codec.key.learned import DEFAULT_LEARNED_QUALITY
from semcom.codec.pipeline import PipelineConfig
from semcom.constants import DEFAULT_KEY_QUALITY, LOOPBACK_FREQUENCY_OFFSET, LOOPBACK_TIMING_OFFSET
from semcom.paths import data_path

DEFAULT_PHOTO = "chelsea.png"
MIN_LOOPBACK_SIDE_PX = 7        # the SSIM window of the loopback's quality report (scikit-image's default)


def _box(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--box takes x,y,w,h in pixels, got {text!r}") from None
    return x, y, w, h


def _ratio(text: str) -> Fraction:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"--cbr takes a ratio like 1/24 or 0.05, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"--cbr must be positive, got {text!r}")
    return value


def _pipeline_config(args) -> PipelineConfig:
    config = PipelineConfig.from_file(args.config) if args.config else PipelineConfig()
    if args.key_quality is not None:
        config.key_options = {**config.key_options, "quality": args.key_quality}
    return config


def side_by_side(original: np.ndarray, key_mask: np.ndarray, received: np.ndarray, gap_px: int = 8) -> np.ndarray:
    """original | key mask (background dimmed) | received, as one (H, 3W + 2 gap, 3) uint8 picture."""
    dimmed = np.where(key_mask[..., None], original, (original * 0.25).astype(np.uint8))
    h = original.shape[0]
    gap = np.full((h, gap_px, 3), 255, np.uint8)
    return np.concatenate([original, gap, dimmed, gap, received], axis=1)


def cmd_loopback_analog(args, image: np.ndarray, image_path: Path, key_mask, out: Path) -> int:
    """--mode analog: the key region as DeepJSCC symbols through analog_tx/analog_rx (semcom.radio.analog_loopback)."""
    from semcom.eval.metrics import quality_report
    from semcom.radio.analog_loopback import AnalogLinkConfig, run_analog_loopback

    link = AnalogLinkConfig(snr_db=args.snr_db, samples_per_symbol=args.sps, frequency_offset=args.freq_offset,
                            timing_offset=args.timing_offset, noise_seed=args.seed)
    result = run_analog_loopback(image, args.snr_db, link, _pipeline_config(args), key_mask=key_mask)
    recon = result.reconstruction
    quality = {k: round(v, 4) for k, v in quality_report(image, recon.image, recon.key_mask).items()}
    metrics = {"image": str(image_path), "mode": "analog", "link": link.to_dict(), "quality": quality,
               "tiles": {"expected": recon.tiles_expected, "received": recon.tiles_received},
               "analog_channel_symbols": result.channel_symbols, "rx": result.rx_counts,
               "elapsed_s": round(result.elapsed_s, 3)}
    save_png(recon.image, out / "reconstruction.png")
    save_png(side_by_side(image, recon.key_mask, recon.image), out / "side_by_side.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {out}/reconstruction.png, side_by_side.png, metrics.json")
    print(json.dumps({**quality, "analog_channel_symbols": result.channel_symbols}, indent=2))
    return 0 if recon.tiles_received else 1


def cmd_loopback_hybrid(args, image: np.ndarray, image_path: Path, key_mask, out: Path) -> int:
    """--mode hybrid: header and text coded digitally, key tiles as DeepJSCC symbols, all in analog frames
    through one flowgraph (semcom.radio.hybrid)."""
    from semcom.eval.metrics import quality_report
    from semcom.eval.sweep import budget_symbols as symbols_for_cbr
    from semcom.radio.hybrid import HybridLinkConfig, run_hybrid_loopback

    budget = args.budget_symbols or (symbols_for_cbr(float(args.cbr), *image.shape[:2]) if args.cbr else 0)
    link = HybridLinkConfig(snr_db=args.snr_db, samples_per_symbol=args.sps, frequency_offset=args.freq_offset,
                            timing_offset=args.timing_offset, noise_seed=args.seed, budget_symbols=budget)
    result = run_hybrid_loopback(image, link, _pipeline_config(args), key_mask=key_mask)
    recon = result.reconstruction
    metrics = {"image": str(image_path), "mode": "hybrid", "link": link.to_dict(), "received": recon is not None,
               "description": result.plan.description, "hybrid": result.report(), "rx": result.rx_counts,
               "elapsed_s": round(result.elapsed_s, 3)}
    if recon is not None:
        quality = quality_report(image, recon.image, recon.key_mask)
        metrics["quality"] = {k: round(v, 4) for k, v in quality.items()}
        metrics["tiles"] = {"expected": recon.tiles_expected, "received": recon.tiles_received}
        metrics["text_lost"] = recon.text_lost
        metrics["generated_key_share"] = round(recon.generated_share, 4)
        save_png(recon.image, out / "reconstruction.png")
        save_png(side_by_side(image, recon.key_mask, recon.image), out / "side_by_side.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"wrote {out}/metrics.json" + (", reconstruction.png, side_by_side.png" if recon is not None else
                                          " (no header arrived: nothing to draw)"))
    print(json.dumps({"received": recon is not None, **metrics.get("quality", {}),
                      "channel_symbols": result.plan.channel_symbols, "copies": result.plan.copies}, indent=2))
    return 0 if recon is not None else 1


def cmd_loopback(args) -> int:
    from semcom.eval.baselines import jpeg_at_key_psnr
    from semcom.eval.metrics import quality_report
    from semcom.radio.loopback import LinkConfig, run_loopback_frames
    from semcom.radio.mcs import mcs_by_name
    from semcom.radio.packet import mcs_name

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image_path = Path(args.image) if args.image else data_path("photos", DEFAULT_PHOTO)
    image = load_image(image_path)
    if min(image.shape[:2]) < MIN_LOOPBACK_SIDE_PX:
        raise ValueError(f"{image_path}: {image.shape[1]}x{image.shape[0]} pixels is below the loopback's minimum of "
                         f"{MIN_LOOPBACK_SIDE_PX}x{MIN_LOOPBACK_SIDE_PX} (the SSIM window of its quality report)")
    key_mask = None
    if args.mask:
        key_mask = registry.create("regions", "mask", mask=args.mask).split(image)
    elif args.box:
        key_mask = registry.create("regions", "box", box=args.box).split(image)
    budgeted = bool(args.budget_symbols or args.cbr)
    if budgeted and (args.mode == "analog" or args.key_quality is not None):
        raise ValueError("--budget-symbols/--cbr plan the key quality and MCS themselves: "
                         "not with --mode analog or --key-quality")
    if args.mode is None:
        digital_options = args.mcs or args.protected_mcs or args.key_mcs or args.adapt or args.frames != 1
        args.mode = "auto" if budgeted and not digital_options else "digital"
    if args.mode == "auto":
        from semcom.eval.channel import shipped_per_table
        from semcom.radio.hybrid import use_hybrid

        args.mode = "hybrid" if use_hybrid(args.snr_db, shipped_per_table()) else "digital"
        print(f"--mode auto: {args.mode} at {args.snr_db:g} dB")
    if args.mode == "analog":
        return cmd_loopback_analog(args, image, image_path, key_mask, out)
    if args.mode == "hybrid":
        if args.mcs or args.protected_mcs or args.key_mcs or args.adapt or args.frames != 1 \
                or args.key_quality is not None:
            raise ValueError("--mode hybrid sends one image, header and text as rate-1/4 coded BPSK and key tiles "
                             "as DeepJSCC symbols, all in analog frames: not with --mcs, --protected-mcs, "
                             "--key-mcs, --adapt, --frames or --key-quality")
        return cmd_loopback_hybrid(args, image, image_path, key_mask, out)
    if args.frames < 1:
        raise ValueError(f"--frames {args.frames}: send at least one")
    modulation, fec = (mcs_by_name(args.mcs).modulation, mcs_by_name(args.mcs).fec_code) if args.mcs \
        else (args.modulation, args.fec)
    link = LinkConfig(snr_db=args.snr_db, modulation=modulation, fec_code=fec,
                      samples_per_symbol=args.sps, frequency_offset=args.freq_offset,
                      timing_offset=args.timing_offset, noise_seed=args.seed,
                      protected_mcs=args.protected_mcs or "", key_mcs=args.key_mcs or "", adapt=args.adapt,
                      budget_symbols=args.budget_symbols or 0, cbr=float(args.cbr or 0), plan_snr_db=args.plan_snr_db)
    config = _pipeline_config(args)
    results = run_loopback_frames([image] * args.frames, link, config, key_mask=key_mask,
                                  output_path=str(out / "reconstruction.png"))
    result = results[-1]
    encoded, recon = result.encoded, result.reconstruction
    frame = encoded.frame
    metrics = {
        "image": str(image_path), "width": frame.width, "height": frame.height,
        "link": link.to_dict(), "pipeline": config.to_dict(),
        "received": recon is not None,
        "key_share": round(float(encoded.key_mask.mean()), 4),
        "description": encoded.description,
        "bytes": {"frame": result.bytes_sent, "key_tiles": sum(map(len, frame.key_tiles.values())),
                  "text": len(frame.text or b"")},
        "pdus_sent": result.pdus_sent,
        "channel_symbols": result.channel_symbols,
        "mcs": {"protected": result.protected_mcs or mcs_name(modulation, fec),
                "key": result.key_mcs or mcs_name(modulation, fec)},
        "rx": result.rx_stats,
        "elapsed_s": round(result.elapsed_s, 3),
    }
    if result.plan is not None:
        metrics["plan"] = result.plan
    if args.frames > 1:     # the last image is the one reported above; this is how each went
        metrics["frames"] = [
            {"protected_mcs": r.protected_mcs or mcs_name(modulation, fec),
             "key_mcs": r.key_mcs or mcs_name(modulation, fec),
             "snr_estimate_db": None if r.snr_estimate_db is None else round(r.snr_estimate_db, 2),
             "received": r.reconstruction is not None, "channel_symbols": r.channel_symbols,
             **({"plan": r.plan} if r.plan is not None else {}),
             "key_psnr_db": None if r.reconstruction is None else
             round(quality_report(image, r.reconstruction.image, r.encoded.key_mask).get("key_psnr_db", 0.0), 3)}
            for r in results]
    if recon is not None:
        quality = quality_report(image, recon.image, encoded.key_mask)
        metrics["quality"] = {k: round(v, 4) for k, v in quality.items()}
        metrics["packets_lost"] = result.pdus_sent - result.rx_stats["pdus_accepted"] - result.rx_stats["pdus_duplicate"]
        metrics["tiles"] = {"expected": recon.tiles_expected, "received": recon.tiles_received,
                            "corrupt": recon.tiles_corrupt}
        metrics["text_lost"] = recon.text_lost
        metrics["generated_key_share"] = round(recon.generated_share, 4)
        if "key_psnr_db" in quality:
            jpeg = jpeg_at_key_psnr(image, encoded.key_mask, quality["key_psnr_db"])
            metrics["jpeg_same_key_psnr"] = {"quality": jpeg.quality, "bytes": jpeg.bytes,
                                             "key_psnr_db": round(jpeg.key_psnr_db, 4)}
            metrics["jpeg_bytes_over_frame_bytes"] = round(jpeg.bytes / result.bytes_sent, 3)
        received = recon.image
    else:
        metrics["packets_lost"] = result.pdus_sent - result.rx_stats["pdus_accepted"] - result.rx_stats["pdus_duplicate"]
        received = np.zeros_like(image)
    save_png(side_by_side(image, encoded.key_mask, received), out / "side_by_side.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    summary = metrics.get("quality", {})
    print(f"wrote {out}/reconstruction.png, side_by_side.png, metrics.json")
    print(json.dumps({"received": metrics["received"], **summary, "frame_bytes": result.bytes_sent,
                      "jpeg_bytes_same_key_psnr": metrics.get("jpeg_same_key_psnr", {}).get("bytes"),
                      "packets_lost": metrics["packets_lost"]}, indent=2))
    return 0 if recon is not None else 1


def build_parser() -> argparse.ArgumentParser:
    from semcom.companion import add_companion_parser
    from semcom.eval.sweep import add_eval_parser
    from semcom.finetune import add_finetune_parser
    from semcom.worker import add_worker_parser
    from semcom.radio.mcs import MCS_NAMES
    from semcom.radio.packet import FEC_CODES, MARK_DELAY_SYMBOLS, MODULATIONS

    parser = argparse.ArgumentParser(prog="semcom", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    loop = commands.add_parser("loopback", help="send one image through the GNU Radio loopback flowgraph")
    loop.add_argument("--image", help=f"image file (default: bundled {DEFAULT_PHOTO})")
    loop.add_argument("--snr-db", type=float, default=20.0, help="Es/N0 per channel symbol, dB")
    loop.add_argument("--out", default="out/loopback", help="output directory")
    loop.add_argument("--mode", choices=("digital", "analog", "hybrid", "auto"),
                      help="analog: key region as DeepJSCC symbols, the rest handed over (modulation/fec ignored); "
                           "hybrid: header and text as coded BPSK, key tiles as DeepJSCC symbols, one channel; "
                           "auto: hybrid below the PER table's digital floor (semcom.radio.hybrid), else digital "
                           "(default: auto with --budget-symbols/--cbr and no MCS, --adapt or --frames; else digital)")
    loop.add_argument("--modulation", choices=MODULATIONS, default="qpsk")
    loop.add_argument("--fec", choices=FEC_CODES, default="cc")
    loop.add_argument("--mcs", choices=MCS_NAMES, help="every PDU on this MCS (instead of --modulation/--fec)")
    loop.add_argument("--protected-mcs", choices=MCS_NAMES,
                      help="header, text and sketch on this MCS (unequal protection; default: the link's)")
    loop.add_argument("--key-mcs", choices=MCS_NAMES, help="key tiles on this MCS (default: the link's)")
    loop.add_argument("--adapt", action="store_true",
                      help="each image's MCS pair from the receiver's SNR estimates of the PDUs before it "
                           "(docs/evaluation.md, 'without a budget'); use with --frames")
    budget = loop.add_mutually_exclusive_group()
    budget.add_argument("--budget-symbols", type=int, help="channel symbols per image: semantic_tx plans key quality, "
                        "key region and MCS pair to fit, as ours-adapt in semcom eval (metrics.json: 'plan')")
    budget.add_argument("--cbr", type=_ratio, help="the budget as symbols per 3 H W, e.g. 1/24 (semcom eval's CBR)")
    loop.add_argument("--plan-snr-db", type=float,
                      help="the SNR a budget is planned for (default: --snr-db; with --adapt, the estimates once known)")
    loop.add_argument("--frames", type=int, default=1,
                      help="send the image this many times through one flowgraph (metrics.json: 'frames')")
    loop.add_argument("--sps", type=int, choices=sorted(MARK_DELAY_SYMBOLS), default=2, help="samples per symbol")
    loop.add_argument("--freq-offset", type=float, default=LOOPBACK_FREQUENCY_OFFSET,
                      help="channel frequency offset, cycles/sample")
    loop.add_argument("--timing-offset", type=float, default=LOOPBACK_TIMING_OFFSET,
                      help="channel sample-clock ratio")
    loop.add_argument("--seed", type=int, default=42, help="channel noise seed")
    loop.add_argument("--config", help="pipeline preset (JSON/YAML); default: built-in offline pipeline")
    loop.add_argument("--key-quality", type=int, help="key codec quality: 1..100 for the default avif codec (default "
                      f"{DEFAULT_AVIF_QUALITY}) and webp/jpeg (default {DEFAULT_KEY_QUALITY}), 1..8 for learned "
                      f"(default {DEFAULT_LEARNED_QUALITY}); semcom.codec.rate.level_for_budget picks it for a byte budget")
    region = loop.add_mutually_exclusive_group()
    region.add_argument("--mask", help="key mask image (non-zero = key), same size as the image")
    region.add_argument("--box", type=_box, help="key region as x,y,w,h pixels")
    loop.set_defaults(run=cmd_loopback)
    add_finetune_parser(commands)
    add_worker_parser(commands)
    add_eval_parser(commands)
    add_companion_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as exc:        # bad input, unreadable/unwritable files
        print(f"semcom: error: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:                     # an unknown backend name; the message lists the known ones
        print(f"semcom: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
