#!/usr/bin/env python3
"""Forged flood: what a transmitter in radio range can cost the receiver (semantic_rx).

The attacker sends ``--pairs`` forged frames, each just a header and a text PDU (about 300 bytes),
claiming a big image with no key tiles: complete at once, so each would cost a full-size decode. In
the middle of the flood a genuine image (the bundled chelsea.png resized to 512 px wide) is sent.
Measured in one run: the receiver's RSS growth above rest (sampled every 10 ms; rest = after one
genuine image was decoded, so the models are loaded), how long after its last PDU the genuine image
came out, and the receiver's counters.

Two floods, both at the receiver's default limits:
- ``3840x2160`` (the issue's attack): above the default ``max_pixels``, dropped at the header.
- ``1920x1080``: exactly the default ``max_pixels``, so accepted and decoded: the decode queue
  (``max_queued_frames``, oldest dropped) is what bounds memory and the genuine image's wait.

    python benchmarks/flood.py
    python benchmarks/flood.py --claims 3840x2160 --pairs 100 --json out/flood.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from semcom.codec.frame import SemanticFrame  # noqa: E402
from semcom.codec.imageio import load_image  # noqa: E402
from semcom.codec.pipeline import SemanticEncoder  # noqa: E402
from semcom.paths import data_path  # noqa: E402
from semcom.radio.semantic_rx import semantic_rx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

GENUINE_ID, FORGED_FIRST_ID = 7, 1000
DEFAULT_CLAIMS = ("3840x2160", "1920x1080")
GENUINE_WIDTH_PX = 512
OUT_TIMEOUT_S = 30.0


def genuine_image() -> np.ndarray:
    photo = Image.open(data_path("photos", "chelsea.png")).convert("RGB")
    height = round(photo.height * GENUINE_WIDTH_PX / photo.width)
    return np.asarray(photo.resize((GENUINE_WIDTH_PX, height), Image.LANCZOS))


def forged_pairs(count: int, width: int, height: int, text: bytes) -> list[bytes]:
    """``count`` header+text PDU pairs claiming ``width`` x ``height`` images with no key region."""
    pdus = []
    for i in range(count):
        grid = (-(-height // 64), -(-width // 64))
        frame = SemanticFrame(FORGED_FIRST_ID + i, width, height, 64, 64, 1, 1, np.zeros(grid, bool), text=text)
        header, text_pdu = frame.to_pdus(header_repeats=1)
        pdus += [header, text_pdu]
    return pdus


class RssSampler:
    """Peak RSS of this process, sampled every ``period_s`` on a thread."""

    def __init__(self, period_s: float = 0.01):
        self.process = psutil.Process()
        self.period_s = period_s
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.period_s):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def wait_for_image(rx: semantic_rx, image_id: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    with rx.image_ready:
        while not any(i == image_id for i, _ in rx.reconstructions):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            rx.image_ready.wait(remaining)
    return True


def flood(claim: str, pairs: int, **rx_kwargs) -> dict:
    """One flood against a fresh, started semantic_rx; returns the figures (see the module docstring)."""
    width, height = (int(v) for v in claim.lower().split("x"))
    encoder = SemanticEncoder()
    encoded = encoder.encode(genuine_image(), image_id=GENUINE_ID)
    genuine = encoded.to_pdus()
    warmup = dataclasses.replace(encoded.frame, image_id=GENUINE_ID + 1, key_tiles=dict(encoded.frame.key_tiles)).to_pdus()
    forged = forged_pairs(pairs, width, height, encoded.frame.text)

    rx = semantic_rx(timeout_s=0.5, **rx_kwargs)
    rx.start()
    try:
        for pdu in warmup:
            rx.push_pdu(pdu)
        assert wait_for_image(rx, GENUINE_ID + 1, OUT_TIMEOUT_S), "warm-up image did not come out"
        rest = psutil.Process().memory_info().rss
        half = len(forged) // 2 // 2 * 2
        with RssSampler() as rss:
            started = time.monotonic()
            for pdu in forged[:half]:
                rx.push_pdu(pdu)
            for pdu in genuine:
                rx.push_pdu(pdu)
            genuine_sent = time.monotonic()
            for pdu in forged[half:]:
                rx.push_pdu(pdu)
            flood_sent = time.monotonic()
            out = wait_for_image(rx, GENUINE_ID, OUT_TIMEOUT_S)
            genuine_out = time.monotonic()
    finally:
        rx.stop()           # drains what is still queued
    stats = rx.stats
    return {"claim": claim, "pairs": pairs, "flood_bytes": sum(map(len, forged)),
            "max_pixels": rx.assembler.max_pixels, "max_queued_frames": rx.max_queued_frames,
            "rss_rest_mb": round(rest / 1e6, 1), "rss_added_peak_mb": round((rss.peak - rest) / 1e6, 1),
            "flood_push_s": round(flood_sent - started, 3),
            "genuine_out": out,
            "genuine_latency_s": round(genuine_out - genuine_sent, 2) if out else None,
            "frames_too_large": stats["frames_too_large"], "frames_dropped_overload": stats["frames_dropped_overload"],
            "images_out": stats["images_out"] - 1, "decode_errors": stats["decode_errors"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", nargs="+", default=list(DEFAULT_CLAIMS), help="WxH the forged headers claim")
    parser.add_argument("--pairs", type=int, default=100, help="forged header+text pairs per flood")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = {"machine": machine(), "floods": [flood(claim, args.pairs) for claim in args.claims]}
    for r in results["floods"]:
        latency = f"{r['genuine_latency_s']} s" if r["genuine_out"] else "NOT OUT (dropped)"
        print(f"{r['pairs']} forged pairs ({r['flood_bytes']} B) claiming {r['claim']}: RSS +{r['rss_added_peak_mb']} MB "
              f"peak over {r['rss_rest_mb']} MB rest; genuine 512-px image out {latency} after its last PDU; "
              f"{r['frames_too_large']} dropped at the header, {r['frames_dropped_overload']} dropped from the "
              f"decode queue, {r['images_out']} decoded")
    print(results["machine"])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
