"""Random PDU loss: an image for every frame whose header arrived, honest reports, smooth degradation."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from semcom.codec.frame import PDU_HEADER, TILE_RECORD, FrameAssembler, Segment, parse_pdu
from semcom.codec.pipeline import SemanticDecoder, SemanticEncoder
from semcom.constants import HEADER_REPEATS
from semcom.eval.erasure import erase, erasure_trial, summarise

RATES = (0.0, 0.1, 0.3, 0.5)
SEEDS = range(6)


@pytest.fixture(scope="module")
def trials(photos):
    encoder, decoder = SemanticEncoder(), SemanticDecoder()
    out = []
    for image_id, (name, image) in enumerate(sorted(photos.items())):
        encoded = encoder.encode(image, image_id=image_id)
        for rate in RATES:
            for seed in SEEDS:
                out.append(erasure_trial(image, encoded, decoder, rate, seed=100 * image_id + seed))
    return out


def test_erasure_is_seeded_and_independent_per_pdu():
    pdus = [i.to_bytes(2, "big") for i in range(1000)]
    assert erase(pdus, 0.3, seed=4) == erase(pdus, 0.3, seed=4)
    assert 650 < len(erase(pdus, 0.3, seed=4)) < 750, "30 % lost"
    assert erase(pdus, 0.0, seed=1) == pdus and erase(pdus, 1.0, seed=1) == []
    with pytest.raises(ValueError):
        erase(pdus, 1.5, seed=1)


def test_an_image_comes_out_exactly_when_a_header_copy_arrived(trials):
    assert any(not t.header_arrived for t in trials), "the rates must also lose both header copies sometimes"
    for t in trials:
        assert t.image_out == t.header_arrived, t


def test_reports_say_which_parts_were_generated(trials):
    for t in (t for t in trials if t.image_out):
        assert t.text_lost == (not t.text_delivered), t
        assert t.tiles_received == t.tiles_delivered <= t.tiles_expected, t
        if t.tiles_received == t.tiles_expected:
            assert t.generated_share == 0.0, t
        else:
            assert 0.0 < t.generated_share <= 1.0, t
    lossless = [t for t in trials if t.rate == 0.0]
    assert all(t.image_out and t.generated_share == 0.0 and not t.text_lost for t in lossless)


def test_key_quality_degrades_smoothly_with_the_erasure_rate(trials):
    rows = summarise(trials)
    assert [r.rate for r in rows] == list(RATES)
    psnr = [r.mean_key_psnr_db for r in rows]
    generated = [r.mean_generated_share for r in rows]
    assert all(a >= b for a, b in zip(psnr, psnr[1:])), psnr
    assert all(a <= b for a, b in zip(generated, generated[1:])), generated
    assert psnr[0] > 32.0
    # Smooth: the generated share follows the loss rate (each tile travels once), no cliff.
    for rate, share in zip(RATES, generated):
        assert abs(share - rate) < 0.15, (rate, share)


# --- reassembly timeout frees frames that never complete ----------------------------------------------
def _orphan_key_pdu(image_id: int, index: int) -> bytes:
    """A KEY PDU of a frame whose header never comes (1 kB of tile records)."""
    payload = TILE_RECORD.pack(index, 950) + bytes(950)
    return PDU_HEADER.pack(b"SM", 1, 0, image_id, Segment.KEY, index, 50) + payload


def test_timeout_frees_frames_that_never_complete(photos):
    now = [0.0]
    assembler = FrameAssembler(timeout_s=1.0, max_open_frames=8, clock=lambda: now[0])
    encoded = SemanticEncoder().encode(photos["chelsea"], image_id=500)
    header_and_first_key = [p for p in encoded.to_pdus() if parse_pdu(p).segment != Segment.TEXT][:HEADER_REPEATS + 1]
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        for image_id in range(6):            # six frames without a header, 40 kB of tiles each
            for index in range(40):
                assert assembler.push(_orphan_key_pdu(image_id, index)) == []
        for pdu in header_and_first_key:     # one frame with a header but most of its tiles lost
            assert assembler.push(pdu) == []
        assert assembler.open_frames == 7
        pending, _ = tracemalloc.get_traced_memory()
        now[0] = 0.5
        assert assembler.flush_expired() == [] and assembler.open_frames == 7
        now[0] = 5.0
        frames = assembler.flush_expired()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert assembler.open_frames == 0
    assert [f.image_id for f in frames] == [500] and frames[0].missing_tiles
    assert assembler.stats.frames_without_header == 6 and assembler.stats.frames_partial == 1
    held = pending - baseline
    assert held > 6 * 40 * 950, "the pending tiles were held while waiting"
    # Only the one emitted partial frame (header + one PDU of tiles) may outlive the flush.
    assert after - baseline < 0.05 * held + sum(map(len, header_and_first_key)) * 4, (baseline, pending, after)


@pytest.mark.slow
def test_semantic_rx_timer_frees_incomplete_frames():
    """The block's own timer (no flush call) empties the assembler after timeout_s."""
    from gnuradio import gr

    from semcom.radio.semantic_rx import semantic_rx

    tb = gr.top_block()
    rx = semantic_rx(timeout_s=0.2, max_open_frames=8)
    tb.msg_connect((rx, "image"), (rx, "pdus"))     # anything to make it a valid flowgraph; never fires
    tb.start()
    try:
        for image_id in range(5):
            for index in range(10):
                rx.push_pdu(_orphan_key_pdu(image_id, index))
        assert rx.assembler.open_frames == 5
        deadline = time.monotonic() + 5.0
        while rx.assembler.open_frames and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        tb.stop()
        tb.wait()
    assert rx.assembler.open_frames == 0
    assert rx.stats["frames_without_header"] == 5 and rx.images_out == 0
