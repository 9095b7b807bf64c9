"""``semcom eval``: SNR sweeps at equal channel symbols per image, ours against classic baselines.

For every image x scheme x SNR x seed one CSV row: bytes, channel symbols, PDUs sent/lost, whether the
frame was lost, PSNR / SSIM / MS-SSIM / (ST-)LPIPS of the whole image and of the key region. Plots:
each metric vs SNR, mean over images and seeds with a min..max band per scheme.

The key region used for the key-region metrics is the same for every scheme: the default saliency
split of the image (DEFAULT_KEY_FRACTION) at the wire format's mask resolution. A lost frame (nothing
decodable: both header copies of ours, or any PDU of a whole-image file) is scored as a mid-grey image.

Channel: ``fast`` drops PDUs with the packet error rates measured on the real flowgraph
(semcom.eval.channel); ``flowgraph`` runs packet_tx -> channel_model -> packet_rx for every transmission.
"""

from __future__ import annotations

import csv
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcom.codec.pipeline import PipelineConfig, coarse_mask
from semcom.eval import metrics
from semcom.eval.channel import CHANNEL_MODES, FADINGS, FastChannel, FlowgraphChannel, PerTable, per_table_for
from semcom.eval.schemes import SCHEMES, default_schemes

DEFAULT_SNR_GRID = "-4:14:2"
DEFAULT_BUDGET_SYMBOLS = 120_000


def parse_snr_grid(text: str) -> list[float]:
    """'-4:14:2' (start:stop:step, stop included) or '0,5,10' -> list of dB values."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0 or stop < start:
                raise ValueError
            return [round(start + i * step, 6) for i in range(int(np.floor((stop - start) / step + 1e-9)) + 1)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--snr-db takes start:stop:step or a comma list, got {text!r}") from None


def evaluation_key_mask(image: np.ndarray, config: PipelineConfig) -> np.ndarray:
    """(H, W) bool: the configured splitter's key region at mask-block resolution, as the wire carries it."""
    from semcom.codec import registry

    split = registry.create("regions", config.regions, **config.regions_options).split(image)
    blocks = coarse_mask(split, config.mask_block_px)
    b = config.mask_block_px
    return np.repeat(np.repeat(blocks, b, axis=0), b, axis=1)[: image.shape[0], : image.shape[1]]


@dataclass
class SweepConfig:
    images: list[Path]
    snr_db: list[float]
    budget_symbols: int = DEFAULT_BUDGET_SYMBOLS
    seeds: int = 3
    fading: str = "awgn"
    channel_mode: str = "fast"
    schemes: tuple[str, ...] = ()
    modulation: str = "qpsk"
    fec_code: str = "cc"
    out: Path = Path("out/eval")
    progress: bool = True
    per_table: PerTable | None = None      # fast channel: this table instead of the shipped/measured one


def _lpips_column(name: str) -> str:
    return name.replace("-", "_")


def _quality(reference: np.ndarray, test: np.ndarray, key_mask: np.ndarray, ref_features) -> dict[str, float]:
    model = metrics.lpips_model()
    column = _lpips_column(model.name)
    whole_lpips, key_lpips = model.distance(ref_features, test, key_mask)
    return {
        "psnr_db": metrics.psnr_db(reference, test), "ssim": metrics.ssim(reference, test),
        "ms_ssim": metrics.ms_ssim(reference, test), column: whole_lpips,
        "key_psnr_db": metrics.psnr_db(reference, test, key_mask), "key_ssim": metrics.ssim(reference, test, key_mask),
        "key_ms_ssim": metrics.ms_ssim(reference, test, key_mask), f"key_{column}": key_lpips,
    }


def run_sweep(cfg: SweepConfig) -> Path:
    """Runs the sweep, writes results.csv, the plots and summary.md into ``cfg.out``; returns the CSV path."""
    from tqdm import tqdm

    from semcom.codec.imageio import load_image
    from semcom.radio.pdu_link import PhyConfig

    if cfg.fading not in FADINGS:
        raise ValueError(f"unknown channel {cfg.fading!r}; choose one of {FADINGS}")
    if cfg.channel_mode not in CHANNEL_MODES:
        raise ValueError(f"unknown channel mode {cfg.channel_mode!r}; choose one of {CHANNEL_MODES}")
    names = list(cfg.schemes) or default_schemes()
    unknown = [n for n in names if n not in SCHEMES]
    if unknown:
        raise ValueError(f"unknown schemes {unknown}; known: {sorted(SCHEMES)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    config = PipelineConfig()
    phy = PhyConfig(modulation=cfg.modulation, fec_code=cfg.fec_code, mtu_bytes=max(1500, config.pdu_bytes))
    if cfg.channel_mode == "fast":
        table = cfg.per_table or per_table_for(phy, cache_dir=out, progress=lambda snr, per: print(
            f"measuring PER on the flowgraph: {snr:+.0f} dB {np.round(per, 3).tolist()}", flush=True))
        channel = FastChannel(table, cfg.fading)
    else:
        channel = FlowgraphChannel(phy, cfg.fading)
    schemes = [SCHEMES[n](phy, config) for n in names]
    model = metrics.lpips_model()
    lpips_col = _lpips_column(model.name)

    rows: list[dict] = []
    total = len(cfg.images) * len(schemes) * len(cfg.snr_db) * cfg.seeds
    bar = tqdm(total=total, unit="run", disable=not cfg.progress, dynamic_ncols=True)
    started = time.monotonic()
    for image_index, path in enumerate(cfg.images):
        image = load_image(path)
        key_mask = evaluation_key_mask(image, config)
        ref_features = model.features(image)
        for scheme_index, scheme in enumerate(schemes):
            bar.set_description(f"{Path(path).stem} {scheme.name}")
            payload = scheme.prepare(image, cfg.budget_symbols, key_mask)
            scored: dict = {}
            for snr_index, snr in enumerate(cfg.snr_db):
                for seed in range(cfg.seeds):
                    rng = np.random.default_rng([seed, image_index, snr_index, scheme_index])
                    delivery = scheme.transmit(payload, channel, snr, rng)
                    key = scheme.outcome_key(payload, delivery)
                    if key not in scored:
                        outcome = scheme.reconstruct(payload, delivery)
                        scored[key] = (outcome, _quality(image, outcome.image, key_mask, ref_features))
                    outcome, quality = scored[key]
                    rows.append({
                        "image": Path(path).name, "scheme": scheme.name, "snr_db": snr, "seed": seed,
                        "channel": cfg.fading, "channel_mode": cfg.channel_mode, "modulation": cfg.modulation,
                        "fec": cfg.fec_code, "budget_symbols": cfg.budget_symbols,
                        "bytes": payload.bytes, "channel_symbols": payload.channel_symbols,
                        "quality": payload.rate.get("quality", ""), "key_fraction": payload.rate.get("key_fraction", ""),
                        "scale": payload.rate.get("scale", ""), "pdus_sent": delivery.sent, "pdus_lost": delivery.lost,
                        "frame_lost": int(outcome.frame_lost), "key_share": round(float(key_mask.mean()), 4),
                        **{k: round(v, 5) for k, v in quality.items()},
                        "generated_key_share": outcome.info.get("generated_key_share", ""),
                        "text_lost": outcome.info.get("text_lost", ""),
                    })
                    bar.update(1)
    bar.close()
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_curves(rows, out, lpips_col, cfg)
    (out / "summary.md").write_text(summary_table(rows, lpips_col) + "\n")
    print(f"wrote {csv_path} ({len(rows)} rows), curves.png, frame_lost.png, summary.md in {out} "
          f"({time.monotonic() - started:.0f} s)")
    return csv_path


def _grouped(rows: list[dict], column: str):
    """scheme -> (snrs, mean, min, max) of ``column`` over images and seeds."""
    result = {}
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        snrs = sorted({r["snr_db"] for r in rows if r["scheme"] == scheme})
        values = [[float(r[column]) for r in rows if r["scheme"] == scheme and r["snr_db"] == s] for s in snrs]
        result[scheme] = (np.array(snrs), np.array([np.mean(v) for v in values]),
                          np.array([np.min(v) for v in values]), np.array([np.max(v) for v in values]))
    return result


def plot_curves(rows: list[dict], out: Path, lpips_col: str, cfg: SweepConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lpips_label = "ST-LPIPS" if lpips_col == "st_lpips" else "LPIPS"
    columns = [("psnr_db", "PSNR (dB)"), ("ssim", "SSIM"), ("ms_ssim", "MS-SSIM"), (lpips_col, f"{lpips_label} (lower is better)")]
    fig, axes = plt.subplots(2, 4, figsize=(15, 7), sharex=True)
    for row, prefix in enumerate(("", "key_")):
        for col, (metric, label) in enumerate(columns):
            ax = axes[row][col]
            for scheme, (snrs, mean, lo, hi) in _grouped(rows, prefix + metric).items():
                line, = ax.plot(snrs, mean, marker="o", markersize=3, label=scheme)
                ax.fill_between(snrs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
            ax.set_title(("key region " if prefix else "whole image ") + label, fontsize=10)
            ax.grid(alpha=0.3)
            if row == 1:
                ax.set_xlabel("Es/N0 (dB)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{cfg.fading.upper()}, {cfg.modulation.upper()} + {cfg.fec_code}, budget {cfg.budget_symbols} channel "
                 f"symbols/image, {len(cfg.images)} images x {cfg.seeds} seeds ({cfg.channel_mode} channel). "
                 "Line: mean, band: min..max. A lost frame is scored as a mid-grey image.", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=72)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for scheme, (snrs, mean, _, _) in _grouped(rows, "frame_lost").items():
        ax.plot(snrs, mean, marker="o", markersize=3, label=scheme)
    ax.set_xlabel("Es/N0 (dB)")
    ax.set_ylabel("frames lost (share)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "frame_lost.png", dpi=72)
    plt.close(fig)


def summary_table(rows: list[dict], lpips_col: str, snrs: list[float] | None = None) -> str:
    """Markdown: mean per scheme at a few SNRs (default: lowest, two middle, highest)."""
    all_snrs = sorted({r["snr_db"] for r in rows})
    if snrs is None:
        picks = {0, len(all_snrs) // 3, 2 * len(all_snrs) // 3, len(all_snrs) - 1}
        snrs = [all_snrs[i] for i in sorted(picks)]
    label = "ST-LPIPS" if lpips_col == "st_lpips" else "LPIPS"
    lines = [f"| scheme | Es/N0 dB | bytes | symbols | frames lost | PSNR | SSIM | MS-SSIM | {label} | "
             f"key PSNR | key SSIM | key MS-SSIM | key {label} |", "|---|---:" + "|---:" * 11 + "|"]
    for scheme in dict.fromkeys(r["scheme"] for r in rows):
        for snr in snrs:
            at = [r for r in rows if r["scheme"] == scheme and r["snr_db"] == snr]
            if not at:
                continue

            def mean(column):
                return float(np.mean([float(r[column]) for r in at]))

            lines.append(f"| {scheme} | {snr:g} | {mean('bytes'):.0f} | {mean('channel_symbols'):.0f} | "
                         f"{mean('frame_lost'):.0%} | {mean('psnr_db'):.2f} | {mean('ssim'):.3f} | {mean('ms_ssim'):.3f} | "
                         f"{mean(lpips_col):.3f} | {mean('key_psnr_db'):.2f} | {mean('key_ssim'):.3f} | "
                         f"{mean('key_ms_ssim'):.3f} | {mean('key_' + lpips_col):.3f} |")
    return "\n".join(lines)


def cmd_eval(args) -> int:
    from semcom.finetune import image_files
    from semcom.paths import bundled_photos

    images = image_files(args.images) if args.images else bundled_photos()
    if args.limit:
        images = images[: args.limit]
    cfg = SweepConfig(images=images, snr_db=parse_snr_grid(args.snr_db), budget_symbols=args.budget,
                      seeds=args.seeds, fading=args.channel, channel_mode=args.channel_mode,
                      schemes=tuple(s for s in args.schemes.split(",") if s) if args.schemes else (),
                      modulation=args.modulation, fec_code=args.fec, out=Path(args.out),
                      progress=not args.no_progress)
    run_sweep(cfg)
    return 0


def add_eval_parser(commands) -> None:
    from semcom.radio.packet import FEC_CODES, MODULATIONS

    p = commands.add_parser("eval", help="SNR sweep at equal channel symbols per image: ours vs classic baselines",
                            description=__doc__)
    p.add_argument("--images", help="folder of images (default: the bundled photos)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images")
    p.add_argument("--snr-db", default=DEFAULT_SNR_GRID, help="Es/N0 grid, start:stop:step (inclusive) or a,b,c")
    p.add_argument("--channel", choices=FADINGS, default="awgn",
                   help="awgn, or rayleigh block fading (one power gain per PDU, ideal AGC)")
    p.add_argument("--channel-mode", choices=CHANNEL_MODES, default="fast",
                   help="fast: drop PDUs with the PER measured on the flowgraph; flowgraph: run it every time")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET_SYMBOLS, help="channel symbols per image")
    p.add_argument("--seeds", type=int, default=3, help="channel seeds per point (0..N-1)")
    p.add_argument("--schemes", help=f"comma list (default: {','.join(default_schemes())}); known: "
                                     f"{','.join(sorted(SCHEMES))}")
    p.add_argument("--modulation", choices=MODULATIONS, default="qpsk")
    p.add_argument("--fec", choices=FEC_CODES, default="cc")
    p.add_argument("--out", default="out/eval", help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Let "--snr-db -4:14:2" through: argparse takes only plain negative numbers for option values.
    p._negative_number_matcher = re.compile(r"^-\d*\.?\d+([:,]-?\d*\.?\d+)*$")
    p.set_defaults(run=cmd_eval)
