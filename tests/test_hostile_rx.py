"""semantic_rx and FrameAssembler against PDUs from a hostile transmitter: bounded memory and work,
counted drops, and a genuine image still out in time. ``benchmarks/flood.py`` is the full measurement."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from semcom.codec.frame import FrameAssembler, SemanticFrame
from semcom.codec.pipeline import SemanticEncoder
from semcom.constants import DEFAULT_MAX_PIXELS, DEFAULT_PDU_BYTES
from semcom.radio.semantic_rx import semantic_rx

FLOOD_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "flood.py"


def load_flood():
    spec = importlib.util.spec_from_file_location("semcom_flood", FLOOD_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_forged_4k_flood_adds_little_memory_and_a_genuine_image_comes_out():
    result = load_flood().flood("3840x2160", pairs=100)
    print(result)
    assert result["frames_too_large"] == 100             # dropped at the header, counted
    assert result["rss_added_peak_mb"] < 300
    assert result["genuine_out"] and result["genuine_latency_s"] < 10


def small_frame(image_id: int, width: int, height: int, key: bool = False, text: bytes = b"x") -> SemanticFrame:
    grid = (-(-height // 8), -(-width // 8))
    return SemanticFrame(image_id, width, height, 64, 8, 1, 1, np.full(grid, key, bool), text=text)


def test_headers_over_max_pixels_are_dropped_with_their_image():
    assembler = FrameAssembler(max_pixels=640 * 480)
    pdus = small_frame(3, 800, 600).to_pdus()
    assert all(assembler.push(p) == [] for p in pdus)
    s = assembler.stats
    assert s.frames_too_large == 1 and s.pdus_dropped == len(pdus) and assembler.open_frames == 0
    assert "more than the receiver's limit of 307200" in assembler.last_error
    (frame,) = assembler.push(small_frame(4, 640, 480).to_pdus()[0]) + assembler.flush_all()
    assert (frame.width, frame.height) == (640, 480)


def test_segment_payloads_are_bounded_by_the_mtu_and_the_header():
    assembler = FrameAssembler(max_pdu_bytes=DEFAULT_PDU_BYTES)
    frame = small_frame(5, 128, 128, key=False)
    header = frame.to_pdus(header_repeats=1)[0]
    key_pdu = bytearray(header[:6] + bytes([1]) + (0).to_bytes(2, "big") + (1).to_bytes(2, "big"))
    assembler.push(bytes(key_pdu) + b"\0" * (2 * DEFAULT_PDU_BYTES))       # over the MTU: dropped unread
    assert assembler.stats.pdus_dropped == 1 and "exceeds the MTU" in assembler.last_error
    assembler.push(header)
    # the header announces no key tiles: a KEY segment of any PDU count is refused
    assembler.push(bytes(key_pdu) + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + b"t")
    assert assembler.stats.pdus_dropped == 2 and "key tiles" in assembler.last_error


def test_the_key_mask_is_computed_once_per_frame(monkeypatch):
    """Per-PDU work is O(PDU): the full-resolution key mask is listed once, when the header arrives."""
    image = np.random.default_rng(0).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    pdus = SemanticEncoder().encode(image, key_mask=np.ones((256, 320), bool)).to_pdus()
    assert len(pdus) > 10
    calls = []
    original = SemanticFrame.key_tile_indices
    monkeypatch.setattr(SemanticFrame, "key_tile_indices", lambda self: calls.append(1) or original(self))
    assembler = FrameAssembler()
    frames = [f for p in pdus for f in assembler.push(p)]
    assert len(frames) == 1 and not frames[0].missing_tiles
    assert len(calls) == 1 + 1          # once by the assembler, once by the check above


class SlowDecoder:
    """Stands in for the codec: each decode takes ``seconds`` and is recorded."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.decoded: list[int] = []
        self.release = threading.Event()

    def decode(self, frame):
        self.release.wait(self.seconds)
        self.decoded.append(frame.image_id)
        from semcom.codec.pipeline import Reconstruction
        blank = np.zeros((frame.height, frame.width, 3), np.uint8)
        mask = np.zeros((frame.height, frame.width), bool)
        return Reconstruction(blank, mask, mask, 0, 0, 0, "", False)


def test_decode_queue_drops_the_oldest_waiting_frame_and_counts_it():
    rx = semantic_rx(timeout_s=5.0, max_queued_frames=2)
    rx.decoder = SlowDecoder(seconds=5.0)
    rx.start()
    try:
        for image_id in range(6):       # each complete at once: header + text, no key tiles
            for pdu in small_frame(image_id, 32, 32).to_pdus(header_repeats=1):
                rx.push_pdu(pdu)
            time.sleep(0.05)            # frame 0 is being decoded before the others arrive
        assert rx.stats["frames_dropped_overload"] == 3      # 1, 2, 3 pushed out by 4 and 5
        rx.decoder.release.set()
    finally:
        rx.stop()
    assert rx.decoder.decoded == [0, 4, 5] and rx.images_out == 3


def test_default_receiver_limits():
    rx = semantic_rx()
    assert rx.assembler.max_pixels == DEFAULT_MAX_PIXELS == 1920 * 1080
    assert rx.assembler.max_pdu_bytes == rx.config.pdu_bytes
    with pytest.raises(ValueError, match="max_queued_frames"):
        semantic_rx(max_queued_frames=0)


def test_an_image_below_the_minimum_gets_one_line_naming_it(tmp_path, capsys):
    from PIL import Image

    from semcom.cli import main

    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    assert main(["loopback", "--image", str(tmp_path / "dot.png"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1x1 pixels is below the loopback's minimum of 7x7" in err, err
