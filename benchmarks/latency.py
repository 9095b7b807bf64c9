#!/usr/bin/env python3
"""Encode and decode latency per image and per stage of the default pipeline, as one markdown table.

    python benchmarks/latency.py [--repeats 3] [--config preset.json]

Stages are timed by wrapping the backends the pipeline built (nothing is re-implemented here):
encode = regions | key (tile coding) | describe | text (compression) | sketch (thumbnail coding) | frame (the
rest: masks, PDUs); decode = key (tile decoding) | text | generate (the sketch's super-resolution included) |
frame (the rest: sketch decoding, blending, bookkeeping); "enc+dec" is the sum of the totals. Median of the repeats.

A second table times the generators of ``--generators`` (``name`` or ``name:model``) on the same received
frame, one after the other in each repeat, with the median of each one's time over the first one's: on a
machine shared with other work the ratios hold where the milliseconds do not. A third times the key-tile
coding of one frame with one thread and with ``tile_threads()`` (``SEMCOM_TILE_THREADS``), alternately, and
gives the median ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from dataclasses import replace
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
        methods = ("decode_tile", "decode_tiles_at") if stage == "key" else ("decompress",)
        decoder._codecs[(stage, codec_id)] = _Timed(codec, stage, dec_clock, methods)
    decoder.generator = _Timed(decoder.generator, "generate", dec_clock, ("generate",))
    started = time.perf_counter()
    decoder.decode(frame)
    dec_clock["total"] = time.perf_counter() - started
    dec_clock["frame"] = dec_clock["total"] - sum(dec_clock[s] for s in DECODE_STAGES)
    return dict(enc_clock), dict(dec_clock)


def generator_times(image: np.ndarray, config: PipelineConfig, generators: list[str], repeats: int) -> dict:
    """generator spec -> [s per repeat] of SemanticDecoder.generator.generate on one frame of ``image``."""
    frame = SemanticEncoder(config).encode(image).frame
    decoders = {}
    for spec in generators:
        name, _, model = spec.partition(":")
        decoders[spec] = SemanticDecoder(replace(config, generate=name, generate_options={"model": model} if model else {}))
    clocks = {spec: [] for spec in generators}
    for spec, decoder in decoders.items():
        decoder.decode(frame)                                   # warm-up
    for _ in range(repeats):
        for spec, decoder in decoders.items():
            clock = defaultdict(float)
            decoder.generator = _Timed(decoder.generator._inner if isinstance(decoder.generator, _Timed)
                                       else decoder.generator, "generate", clock, ("generate",))
            decoder.decode(frame)
            clocks[spec].append(clock["generate"])
    return clocks


def tile_thread_times(image: np.ndarray, config: PipelineConfig, repeats: int) -> dict[int, list[float]]:
    """threads -> [s per repeat] of the key stage of encode (same mask), 1 thread and tile_threads() alternately."""
    from semcom.codec.key.classical import tile_threads

    encoder = SemanticEncoder(config)
    mask = encoder.splitter.split(image)
    inner = encoder.key_codec
    configured = os.environ.get("SEMCOM_TILE_THREADS")
    counts = (1, tile_threads())
    clocks: dict[int, list[float]] = {n: [] for n in counts}
    try:
        for _ in range(repeats):
            for n in counts:
                os.environ["SEMCOM_TILE_THREADS"] = str(n)
                clock = defaultdict(float)
                encoder.key_codec = _Timed(inner, "key", clock, ("encode_tile", "encode_tiles"))
                encoder.encode(image, key_mask=mask)
                clocks[n].append(clock["key"])
    finally:
        if configured is None:
            os.environ.pop("SEMCOM_TILE_THREADS", None)
        else:
            os.environ["SEMCOM_TILE_THREADS"] = configured
    return clocks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", help="pipeline preset (JSON/YAML); default: built-in offline pipeline")
    parser.add_argument("--generators", default="esrgan:animevideov3,esrgan:x4plus,render",
                        help="generators timed against each other (name or name:model), comma-separated; '' skips")
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
    generators = [g for g in args.generators.split(",") if g]
    if generators:
        first = generators[0]
        print(f"\nGenerators on the same received frame (generate() only; median of {args.repeats}, milliseconds, "
              f"and the median of the time / {first}'s):\n")
        print("| image | " + " | ".join(generators) + " |")
        print("|---|" + "---:|" * len(generators))
        for path in bundled_photos():
            clocks = generator_times(load_image(path), config, generators, args.repeats)
            cells = [f"{1000 * np.median(clocks[g]):.1f} ({np.median(np.divide(clocks[g], clocks[first])):.2f}x)"
                     for g in generators]
            print(f"| {path.name} | " + " | ".join(cells) + " |")
    from semcom.codec.key.classical import tile_threads

    if tile_threads() == 1:
        print("\nKey-tile threads: tile_threads() is 1 here, nothing to compare")
        return 0
    print(f"\nKey-tile coding of one frame ({config.key}; median of {args.repeats}, milliseconds), one thread against "
          "tile_threads(), alternately:\n")
    print("| image | threads | 1 thread | N threads | 1 / N |")
    print("|---|---:|---:|---:|---:|")
    for path in bundled_photos():
        clocks = tile_thread_times(load_image(path), config, args.repeats)
        one, many = clocks
        print(f"| {path.name} | {many} | {1000 * np.median(clocks[one]):.1f} | {1000 * np.median(clocks[many]):.1f} | "
              f"{np.median(np.divide(clocks[one], clocks[many])):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
