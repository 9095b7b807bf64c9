"""``semcom eval``: every scheme at its best MCS, over SNR and channel bandwidth (CBR), on unseen photos.

For every image x scheme x CBR x MCS x SNR x seed the scheme fits its payload into the symbol budget
``CBR x 3HW`` (complex channel symbols; every header, preamble, access code, CRC and FEC bit counts),
crosses the channel and is scored. ``results_all_mcs.csv`` holds every MCS; ``results.csv`` one row per
(image, scheme, snr_db, cbr, seed) at the scheme's best MCS for that SNR and CBR: the one with the highest
mean, over all images and seeds, of the selection metric (``--select-by``; default the mean of key-region
and whole-image SSIM; a frame that did not arrive counts 0 there), the choice a radio adapting to the SNR
approximates. ``--mcs NAME`` forces one MCS instead. DeepJSCC is analog: no MCS (``analog`` in the column).
``ours-adapt`` plans its frame per image and SNR itself, an MCS per segment (its plan in the column, e.g.
``hdr bpsk-r12, key qpsk-r34``), from the same PER table: one choice, not one per MCS.

An MCS is skipped at an SNR (fast channel) when a faster MCS already loses under 0.1% of 1000-byte PDUs
there: it sends fewer bytes over an equally clean link, so it cannot score higher (``--every-mcs`` scores
it anyway). PSNR and SSIM are scored at every MCS; MS-SSIM, ST-LPIPS (a shift-tolerant AlexNet, ~10 GMAC
per 512x320 image) and label agreement only at the chosen MCS (empty in results_all_mcs.csv elsewhere).

The key region used for the key-region metrics is the same for every scheme: the configured splitter's
key mask at the wire format's mask resolution; the background is the rest. A frame that does not arrive
is scored as what the receiver shows (mid-grey, ``schemes.LOST_FRAME_GREY``); ``delivered`` says whether it
arrived, and the summary gives the delivered share beside every mean.

Channel draws: every (seed, image, SNR) has its own random stream per scheme; ``ours-adapt`` shares ours'
(common random numbers, ``Scheme.channel_stream``), so where it sends ours' frame on ours' MCS it meets the
same losses, and the difference between the two is the plan, not the draw.

Channel: ``fast`` drops PDUs with the packet error rates measured on the real flowgraph
(``gr-semcom/per_table.json``, semcom.eval.channel); ``flowgraph`` runs packet_tx -> channel_model ->
packet_rx for every transmission.
"""

from __future__ import annotations

import csv
import multiprocessing
import re
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from semcom.codec.pipeline import PipelineConfig, coarse_mask
from semcom.eval import metrics
from semcom.eval.channel import (CHANNEL_MODES, FADINGS, REGENERATE_COMMAND, FastChannel, FlowgraphChannel, PerTable,
                                 shipped_per_table)
from semcom.eval.schemes import SCHEMES, default_schemes

DEFAULT_SNR_GRID = "0,5,10,15"
DEFAULT_CBRS = "1/96,1/48,1/24,1/12"
DEFAULT_SEEDS = 1
SELECTION_METRICS = ("mean_ssim", "key_ssim", "whole_ssim")
CLEAN_PER = 1e-3                 # an MCS below this PER for a 1000-byte PDU makes every slower one pointless
CLEAN_LENGTH_BYTES = 1000
ANALOG = "analog"
COLUMNS = ("image", "scheme", "snr_db", "cbr", "seed", "mcs", "symbols", "delivered", "key_psnr", "key_ssim",
           "key_msssim", "key_stlpips", "whole_psnr", "whole_ssim", "whole_msssim", "whole_stlpips", "bg_psnr",
           "bg_ssim", "bg_stlpips", "label_agree", "budget_symbols", "bytes", "pdus_sent", "pdus_lost", "quality",
           "key_share", "generated_key_share", "text_lost", "channel", "channel_mode")


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


def parse_cbrs(text: str) -> list[Fraction]:
    """'1/96,1/24,0.05' -> channel bandwidth ratios (complex symbols per image / 3HW), each in (0, 1]."""
    try:
        cbrs = [Fraction(v.strip()).limit_denominator(100_000) for v in text.split(",") if v.strip()]
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--cbr takes a comma list of ratios like 1/24, got {text!r}") from None
    if not cbrs or any(not 0 < c <= 1 for c in cbrs):
        raise ValueError(f"every CBR must be in (0, 1], got {text!r}")
    return cbrs


def budget_symbols(cbr: Fraction, height: int, width: int) -> int:
    """Complex channel symbols per image at ``cbr`` (the JSCC convention: symbols / (3 H W))."""
    return int(cbr * 3 * height * width)


def evaluation_key_mask(image: np.ndarray, config: PipelineConfig) -> np.ndarray:
    """(H, W) bool: the configured splitter's key region at mask-block resolution, as the wire carries it."""
    from semcom.codec import registry

    split = registry.create("regions", config.regions, **config.regions_options).split(image)
    blocks = coarse_mask(split, config.mask_block_px)
    b = config.mask_block_px
    return np.repeat(np.repeat(blocks, b, axis=0), b, axis=1)[: image.shape[0], : image.shape[1]]


class Reference:
    """One original image, prepared once for scoring many received versions of it.

    Scores are cached by the received image's content (a grey lost frame, or the same full delivery on
    several MCS, is scored once). ``fidelity`` (PSNR, SSIM: what the MCS is chosen by) is cheap and scored
    for every MCS; ``perceptual`` (MS-SSIM, ST-LPIPS, label agreement: a five-scale SSIM pyramid, one
    shift-tolerant AlexNet forward of ~10 GMAC and one MobileNetV2 forward) only for the rows at the
    chosen MCS.
    """

    def __init__(self, image: np.ndarray, key_mask: np.ndarray):
        self.image, self.key_mask, self.background = image, key_mask, ~key_mask
        self._fidelity: dict[int, dict] = {}
        self._perceptual: dict[int, dict] = {}
        self.features = None            # the networks' view of the original: on the first perceptual score

    def _prepare_perceptual(self) -> None:
        from semcom.codec.describe import mobilenet_v2

        self.lpips = metrics.lpips_model()
        self.features = self.lpips.features(self.image)
        self.classifier = mobilenet_v2.shared_model()
        self.label = self._top1(self.image)

    def _top1(self, image: np.ndarray) -> int:
        from semcom.codec.describe import mobilenet_v2

        return int(np.argmax(mobilenet_v2.classify(self.classifier, [image], num_threads=1)[0]))

    def fidelity(self, test: np.ndarray) -> dict[str, float]:
        """PSNR and SSIM (Wang) of the whole image, the key region and the background (one SSIM map)."""
        digest = hash(test.tobytes())
        if digest not in self._fidelity:
            regions = [m for m in (self.key_mask, self.background) if m.any()]
            whole_psnr, *region_psnr = metrics.psnr_regions(self.image, test, [None, *regions])
            whole_ssim, ssim_full = metrics.ssim_map(self.image, test)
            scores = {"whole_psnr": whole_psnr, "whole_ssim": whole_ssim}
            for prefix, mask in (("key", self.key_mask), ("bg", self.background)):
                scores[f"{prefix}_psnr"] = region_psnr.pop(0) if mask.any() else float("nan")
                scores[f"{prefix}_ssim"] = float(ssim_full[mask].mean()) if mask.any() else float("nan")
            self._fidelity[digest] = scores
        return self._fidelity[digest]

    def perceptual(self, test: np.ndarray) -> dict[str, float]:
        """MS-SSIM of the whole image and key region (one pyramid), (ST-)LPIPS of the whole image, key region
        and background (one forward pass), top-1 label agreement."""
        digest = hash(test.tobytes())
        if digest not in self._perceptual:
            if self.features is None:
                self._prepare_perceptual()
            key = self.key_mask.any()
            whole_msssim, *key_msssim = metrics.ms_ssim_regions(self.image, test, [None, self.key_mask] if key
                                                                else [None])
            masks = [m for m in (self.key_mask, self.background) if m.any()]
            whole, regions = self.lpips.distances(self.features, test, masks)
            by_mask = dict(zip((id(m) for m in masks), regions))
            self._perceptual[digest] = {
                "whole_msssim": whole_msssim, "key_msssim": key_msssim[0] if key else float("nan"),
                "key_stlpips": by_mask.get(id(self.key_mask), float("nan")), "whole_stlpips": whole,
                "bg_stlpips": by_mask.get(id(self.background), float("nan")),
                "label_agree": float(self._top1(test) == self.label),
            }
        return self._perceptual[digest]


PERCEPTUAL_COLUMNS = ("whole_msssim", "key_msssim", "key_stlpips", "whole_stlpips", "bg_stlpips", "label_agree")


@dataclass
class SweepConfig:
    images: list[Path]
    snr_db: list[float]
    cbr: list[Fraction]
    seeds: int = DEFAULT_SEEDS
    fading: str = "awgn"
    channel_mode: str = "fast"
    schemes: tuple[str, ...] = ()
    mcs: str | None = None                 # force one MCS (fixed-MCS results) instead of the best per SNR
    select_by: str = "mean_ssim"
    every_mcs: bool = False
    out: Path = Path("out/eval")
    progress: bool = True
    jobs: int = 1
    per_table: PerTable | None = None      # fast channel: this table instead of the shipped one


def _selection_score(row: dict, select_by: str) -> float:
    """What the best-MCS rule maximises; a frame that did not arrive counts 0 (a radio that picks an MCS
    wants the frame delivered: scored as grey, a loss could beat a scheme's own background)."""
    if not row["delivered"]:
        return 0.0
    if select_by == "mean_ssim":
        return (row["key_ssim"] + row["whole_ssim"]) / 2 if row["key_ssim"] == row["key_ssim"] else row["whole_ssim"]
    return row[select_by]


class _ImageEvaluator:
    """Scores one image under every scheme, CBR, MCS, SNR and seed (one per worker process)."""

    def __init__(self, cfg: SweepConfig, table: PerTable | None):
        from semcom.radio.mcs import MCS_TABLE, mcs_by_name

        self.cfg, self.table = cfg, table
        self.config = PipelineConfig()
        self.channel = FastChannel(table, cfg.fading) if cfg.channel_mode == "fast" else FlowgraphChannel(fading=cfg.fading)
        self.schemes = [SCHEMES[n](self.config) for n in (cfg.schemes or default_schemes())]
        self.mcs_rows = [mcs_by_name(cfg.mcs)] if cfg.mcs else list(MCS_TABLE)

    def _mcs_to_score(self, snr_db: float) -> list:
        """The MCS rows worth scoring at ``snr_db``: from the fastest clean one upwards (see module doc)."""
        if self.cfg.every_mcs or self.cfg.mcs or self.table is None:
            return self.mcs_rows
        clean = [i for i, m in enumerate(self.mcs_rows)
                 if float(self.table.packet_error_rate(m.name, CLEAN_LENGTH_BYTES, snr_db)) < CLEAN_PER]
        return self.mcs_rows[max(clean):] if clean else self.mcs_rows

    def fidelity_rows(self, index: int, path: Path, outcomes: Path, progress=None) -> list[dict]:
        """Phase 1: every scheme, CBR, MCS, SNR and seed of one image, scored with the cheap metrics. Each
        distinct received image is saved in ``outcomes`` (``_outcome`` in the row names it) for phase 2."""
        from semcom.codec.imageio import load_image

        cfg = self.cfg
        image = load_image(path)
        h, w = image.shape[:2]
        key_mask = evaluation_key_mask(image, self.config)
        np.save(outcomes / f"{index}-mask.npy", key_mask)
        reference = Reference(image, key_mask)
        rows = []
        scored: dict = {}
        saved: dict[int, str] = {}
        prepared: list = []             # every payload of the image, kept alive (see payload_key)
        names = [scheme.name for scheme in self.schemes]
        for scheme_index, scheme in enumerate(self.schemes):
            stream = names.index(scheme.channel_stream) if scheme.channel_stream in names else scheme_index
            for cbr in cfg.cbr:
                budget = budget_symbols(cbr, h, w)
                for mcs in (self.mcs_rows if scheme.digital else [None]):
                    snrs = [s for s in cfg.snr_db if mcs is None or mcs in self._mcs_to_score(s)]
                    if not snrs:
                        continue
                    fixed = None if scheme.adapts_to_snr else scheme.prepare(image, key_mask, budget, mcs)
                    prepared.append(fixed)
                    for snr_index, snr in enumerate(cfg.snr_db):
                        if snr not in snrs:
                            continue
                        payload = scheme.prepare_at_snr(image, key_mask, budget, snr, self.table) \
                            if scheme.adapts_to_snr else fixed
                        # A frame's outcome depends on its PDUs and which arrived, not on the MCS (or plan)
                        # that carried them: PDU payloads are keyed by content, analog ones by identity
                        # (kept alive in ``prepared``, so no later payload of the image can reuse an id).
                        payload_key = hash(tuple(payload.pdus)) if scheme.digital or scheme.adapts_to_snr \
                            else id(payload)
                        for seed in range(cfg.seeds):
                            rng = np.random.default_rng([seed, index, snr_index, stream])
                            delivery = scheme.transmit(payload, self.channel, mcs, snr, rng)
                            key = (scheme.name, payload_key, scheme.outcome_key(payload, delivery))
                            if key not in scored:
                                outcome = scheme.reconstruct(payload, delivery)
                                digest = hash(outcome.image.tobytes())
                                if digest not in saved:
                                    saved[digest] = f"{index}-{len(saved)}.npy"
                                    np.save(outcomes / saved[digest], outcome.image)
                                scored[key] = (outcome, reference.fidelity(outcome.image), saved[digest])
                            outcome, quality, outcome_file = scored[key]
                            rows.append({"_outcome": outcome_file, "_index": index,
                                "image": Path(path).name, "scheme": scheme.name, "snr_db": snr, "cbr": str(cbr),
                                "seed": seed, "mcs": mcs.name if mcs else payload.rate.get("mcs", ANALOG),
                                "symbols": payload.channel_symbols,
                                "delivered": int(not outcome.frame_lost), **quality,
                                **dict.fromkeys(PERCEPTUAL_COLUMNS, float("nan")), "budget_symbols": budget,
                                "bytes": payload.bytes, "pdus_sent": delivery.sent, "pdus_lost": delivery.lost,
                                "quality": payload.rate.get("quality", ""), "key_share": round(float(key_mask.mean()), 4),
                                "generated_key_share": outcome.info.get("generated_key_share", ""),
                                "text_lost": outcome.info.get("text_lost", ""), "channel": cfg.fading,
                                "channel_mode": cfg.channel_mode,
                            })
                    if progress:
                        progress()
        return rows

    def units(self) -> int:
        """Progress units per image: (scheme, CBR, MCS) payloads."""
        return sum(len(self.cfg.cbr) * (len(self.mcs_rows) if s.digital else 1) for s in self.schemes)


def perceptual_scores(index: int, path: Path, outcome_files: list[str], outcomes: Path) -> dict[str, dict]:
    """Phase 2: ST-LPIPS and label agreement (the costly metrics) of one image's received images at the
    chosen MCS, by outcome file."""
    from semcom.codec.imageio import load_image

    reference = Reference(load_image(path), np.load(outcomes / f"{index}-mask.npy"))
    return {name: reference.perceptual(np.load(outcomes / name)) for name in outcome_files}


_WORKER: _ImageEvaluator | BaseException | None = None


def _init_worker(cfg: SweepConfig, table: PerTable | None) -> None:
    """A failure is kept and raised by the first task: an initializer that raises makes multiprocessing.Pool
    start a new worker, forever, instead of reporting it."""
    global _WORKER
    import torch

    torch.set_num_threads(1)
    try:
        _WORKER = _ImageEvaluator(cfg, table)
    except Exception as exc:
        _WORKER = exc


def _fidelity_in_worker(task):
    if isinstance(_WORKER, BaseException):
        raise RuntimeError(f"semcom eval worker could not start: {_WORKER}") from _WORKER
    index, path, outcomes = task
    return _WORKER.fidelity_rows(index, path, outcomes)


def _perceptual_in_worker(task):
    return task[0], perceptual_scores(*task)


def best_mcs_rows(rows: list[dict], select_by: str) -> list[dict]:
    """Per (scheme, snr, cbr): the rows of the MCS with the highest mean selection score over every image
    and seed (the most robust MCS on ties). One MCS for all images, like a radio that adapts to the SNR: a
    choice per image would pick the MCS whose one channel draw happened to be lucky. Rows not sent on one
    MCS of the table (analog, or a scheme's own plan per image) are kept whole: there is nothing to choose."""
    from semcom.radio.mcs import MCS_NAMES

    order = {name: i for i, name in enumerate(MCS_NAMES)}
    groups: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[(r["scheme"], r["snr_db"], r["cbr"])][r["mcs"] if r["mcs"] in order else None].append(r)
    best = []
    for by_mcs in groups.values():
        name = max(sorted(by_mcs, key=lambda m: order.get(m, len(order))),
                   key=lambda m: np.mean([_selection_score(r, select_by) for r in by_mcs[m]]))
        best += by_mcs[name]
    return best


def _write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()})


def run_sweep(cfg: SweepConfig) -> Path:
    """Runs the sweep, writes results.csv, results_all_mcs.csv, the plots and summary.md into ``cfg.out``."""
    from tqdm import tqdm

    if cfg.fading not in FADINGS:
        raise ValueError(f"unknown channel {cfg.fading!r}; choose one of {FADINGS}")
    if cfg.channel_mode not in CHANNEL_MODES:
        raise ValueError(f"unknown channel mode {cfg.channel_mode!r}; choose one of {CHANNEL_MODES}")
    if cfg.select_by not in SELECTION_METRICS:
        raise ValueError(f"unknown selection metric {cfg.select_by!r}; choose one of {SELECTION_METRICS}")
    unknown = [n for n in cfg.schemes if n not in SCHEMES]
    if unknown:
        raise ValueError(f"unknown schemes {unknown}; known: {sorted(SCHEMES)}")
    if cfg.mcs:
        from semcom.radio.mcs import mcs_by_name

        mcs_by_name(cfg.mcs)
    if not cfg.images:
        raise ValueError("no images to evaluate")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    table = cfg.per_table or (shipped_per_table() if cfg.channel_mode == "fast" else _optional_table())
    adapting = [n for n in cfg.schemes if SCHEMES[n].adapts_to_snr]
    if adapting and table is None:
        raise ValueError(f"{', '.join(adapting)} plans its frames with the PER table, and no fresh one "
                         f"ships; regenerate it: {REGENERATE_COMMAND}")
    started = time.monotonic()
    rows: list[dict] = []
    tasks = list(enumerate(cfg.images))
    with tempfile.TemporaryDirectory(prefix="semcom-eval-") as scratch:
        outcomes = Path(scratch)
        if cfg.jobs <= 1 or len(cfg.images) == 1:
            evaluator = _ImageEvaluator(cfg, table)
            with tqdm(total=evaluator.units() * len(cfg.images), unit="payload", disable=not cfg.progress,
                      dynamic_ncols=True, desc="scoring every MCS") as bar:
                for index, path in tasks:
                    bar.set_description(Path(path).stem)
                    rows += evaluator.fidelity_rows(index, path, outcomes, progress=lambda: bar.update(1))
            best = best_mcs_rows(rows, cfg.select_by)
            needed = _outcomes_needed(best)
            scores = {i: perceptual_scores(i, path, needed.get(i, []), outcomes)
                      for i, path in tqdm(tasks, unit="image", disable=not cfg.progress, dynamic_ncols=True,
                                          desc="ST-LPIPS at the chosen MCS")}
        else:
            context = multiprocessing.get_context("spawn")
            with context.Pool(cfg.jobs, initializer=_init_worker, initargs=(cfg, table)) as pool:
                with tqdm(total=len(tasks), unit="image", disable=not cfg.progress, dynamic_ncols=True,
                          desc="scoring every MCS") as bar:
                    for image_rows in pool.imap_unordered(_fidelity_in_worker, [(i, p, outcomes) for i, p in tasks]):
                        rows += image_rows
                        bar.update(1)
                best = best_mcs_rows(rows, cfg.select_by)
                needed = _outcomes_needed(best)
                scores = dict(tqdm(pool.imap_unordered(_perceptual_in_worker,
                                                       [(i, p, needed.get(i, []), outcomes) for i, p in tasks]),
                                   total=len(tasks), unit="image", disable=not cfg.progress, dynamic_ncols=True,
                                   desc="ST-LPIPS at the chosen MCS"))
    for row in best:
        row.update(scores[row["_index"]][row["_outcome"]], _best=True)
    for row in rows:
        del row["_outcome"], row["_index"]
    rows.sort(key=lambda r: (r["image"], r["scheme"], float(Fraction(r["cbr"])), r["snr_db"], r["mcs"], r["seed"]))
    best = [r for r in rows if r.pop("_best", False)]
    _write_csv(rows, out / "results_all_mcs.csv")
    csv_path = out / "results.csv"
    _write_csv(best, csv_path)
    elapsed = time.monotonic() - started
    plot_curves(best, out, cfg)
    (out / "summary.md").write_text(summary_markdown(best, cfg, elapsed) + "\n")
    print(f"wrote {csv_path} ({len(best)} rows; every MCS: results_all_mcs.csv, {len(rows)} rows), "
          f"curves_snr.png, curves_cbr.png, summary.md in {out} ({elapsed:.0f} s)")
    return csv_path


def _outcomes_needed(best: list[dict]) -> dict[int, list[str]]:
    needed: dict[int, set] = defaultdict(set)
    for row in best:
        needed[row["_index"]].add(row["_outcome"])
    return {i: sorted(names) for i, names in needed.items()}


def _optional_table() -> PerTable | None:
    try:
        return shipped_per_table()
    except Exception:
        return None


def _mean(rows: list[dict], column: str) -> float:
    values = [float(r[column]) for r in rows if r[column] == r[column]]
    return float(np.mean(values)) if values else float("nan")


def _schemes_in(rows):
    return list(dict.fromkeys(r["scheme"] for r in rows))


def plot_curves(rows: list[dict], out: Path, cfg: SweepConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lpips_label = "ST-LPIPS" if metrics.lpips_model().name == "st-lpips" else "LPIPS"
    panels = [("key_ssim", "key-region SSIM"), ("whole_ssim", "whole-image SSIM"),
              ("whole_stlpips", f"whole-image {lpips_label} (lower is better)"), ("label_agree", "top-1 label agreement")]
    cbrs = sorted({r["cbr"] for r in rows}, key=lambda c: float(Fraction(c)))
    snrs = sorted({r["snr_db"] for r in rows})
    note = (f"{len(cfg.images)} images x {cfg.seeds} seeds, {cfg.fading.upper()}, {cfg.channel_mode} channel, "
            f"{'MCS ' + cfg.mcs if cfg.mcs else 'best MCS per scheme'}; a lost frame is scored as mid-grey")
    for name, axis_values, axis_key, label, group_values, group_key, group_label in (
            ("curves_snr.png", snrs, "snr_db", "Es/N0 (dB)", cbrs, "cbr", "CBR"),
            ("curves_cbr.png", cbrs, "cbr", "CBR (complex symbols / 3HW)", snrs, "snr_db", "SNR dB")):
        fig, axes = plt.subplots(len(panels), len(group_values), figsize=(3.6 * len(group_values), 2.6 * len(panels)),
                                 squeeze=False, sharex=True)
        for col, group in enumerate(group_values):
            at = [r for r in rows if r[group_key] == group]
            for row_index, (metric, title) in enumerate(panels):
                ax = axes[row_index][col]
                for scheme in _schemes_in(rows):
                    points = [_mean([r for r in at if r["scheme"] == scheme and r[axis_key] == x], metric)
                              for x in axis_values]
                    xs = [float(Fraction(x)) if axis_key == "cbr" else x for x in axis_values]
                    ax.plot(xs, points, marker="o", markersize=3, label=scheme)
                if axis_key == "cbr":
                    ax.set_xscale("log", base=2)
                ax.set_title(f"{title}, {group_label} {group}", fontsize=8)
                ax.grid(alpha=0.3)
                if row_index == len(panels) - 1:
                    ax.set_xlabel(label, fontsize=8)
        axes[0][0].legend(fontsize=6)
        fig.suptitle(note, fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=70)
        plt.close(fig)


def summary_markdown(rows: list[dict], cfg: SweepConfig, elapsed_s: float) -> str:
    """The tables the README shows: per CBR, each scheme's key-region SSIM and whole-image ST-LPIPS per SNR,
    with the delivered share and the chosen MCS."""
    lpips_label = "ST-LPIPS" if metrics.lpips_model().name == "st-lpips" else "LPIPS"
    cbrs = sorted({r["cbr"] for r in rows}, key=lambda c: float(Fraction(c)))
    snrs = sorted({r["snr_db"] for r in rows})
    lines = [f"{len(cfg.images)} images x {cfg.seeds} seeds, {cfg.fading.upper()}, {cfg.channel_mode} channel, "
             f"{'MCS ' + cfg.mcs if cfg.mcs else 'each scheme at its best MCS (by ' + cfg.select_by + ')'}, "
             f"{elapsed_s:.0f} s. Cell: key-region SSIM / whole-image {lpips_label} / top-1 label agreement "
             "(frames delivered, MCS chosen). A lost frame is scored as mid-grey."]
    for cbr in cbrs:
        lines += ["", f"**CBR {cbr}**", "", "| scheme | " + " | ".join(f"{s:g} dB" for s in snrs) + " |",
                  "|---" + "|---" * len(snrs) + "|"]
        for scheme in _schemes_in(rows):
            cells = []
            for snr in snrs:
                at = [r for r in rows if r["scheme"] == scheme and r["cbr"] == cbr and r["snr_db"] == snr]
                if not at:
                    cells.append("")
                    continue
                mcs = Counter(r["mcs"] for r in at).most_common(1)[0][0]
                cells.append(f"{_mean(at, 'key_ssim'):.3f} / {_mean(at, 'whole_stlpips'):.3f} / "
                             f"{_mean(at, 'label_agree'):.2f} ({_mean(at, 'delivered'):.0%}, {mcs})")
            lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_eval(args) -> int:
    from semcom.eval.photos import default_eval_photos_dir
    from semcom.finetune import image_files

    folder = Path(args.images) if args.images else default_eval_photos_dir()
    if not folder.is_dir():
        raise SystemExit(f"semcom eval: no evaluation photos in {folder}; install them with "
                         "`bash scripts/eval_photos.sh` or pass --images DIR")
    images = image_files(folder)
    if args.limit:
        images = images[: args.limit]
    cfg = SweepConfig(images=images, snr_db=parse_snr_grid(args.snr_db), cbr=parse_cbrs(args.cbr), seeds=args.seeds,
                      fading=args.channel, channel_mode="flowgraph" if args.flowgraph else args.channel_mode,
                      schemes=tuple(s for s in args.schemes.split(",") if s) if args.schemes else (),
                      mcs=args.mcs, select_by=args.select_by, every_mcs=args.every_mcs, out=Path(args.out),
                      progress=not args.no_progress, jobs=args.jobs)
    run_sweep(cfg)
    return 0


def add_eval_parser(commands) -> None:
    from semcom.radio.mcs import MCS_NAMES

    p = commands.add_parser("eval", help="every scheme at its best MCS over SNR and CBR, on the evaluation photos",
                            description=__doc__)
    p.add_argument("--images", help="folder of images (default: the evaluation photos of scripts/eval_photos.sh)")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images")
    p.add_argument("--snr-db", default=DEFAULT_SNR_GRID, help="Es/N0 grid, start:stop:step (inclusive) or a,b,c")
    p.add_argument("--cbr", default=DEFAULT_CBRS, help="channel bandwidth ratios, complex symbols per image / 3HW")
    p.add_argument("--channel", choices=FADINGS, default="awgn",
                   help="awgn, or rayleigh block fading (one power gain per PDU, ideal AGC)")
    p.add_argument("--channel-mode", choices=CHANNEL_MODES, default="fast",
                   help="fast: drop PDUs with the PER measured on the flowgraph; flowgraph: run it every time")
    p.add_argument("--flowgraph", action="store_true", help="same as --channel-mode flowgraph")
    p.add_argument("--mcs", choices=MCS_NAMES, help="every digital scheme on this MCS (default: each at its best)")
    p.add_argument("--select-by", choices=SELECTION_METRICS, default="mean_ssim",
                   help="what 'best MCS' maximises (mean over images and seeds, a lost frame 0); mean_ssim = (key SSIM + whole SSIM) / 2")
    p.add_argument("--every-mcs", action="store_true", help="also score MCS that a faster clean MCS dominates")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="channel seeds per point (0..N-1)")
    p.add_argument("--schemes", help=f"comma list (default: {','.join(default_schemes())}); known: "
                                     f"{','.join(sorted(SCHEMES))}")
    p.add_argument("--jobs", type=int, default=2, help="images evaluated in parallel (processes)")
    p.add_argument("--out", default="out/eval", help="output directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # Let "--snr-db -4:14:2" through: argparse takes only plain negative numbers for option values.
    p._negative_number_matcher = re.compile(r"^-\d*\.?\d+([:,]-?\d*\.?\d+)*$")
    p.set_defaults(run=cmd_eval)
