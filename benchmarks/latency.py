#!/usr/bin/env python3
"""Encode and decode latency per image and per stage of the default pipeline, as one markdown table.

    python benchmarks/latency.py [--repeats 3] [--config preset.json]

Stages are timed by wrapping the backends the pipeline built (nothing is re-implemented here):
encode = regions | key (tile coding) | describe | text (compression) | sketch (thumbnail coding) | frame (the
rest: masks, PDUs); decode = key (tile decoding) | text | generate (the sketch's super-resolution included) |
frame (the rest: sketch decoding, blending, bookkeeping); "enc+dec" is the sum of the totals. Median of the repeats.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402
from semcom.codec.imageio import load_image  # noqa: E402
from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder  # noqa: E402
from semcom.paths import bundled_photos  # noqa: E402


class _Timed:
    """Proxy that adds the wall time of every call of ``methods`` to ``clock[stage]``."""

    def __init__(self, inner, stage: str, clock: dict, methods: tuple[str, ...]):
        self._inner, self._stage, self._clock, self._methods = inner, stage, clock, methods

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in self._methods:
            return attr

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._clock[self._stage] += time.perf_counter() - started
        return timed


ENCODE_STAGES = ("regions", "key", "describe", "text", "sketch")
DECODE_STAGES = ("key", "text", "generate")


def measure(image: np.ndarray, config: PipelineConfig) -> tuple[dict, dict]:
    """(encode stage -> s, decode stage -> s) for one image, stages wrapped as described above."""
    enc_clock, dec_clock = defaultdict(float), defaultdict(float)
    encoder, decoder = SemanticEncoder(config), SemanticDecoder(config)
    encoder.splitter = _Timed(encoder.splitter, "regions", enc_clock, ("split",))
    encoder.key_codec = _Timed(encoder.key_codec, "key", enc_clock, ("encode_tile", "encode_tiles"))
    encoder.describer = _Timed(encoder.describer, "describe", enc_clock, ("describe",))
    encoder.text_codec = _Timed(encoder.text_codec, "text", enc_clock, ("compress",))
    encoder._sketch = _Timed(encoder, "sketch", enc_clock, ("_sketch",))._sketch
    started = time.perf_counter()
    encoded = encoder.encode(image)
    encoded.to_pdus(config.pdu_bytes)
    enc_clock["total"] = time.perf_counter() - started
    enc_clock["frame"] = enc_clock["total"] - sum(enc_clock[s] for s in ENCODE_STAGES)

    frame = encoded.frame
    decoder._codec("key", frame.key_codec_id)        # build the codecs outside the timing
    decoder._codec("text", frame.text_codec_id)
    for (stage, codec_id), codec in list(decoder._codecs.items()):
        method = "decode_tile" if stage == "key" else "decompress"
        decoder._codecs[(stage, codec_id)] = _Timed(codec, stage, dec_clock, (method,))
    decoder.generator = _Timed(decoder.generator, "generate", dec_clock, ("generate",))
    started = time.perf_counter()
    decoder.decode(frame)
    dec_clock["total"] = time.perf_counter() - started
    dec_clock["frame"] = dec_clock["total"] - sum(dec_clock[s] for s in DECODE_STAGES)
    return dict(enc_clock), dict(dec_clock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", help="pipeline preset (JSON/YAML); default: built-in offline pipeline")
    args = parser.parse_args(argv)
    config = PipelineConfig.from_file(args.config) if args.config else PipelineConfig()
    measure(load_image(bundled_photos()[0]), config)            # warm-up: imports, model loads
    enc_cols = ENCODE_STAGES + ("frame", "total")
    dec_cols = DECODE_STAGES + ("frame", "total")
    both = "enc+dec"
    print(f"Machine: {machine()}; pipeline: regions={config.regions} key={config.key} "
          f"describe={config.describe} text={config.text} generate={config.generate} "
          f"{config.generate_options or ''} sketch_budget={config.sketch_budget}; "
          f"median of {args.repeats} runs, milliseconds\n")
    header = ["image", "size"] + [f"enc {c}" for c in enc_cols] + [f"dec {c}" for c in dec_cols] + [both]
    print("| " + " | ".join(header) + " |")
    print("|---|---|" + "---:|" * (len(header) - 2))
    for path in bundled_photos():
        image = load_image(path)
        runs = [measure(image, config) for _ in range(args.repeats)]
        enc = {c: 1000 * np.median([r[0].get(c, 0.0) for r in runs]) for c in enc_cols}
        dec = {c: 1000 * np.median([r[1].get(c, 0.0) for r in runs]) for c in dec_cols}
        total = 1000 * np.median([r[0]["total"] + r[1]["total"] for r in runs])
        cells = [path.name, f"{image.shape[1]}x{image.shape[0]}"] + [f"{enc[c]:.1f}" for c in enc_cols] + \
            [f"{dec[c]:.1f}" for c in dec_cols] + [f"{total:.1f}"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
