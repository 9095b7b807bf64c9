#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris/libFuzzer) of the inference worker's protocol (semcom.worker).

A real ``InferenceWorker`` runs in a thread of this process, bound to an inproc:// socket; each input is
split into ZeroMQ frames (u16 length prefixes, at most ``MAX_FRAMES``) and sent as one request
from a DEALER, like a hostile client would. The worker must answer it with exactly one well-formed
reply (``ok`` true, or false with an error text), and then answer a ping: a missing or malformed
reply, or a ping that fails, is a finding (the input is in libFuzzer's log). The worker's pixel
budget is small here so that the inputs that reach the codec stay fast.

Seeds: a ping, the four payloads that once ended the worker process (issue 16), an encode of a small
crop of the bundled photo ``chelsea.png``, a decode of its frame, and a request over the size limits.

    python fuzz/fuzz_worker.py -runs=20000 -seed=1              # fixed run (CI)
    python fuzz/fuzz_worker.py corpus_dir -max_total_time=600   # open-ended, keeps the corpus
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import tempfile
import threading
from pathlib import Path

import atheris

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")     # see fuzz_wire.py: tiny torch calls on a shared machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

with atheris.instrument_imports(include=["semcom.worker"]):
    from semcom.worker import InferenceWorker, WorkerLimits

import zmq

from semcom.codec.imageio import load_image, save_png
from semcom.codec.pipeline import SemanticEncoder
from semcom.paths import data_path

MAX_FRAMES = 8
REPLY_TIMEOUT_MS = 20_000
FUZZ_MAX_PIXELS = 48 * 64            # the seed crop; bigger forged images are refused by the budget
FUZZ_MAX_REQUEST_BYTES = 256 * 1024

inputs_tried = 0
outcomes = {"ok": 0, "error": 0, "pings": 0}


def _start_worker() -> tuple[InferenceWorker, str]:
    logging.getLogger("semcom.worker").setLevel(logging.CRITICAL)     # a warning per rejected input otherwise
    worker = InferenceWorker("inproc://fuzzed-worker", threads=1,
                             limits=WorkerLimits(max_request_bytes=FUZZ_MAX_REQUEST_BYTES, max_pixels=FUZZ_MAX_PIXELS,
                                                 job_time_limit_s=15))
    threading.Thread(target=worker.run, args=(zmq.Context.instance(),), name="fuzzed-worker", daemon=True).start()
    if not worker.ready.wait(30):
        raise RuntimeError("worker did not start")
    return worker, worker.bound_endpoint


WORKER, ENDPOINT = _start_worker()
CLIENT = zmq.Context.instance().socket(zmq.DEALER)
CLIENT.setsockopt(zmq.LINGER, 0)
CLIENT.connect(ENDPOINT)


def pack_frames(frames: list[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(f)) + f for f in frames)


def unpack_frames(data: bytes) -> list[bytes]:
    frames, offset = [], 0
    while offset + 2 <= len(data) and len(frames) < MAX_FRAMES:
        (length,) = struct.unpack_from(">H", data, offset)
        offset += 2
        frames.append(data[offset: offset + length])
        offset += length
    return frames or [data]


def _request(**fields) -> bytes:
    return json.dumps({"v": 1, **fields}).encode()


def seed_inputs() -> list[bytes]:
    crop = load_image(data_path("photos", "chelsea.png"))[120:168, 180:244]
    frame = SemanticEncoder().encode(crop, image_id=1).frame.to_bytes()
    png = save_png(crop)
    return [pack_frames(f) for f in (
        [_request(op="ping", id=1)],
        [b'{"v":1,"op":[],"id":1}'], [b'{"v":1,"op":{}}'], [b"[" * 3000 + b"]" * 3000],
        [b'{"v":1,"op":"ping","id":' + b"9" * 5000 + b"}"],
        [_request(op="encode", id=2, image_id=7), png],
        [_request(op="encode", id=3), png, save_png((crop > 128).astype("uint8") * 255)],
        [_request(op="decode", id=4), frame],
        [_request(op="decode", id=5), b"\0" * 60_000, b"\0" * 60_000],
    )]


def _reply(delimited: bool = False) -> dict:
    """The reply's header; ``delimited``: the request began with an empty frame, as a REQ client's does,
    and the worker must mirror it."""
    if not CLIENT.poll(REPLY_TIMEOUT_MS):
        raise AssertionError("no reply within 20 s")
    frames = CLIENT.recv_multipart()
    if delimited:
        assert frames[0] == b"" and len(frames) >= 2, frames[:2]
        frames = frames[1:]
    header = json.loads(frames[0])
    assert isinstance(header, dict) and isinstance(header.get("ok"), bool), header
    assert header["ok"] or isinstance(header.get("error"), str), header
    return header


def test_one_input(data: bytes) -> None:
    global inputs_tried
    inputs_tried += 1
    frames = unpack_frames(data)
    CLIENT.send_multipart(frames)
    outcomes["ok" if _reply(delimited=frames[0] == b"")["ok"] else "error"] += 1
    CLIENT.send_multipart([_request(op="ping", id="after")])
    reply = _reply()
    assert reply["ok"] and reply["id"] == "after", reply
    outcomes["pings"] += 1


def _report() -> None:
    print(f"fuzz_worker: {inputs_tried} inputs tried ({outcomes['ok']} ok replies, {outcomes['error']} error "
          f"replies, {outcomes['pings']} pings answered after them; worker {WORKER.stats.as_dict()})", flush=True)


def main(argv: list[str]) -> None:
    runs = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("-runs=")), 0)
    corpus_dirs = [a for a in argv[1:] if not a.startswith("-")]
    seed_dir = Path(tempfile.mkdtemp(prefix="fuzz_worker_seeds_"))
    seed_files = []
    for i, seed in enumerate(seed_inputs()):
        seed_files.append(seed_dir / f"seed_{i:02d}")
        seed_files[-1].write_bytes(seed)
    if corpus_dirs:
        for path in seed_files:
            (Path(corpus_dirs[0]) / path.name).write_bytes(path.read_bytes())
    elif runs:
        argv = argv + ["-seed_inputs=" + ",".join(str(p) for p in seed_files)]
    else:
        argv = argv + [str(seed_dir)]
        print(f"fuzz_worker: corpus in {seed_dir}", flush=True)

    def one_input(data: bytes) -> None:
        test_one_input(data)
        # libFuzzer ends the process with exit(), which skips Python's atexit: report on the last run.
        if inputs_tried == runs:
            _report()
            for path in seed_files:
                path.unlink(missing_ok=True)
            seed_dir.rmdir()
        elif inputs_tried % 10_000 == 0:
            _report()

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
