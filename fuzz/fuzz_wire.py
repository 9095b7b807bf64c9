#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris/libFuzzer) of everything a receiver does with bytes off the air.

The first input byte picks a target, the rest is its input:

    0  PDU stream -> FrameAssembler.push -> flush -> SemanticDecoder.decode   (u16-length-prefixed PDUs)
    1  SemanticFrame.from_bytes
    2  text codec decompress
    3  key codec decode_tile (codec chosen by the next byte, tile size by the one after)
    4  sketch decode (for a 512x512 frame)

A ``ValueError`` (``WireError`` is one) is an accepted outcome; any other exception, a hang or running
past libFuzzer's RSS limit is a finding. The seed corpus is made from the real PDUs of the bundled
photo ``chelsea.png``, so mutation starts from well-formed frames.

    python fuzz/fuzz_wire.py -runs=20000 -seed=1          # fixed run (CI)
    python fuzz/fuzz_wire.py corpus_dir -max_total_time=600 # open-ended, keeps the corpus

With ``-runs`` and no corpus directory the seeds are passed with ``-seed_inputs`` and nothing is kept.
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from pathlib import Path

import atheris

# Frames may name hub-model codecs (sd-vae); offline, building one must fail fast, not retry a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread for torch's tiny per-tile calls: with OpenMP threads spinning against any other busy
# process on a 2-core machine, the fixed run fell from 267 to 11 inputs/s (measured beside a training run).
os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

with atheris.instrument_imports(include=["semcom"]):
    from semcom.codec import registry
    from semcom.codec.frame import FrameAssembler, SemanticFrame
    from semcom.codec.imageio import load_image
    from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder
    from semcom.codec.sketch import decode_sketch
    from semcom.paths import data_path

import numpy as np

TARGET_PDUS, TARGET_FRAME_BYTES, TARGET_TEXT, TARGET_TILE, TARGET_SKETCH = range(5)
MAX_PDUS_PER_INPUT = 64
# Frames may legally claim up to 8192x8192 pixels, which costs the decoder seconds and gigabytes
# (reported separately); fuzzing decodes only frames up to this size so each run stays fast.
MAX_FUZZ_DECODE_PIXELS = 512 * 512
TILE_SIZES = ((32, 32), (64, 64), (16, 16), (32, 17), (1, 1))

inputs_tried = 0
outcomes = {"decoded": 0, "value_error": 0, "dropped": 0}


# decode_tile is fuzzed directly for these (hub-model codecs are only reached through frames).
DIRECT_KEY_CODECS = ("jpeg", "learned", "webp")


def _key_codecs() -> list:
    codecs = []
    for name in DIRECT_KEY_CODECS:
        try:
            codecs.append(registry.create("key", name))
        except (FileNotFoundError, ImportError):     # e.g. learned codec weights not trained here
            pass
    return codecs


def _warm_decoder() -> SemanticDecoder:
    """Build (or fail once to build) every codec a frame can name, so no run pays a model load."""
    # The layout renderer, not the default super-resolver: the fuzzed surface is the parsing (sketch
    # decoding included), and a model run per input would slow the fixed run a hundredfold.
    decoder = SemanticDecoder(PipelineConfig(generate="render"))
    for codec_id in registry.codec_names("key"):
        try:
            decoder._codec("key", codec_id)
        except ValueError:
            pass
    return decoder


TEXT_CODEC = registry.create("text", "zlib")
KEY_CODECS = _key_codecs()
DECODER = _warm_decoder()


def pack_pdus(pdus: list[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(p)) + p for p in pdus)


def unpack_pdus(data: bytes) -> list[bytes]:
    pdus, offset = [], 0
    while offset + 2 <= len(data) and len(pdus) < MAX_PDUS_PER_INPUT:
        (length,) = struct.unpack_from(">H", data, offset)
        offset += 2
        pdus.append(data[offset: offset + length])
        offset += length
    return pdus


def seed_inputs() -> list[bytes]:
    """Target-tagged inputs built from the real PDUs of chelsea.png (whole photo and a small crop)."""
    image = load_image(data_path("photos", "chelsea.png"))
    encoder = SemanticEncoder()
    seeds = []
    for crop in (image, image[100:196, 150:278]):
        frame = encoder.encode(crop, image_id=1).frame
        pdus = frame.to_pdus()
        seeds.append(bytes([TARGET_PDUS]) + pack_pdus(pdus))
        seeds.append(bytes([TARGET_PDUS]) + pack_pdus(pdus[::-1][: len(pdus) // 2] + pdus[:1]))
        seeds.append(bytes([TARGET_FRAME_BYTES]) + frame.to_bytes())
        seeds.append(bytes([TARGET_TEXT]) + frame.text)
        if frame.sketch is not None:
            seeds.append(bytes([TARGET_SKETCH]) + frame.sketch)
        tiles = sorted(frame.key_tiles.items())
        for c, codec in enumerate(KEY_CODECS):
            # tile 0 of each codec at a full tile size (size choice 0: 32x32 or 1: 64x64)
            y0, x0, y1, x1 = frame.tile_box(tiles[0][0])
            tile = np.ascontiguousarray(crop[y0:y1, x0:x1])
            size = next(i for i, s in enumerate(TILE_SIZES) if s == tile.shape[:2]) if tile.shape[:2] in TILE_SIZES else 0
            seeds.append(bytes([TARGET_TILE, c, size]) + codec.encode_tile(tile))
    return seeds


def fuzz_pdus(data: bytes) -> None:
    assembler = FrameAssembler(timeout_s=1.0, max_open_frames=4, clock=lambda: 0.0)
    frames = []
    pdus = unpack_pdus(data)
    for pdu in pdus:
        frames += assembler.push(pdu)
        assert assembler.open_frames <= 4
    frames += assembler.flush_all()
    s = assembler.stats
    assert s.pdus_accepted + s.pdus_duplicate + s.pdus_dropped == len(pdus)
    outcomes["dropped"] += s.pdus_dropped
    for frame in frames:
        decode(frame)


def decode(frame: SemanticFrame) -> None:
    if frame.width * frame.height > MAX_FUZZ_DECODE_PIXELS:
        return
    recon = DECODER.decode(frame)
    assert recon.image.shape == (frame.height, frame.width, 3)
    assert 0.0 <= recon.generated_share <= 1.0
    outcomes["decoded"] += 1


def fuzz_tile(data: bytes) -> None:
    if len(data) < 2 or not KEY_CODECS:
        return
    codec = KEY_CODECS[data[0] % len(KEY_CODECS)]
    height, width = TILE_SIZES[data[1] % len(TILE_SIZES)]
    tile = codec.decode_tile(data[2:], height, width)
    assert tile.shape == (height, width, 3) and tile.dtype == np.uint8


def test_one_input(data: bytes) -> None:
    global inputs_tried
    inputs_tried += 1
    if not data:
        return
    target, body = data[0] % 5, data[1:]
    try:
        if target == TARGET_PDUS:
            fuzz_pdus(body)
        elif target == TARGET_FRAME_BYTES:
            decode(SemanticFrame.from_bytes(body))
        elif target == TARGET_TEXT:
            text = TEXT_CODEC.decompress(body)
            assert isinstance(text, str)
        elif target == TARGET_SKETCH:
            thumbnail = decode_sketch(body, 512, 512)
            assert thumbnail.dtype == np.uint8 and thumbnail.shape[2] == 3
        else:
            fuzz_tile(body)
    except ValueError:
        outcomes["value_error"] += 1


def _report() -> None:
    print(f"fuzz_wire: {inputs_tried} inputs tried ({outcomes['decoded']} frames decoded, "
          f"{outcomes['value_error']} ValueErrors, {outcomes['dropped']} PDUs dropped)", flush=True)


def main(argv: list[str]) -> None:
    runs = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("-runs=")), 0)
    corpus_dirs = [a for a in argv[1:] if not a.startswith("-")]
    seed_dir = Path(tempfile.mkdtemp(prefix="fuzz_wire_seeds_"))
    seed_files = []
    for i, seed in enumerate(seed_inputs()):
        seed_files.append(seed_dir / f"seed_{i:02d}")
        seed_files[-1].write_bytes(seed)
    if corpus_dirs:         # keep the seeds in the user's corpus, where libFuzzer also saves new inputs
        for path in seed_files:
            (Path(corpus_dirs[0]) / path.name).write_bytes(path.read_bytes())
    elif runs:              # fixed run: seeds are only read (lazily, by libFuzzer), nothing is written
        argv = argv + ["-seed_inputs=" + ",".join(str(p) for p in seed_files)]
    else:                   # open-ended without a corpus: the seed directory becomes the corpus
        argv = argv + [str(seed_dir)]
        print(f"fuzz_wire: corpus in {seed_dir}", flush=True)

    def one_input(data: bytes) -> None:
        test_one_input(data)
        # libFuzzer ends the process with exit(), which skips Python's atexit: report on the last run.
        if inputs_tried == runs:
            _report()
            for path in seed_files:
                path.unlink(missing_ok=True)
            seed_dir.rmdir()
        elif inputs_tried % 100_000 == 0:
            _report()

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
