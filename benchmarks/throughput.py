#!/usr/bin/env python3
"""Flowgraph throughput with and without the semantic blocks in front, in one run, as a markdown table.

    python benchmarks/throughput.py [--images 8 --snr-db 20]

A) PHY only: the frames' PDUs (encoded beforehand) from a message source through
   packet_tx -> channel_model -> packet_rx (semcom.radio.pdu_link).
B) Whole link: semantic_tx (encodes the same images on its worker thread) -> packet_tx -> channel_model
   -> packet_rx -> semantic_rx (decodes them) (semcom.radio.loopback.loopback_flowgraph).
Throughput = complex samples through the channel / wall time until the last PDU (A) or image (B) came
out; ratio = B / A. Peak memory: the process's peak RSS after each part (A runs first).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402
from semcom.codec.imageio import load_image  # noqa: E402
from semcom.codec.pipeline import PipelineConfig, SemanticEncoder  # noqa: E402
from semcom.paths import bundled_photos  # noqa: E402
from semcom.radio.loopback import LinkConfig, loopback_flowgraph  # noqa: E402
from semcom.radio.pdu_link import PhyConfig, send_pdus  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phy_only(pdus: list[bytes], snr_db: float, phy: PhyConfig) -> tuple[float, int, int]:
    """(seconds, samples, PDUs delivered)."""
    result = send_pdus(pdus, snr_db, phy, settle_s=1.0)
    busy_s = result.elapsed_s - (1.0 if len(result.received) < len(pdus) else 0.0)
    return busy_s, result.samples, len(result.received)


def whole_link(images, snr_db: float, link: LinkConfig, config: PipelineConfig, timeout_s: float = 300):
    """(seconds, samples, images out)."""
    tb = loopback_flowgraph(link, config)
    started = time.monotonic()
    tb.start()
    try:
        for image in images:
            tb.tx.send(image)
        tb.rx.wait_for_images(len(images), timeout_s=timeout_s)
        elapsed = time.monotonic() - started
    finally:
        tb.stop()
        tb.wait()
    return elapsed, int(tb.demodulator.correlator.nitems_read(0)), tb.rx.images_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="images per part (the bundled photos, cycled)")
    parser.add_argument("--snr-db", type=float, default=20.0)
    args = parser.parse_args(argv)
    config = PipelineConfig()
    link = LinkConfig(snr_db=args.snr_db)      # a PhyConfig too: part A runs the very same PHY
    photos = bundled_photos()
    images = [load_image(photos[i % len(photos)]) for i in range(args.images)]
    encoder = SemanticEncoder(config)
    pdus = [p for i, image in enumerate(images) for p in encoder.encode(image, image_id=i).to_pdus(config.pdu_bytes)]
    rss_start = peak_rss_mb()

    a_s, a_samples, a_out = phy_only(pdus, args.snr_db, link)
    rss_a = peak_rss_mb()
    b_s, b_samples, b_out = whole_link(images, args.snr_db, link, config)
    rss_b = peak_rss_mb()
    a_rate, b_rate = a_samples / a_s, b_samples / b_s
    print(f"Machine: {machine()}; {link.modulation.upper()} + {link.fec_code}, {link.samples_per_symbol} samples/symbol, "
          f"{args.snr_db:g} dB; {args.images} images ({len(pdus)} PDUs)\n")
    print("| part | wall s | channel samples | samples/s | delivered | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| A: PDUs -> packet_tx -> channel -> packet_rx | {a_s:.2f} | {a_samples} | {a_rate:,.0f} | "
          f"{a_out}/{len(pdus)} PDUs | {rss_a:.0f} |")
    print(f"| B: semantic_tx -> ... -> semantic_rx | {b_s:.2f} | {b_samples} | {b_rate:,.0f} | "
          f"{b_out}/{len(images)} images | {rss_b:.0f} |")
    print(f"\nthroughput ratio B/A: {b_rate / a_rate:.2f} (peak RSS before the flowgraphs: {rss_start:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
