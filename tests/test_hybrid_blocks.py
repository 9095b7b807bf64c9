"""The hybrid mode as GNU Radio blocks: semantic_tx(hybrid=True) -> analog_tx -> channel_model -> analog_rx ->
hybrid_rx, and hybrid_rx against hostile input."""

from __future__ import annotations

import numpy as np
import pmt
import pytest
from gnuradio import blocks, channels, gr
from helpers import wait_until

from semcom.eval.metrics import quality_report
from semcom.radio import analog, packet, protected_frames
from semcom.radio.hybrid_rx import hybrid_rx
from semcom.radio.pdu import from_pdu
from semcom.radio.semantic_tx import semantic_tx


def _through_the_channel(image, snr_db: float, tmp_path, images_sent: int = 1, feedback: bool = False,
                         **tx_kwargs):
    """``feedback``: analog_rx's frames also go to semantic_tx's ``snr`` port (an ideal return link)."""
    tb = gr.top_block()
    tx = semantic_tx(hybrid=True, plan_snr_db=tx_kwargs.pop("plan_snr_db", snr_db), **tx_kwargs)
    modulator = analog.analog_tx(2)
    channel = channels.channel_model(noise_voltage=packet.noise_voltage_for_snr(snr_db, "bpsk", 2),
                                     frequency_offset=2e-4, epsilon=1.00002, taps=[1.0 + 0j], noise_seed=5,
                                     block_tags=False)
    demodulator = analog.analog_rx(2)
    rx = hybrid_rx(output_path=str(tmp_path / "rx_{image_id}.png"), timeout_s=0.5)
    images, info = blocks.message_debug(), blocks.message_debug()
    tb.msg_connect((tx, "symbols"), (modulator, "in"))
    tb.connect(modulator, channel, demodulator)
    tb.msg_connect((demodulator, "out"), (rx, "frames"))
    tb.msg_connect((rx, "image"), (images, "store"))
    tb.msg_connect((tx, "info"), (info, "store"))
    if feedback:
        tb.msg_connect((demodulator, "out"), (tx, "snr"))
    tb.start()
    try:
        for sent in range(1, images_sent + 1):
            tx.send(image)
            assert rx.wait_for_images(sent, 60.0), rx.counts
    finally:
        tb.stop()
        tb.wait()
    return tx, rx, images, info


def test_semantic_tx_hybrid_to_hybrid_rx_through_one_channel_at_0_db(chelsea, tmp_path):
    tx, rx, images, info = _through_the_channel(chelsea, 0.0, tmp_path, budget_symbols=60_000)
    report, png = from_pdu(images.get_message(0))
    sent = pmt.to_python(info.get_message(0))
    assert sent["plan"] == "hybrid" and sent["symbols"] <= 60_000 and sent["n_pdus"] == len(sent["pdu_copies"])
    # every burst on 'symbols' (the sketch in two fragments), none on 'pdus'
    assert tx.pdus_sent == sent["analog_frames"] == sum(sent["copies"]) + sum(sent["pdu_copies"]) + 1
    assert report["tiles_received"] > 0 and not report["text_lost"] and png[:4] == b"\x89PNG"
    assert (tmp_path / "rx_0.png").exists() and rx.counts["images_out"] == 1
    recon = rx.reconstructions[0][1]
    assert quality_report(chelsea, recon.image, recon.key_mask)["key_ssim"] > 0.45


def test_a_hybrid_link_adapts_to_analog_rx_estimates(chelsea, tmp_path):
    """The first image is planned for the configured 0 dB; analog_rx's per-frame estimates (``snr_db_est``) reach
    semantic_tx's ``snr`` port, and the second image is planned for them: within 1 dB of the channel's 3 dB."""
    tx, rx, images, info = _through_the_channel(chelsea, 3.0, tmp_path, images_sent=2, feedback=True,
                                                plan_snr_db=0.0, adapt=True, budget_symbols=60_000)
    first, second = (pmt.to_python(info.get_message(i)) for i in range(2))
    assert first["planned_snr_db"] == 0.0 and tx.snr_messages_ignored == 0
    assert abs(second["planned_snr_db"] - 3.0) < 1.0 and abs(tx.snr_estimate_db() - 3.0) < 1.0


def test_semantic_tx_hybrid_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="plan_snr_db"):
        semantic_tx(hybrid=True)
    with pytest.raises(ValueError, match="without endpoint"):
        semantic_tx(hybrid=True, plan_snr_db=0.0, endpoint="tcp://127.0.0.1:5555")
    with pytest.raises(ValueError, match="not with protected_mcs"):
        semantic_tx(hybrid=True, plan_snr_db=0.0, key_mcs="qpsk-r12")


def _key_frame(image_id: int, index: int = 0):
    return np.ones(3072, np.complex64), {"image_id": image_id, "frame_index": index, "snr_db_est": 10.0}


def test_hybrid_rx_counts_bad_input_and_bounds_its_memory():
    rx = hybrid_rx(timeout_s=0.2, max_open_images=2, max_frames_per_image=3)
    for bad in (pmt.intern("nonsense"), pmt.cons(pmt.make_dict(), pmt.init_u8vector(3, [1, 2, 3])),
                analog.symbols_pdu(np.ones(4, np.complex64), {"frame_index": 0})):       # no image_id
        rx._handle_frame(bad)
    assert rx.counts["frames_dropped"] == 3 and rx.counts["frames_in"] == 0
    for _ in range(5):
        rx.push_frame(1, *_key_frame(1))
    assert rx.counts["frames_dropped"] == 3 + 2 and len(rx._open[1][1]) == 3
    for image_id in (2, 3, 4):                # a third open image evicts the oldest
        rx.push_frame(image_id, *_key_frame(image_id))
    assert len(rx._open) == 2 and rx.counts["images_evicted"] == 2 and len(rx._ready) == 2
    tb = gr.top_block()
    tb.msg_connect((rx, "info"), (blocks.message_debug(), "store"))
    rx.stop()                                 # decodes what is open: key frames without a header
    assert rx.counts["images_without_header"] == 4 and rx.counts["images_out"] == 0
    assert not rx._open and not rx._ready
    with pytest.raises(ValueError, match="timeout_s"):
        hybrid_rx(timeout_s=0)


def test_hybrid_rx_decodes_an_image_after_its_timeout(chelsea):
    from semcom.radio.hybrid import HybridLinkConfig, plan_hybrid

    plan = plan_hybrid(chelsea, HybridLinkConfig(snr_db=20.0), image_id=300)
    rx = hybrid_rx(timeout_s=0.2)
    tb = gr.top_block()
    tb.msg_connect((rx, "image"), (blocks.message_debug(), "store"))
    rx.start()
    try:
        for index, symbols in plan.bursts():
            rx.push_frame(300 & 0xFF, symbols, {"image_id": 300 & 0xFF, "frame_index": index, "snr_db_est": 20.0})
        assert rx.wait_for_images(1, 30.0)
        assert wait_until(lambda: not rx._open, 5.0)
    finally:
        rx.stop()
    recon = rx.reconstructions[0][1]
    assert rx.reconstructions[0][0] == 300 & 0xFF and recon.tiles_received == recon.tiles_expected
    assert sum(protected_frames.is_protected(i) for i, _ in plan.bursts()) == sum(plan.pdu_copies[p]
                                                                                  for p, _ in plan.fragments)
