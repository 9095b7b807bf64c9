#!/usr/bin/env python3
"""Soak: many small images through ONE long-running loopback flowgraph at mixed SNRs.

Every image must either come out of the receiver or be accounted lost (header lost, or nothing
arrived) within a timeout, and the process RSS must stop growing after a warm-up.

The SNR changes every ``--per-snr`` images. The channel's noise source runs ahead of the signal by a
buffer, so the first image after a change still sees some of the previous noise level: the
per-SNR outcome counts are indicative, the totals are exact.

    python benchmarks/soak.py --images 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from semcom.codec.imageio import load_image  # noqa: E402
from semcom.codec.pipeline import PipelineConfig  # noqa: E402
from semcom.paths import bundled_photos  # noqa: E402

SNRS_DB = (20.0, 10.0, 7.0, 5.0, 3.0)     # qpsk/cc: clean, some loss, heavy loss, header loss, silence
CROP_PX = 96
RX_TIMEOUT_S = 0.3
QUIET_S = 0.6           # after the transmitter is idle: nothing arrived for this long = nothing will
STUCK_S = 30.0          # an image neither out nor accounted lost after this long = a stuck flowgraph


def read_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def crops(count: int, seed: int = 0, size_px: int = CROP_PX) -> list[np.ndarray]:
    """``count`` random ``size_px`` squares of the bundled photos, (size, size, 3) uint8 each."""
    photos = [load_image(p) for p in bundled_photos()]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        photo = photos[rng.integers(len(photos))]
        y = rng.integers(photo.shape[0] - size_px + 1)
        x = rng.integers(photo.shape[1] - size_px + 1)
        out.append(np.ascontiguousarray(photo[y: y + size_px, x: x + size_px]))
    return out


@dataclass
class SoakResult:
    images: int
    outcomes: Counter = field(default_factory=Counter)     # out_complete / out_partial / header_lost / nothing_arrived / stuck
    by_snr: dict = field(default_factory=dict)             # snr_db -> Counter of outcomes
    rss_mb: list = field(default_factory=list)             # (images done, RSS MB) samples
    elapsed_s: float = 0.0
    rx_stats: dict = field(default_factory=dict)

    def rss_growth_mb(self, warmup_share: float = 0.2) -> float:
        """RSS growth after warm-up, as a leak would cause it: the median growth between successive samples
        times their number. A leak grows RSS in every interval; the allocator grows it in one-off steps
        (seen in CI: +15 and +10 MB in two intervals of nine, flat before and after), which the
        difference of first and last samples read as a leak."""
        after = [mb for done, mb in self.rss_mb if done >= warmup_share * self.images]
        if len(after) < 4:
            return 0.0
        steps = np.diff(after)
        return float(np.median(steps) * len(steps))

    def summary(self) -> dict:
        d = asdict(self)
        d["outcomes"] = dict(self.outcomes)
        d["by_snr"] = {str(k): dict(v) for k, v in self.by_snr.items()}
        d["rss_mb"] = [(n, round(mb, 1)) for n, mb in self.rss_mb]
        d["rss_growth_after_warmup_mb"] = round(self.rss_growth_mb(), 1)
        d["elapsed_s"] = round(self.elapsed_s, 1)
        return d


def soak(n_images: int, snrs_db=SNRS_DB, rss_every: int = 25, seed: int = 0, per_snr: int = 10, link=None,
         config: PipelineConfig | None = None, progress=None) -> SoakResult:
    """Send ``n_images`` crops one after another through one flowgraph, ``per_snr`` images per entry
    of ``snrs_db`` (cycled)."""
    from semcom.radio import packet
    from semcom.radio.loopback import LinkConfig, loopback_flowgraph

    link = link or LinkConfig()
    tb = loopback_flowgraph(link, config or PipelineConfig(), rx_timeout_s=RX_TIMEOUT_S)
    images = crops(n_images, seed)
    result = SoakResult(n_images)
    started = time.monotonic()
    tb.start()
    try:
        for i, image in enumerate(images):
            snr_db = snrs_db[(i // per_snr) % len(snrs_db)]
            tb.channel.set_noise_voltage(packet.noise_voltage_for_snr(snr_db, link.modulation, link.samples_per_symbol))
            outcome = _send_one(tb, image)
            result.outcomes[outcome] += 1
            result.by_snr.setdefault(snr_db, Counter())[outcome] += 1
            if outcome == "stuck":
                break
            if (i + 1) % rss_every == 0 or i + 1 == n_images:
                result.rss_mb.append((i + 1, read_rss_mb()))
                if progress:
                    progress(result)
    finally:
        tb.stop()
        tb.wait()
    result.elapsed_s = time.monotonic() - started
    result.rx_stats = dict(tb.rx.stats)
    return result


def _send_one(tb, image: np.ndarray) -> str:
    rx = tb.rx
    before = dict(rx.stats)
    sent_s = time.monotonic()
    tb.tx.send(image)
    tb.tx.idle.wait(STUCK_S)
    idle_s = time.monotonic()
    while True:
        s = rx.stats
        if s["images_out"] > before["images_out"]:
            return "out_complete" if s["frames_complete"] > before["frames_complete"] else "out_partial"
        if s["frames_without_header"] > before["frames_without_header"]:
            return "header_lost"
        if s["decode_errors"] > before["decode_errors"]:
            return "decode_error"
        now = time.monotonic()
        if rx.assembler.open_frames == 0 and now - max(rx.last_pdu_s, idle_s) > QUIET_S + RX_TIMEOUT_S:
            return "nothing_arrived"
        if now - sent_s > STUCK_S:
            return "stuck"
        rx.wait_for_images(before["images_out"] + 1, timeout_s=0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--snr-db", type=float, nargs="+", default=SNRS_DB, help="Es/N0 values, cycled")
    parser.add_argument("--per-snr", type=int, default=10, help="images sent at each SNR before the next")
    parser.add_argument("--rss-every", type=int, default=50, help="sample RSS every N images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)

    def progress(r: SoakResult):
        done, mb = r.rss_mb[-1]
        print(f"{done:>6} images  RSS {mb:7.1f} MB  {dict(r.outcomes)}", flush=True)

    result = soak(args.images, tuple(args.snr_db), args.rss_every, args.seed, args.per_snr, progress=progress)
    summary = result.summary()
    print(json.dumps({k: summary[k] for k in ("images", "outcomes", "by_snr", "rss_growth_after_warmup_mb",
                                              "elapsed_s", "rx_stats")}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    ok = result.outcomes["stuck"] == 0 and result.outcomes["decode_error"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
