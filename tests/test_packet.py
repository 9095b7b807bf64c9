"""Loopback tests of semcom.radio.packet: packet_tx -> channel_model -> packet_rx."""
import random
import time

import numpy as np
import pmt
import pytest
from gnuradio import blocks, channels, gr
from semcom.radio import packet
from semcom.radio.flowgraph import release
from semcom.radio.pdu import pdu_list_source

SPS = 2
FREQ_OFFSET = 2e-4  # cycles/sample, as the loopback default; see packet.FLL_MODULATIONS for larger offsets
TIMING_OFFSET = 1.00002  # 20 ppm sample-clock offset (a TCXO-class radio)


def _random_pdus(count, seed, max_len=1200):
    rng = random.Random(seed)
    return [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, max_len))) for _ in range(count)]


def _loopback(pdus, modulation, fec_code, snr_db, timeout_s=20, idle_s=2.0, channel_seed=7):
    """Run the loopback until all PDUs arrived, the flowgraph has been idle for ``idle_s`` (no sample
    sent or received, no new header, decoded payload or PDU: a busy machine slows it down but does
    not end it early) or the timeout; returns (received, rx)."""
    tb = gr.top_block()
    source = pdu_list_source(pdus)
    tx = packet.packet_tx(modulation, fec_code, SPS)
    rx = packet.packet_rx(modulation, fec_code, SPS)
    channel = channels.channel_model(packet.noise_voltage_for_snr(snr_db, modulation, SPS),
                                     FREQ_OFFSET, TIMING_OFFSET, [1.0], channel_seed)
    sink = blocks.message_debug()
    tb.msg_connect(source, "out", tx, "in")
    tb.connect(tx, channel, rx)
    tb.msg_connect(rx, "out", sink, "store")
    tb.start()
    start = last_change = time.time()
    state = None
    while sink.num_messages() < len(pdus) and time.time() - start < timeout_s:
        new_state = (sink.num_messages(), rx.headers_detected(), rx.packets_failed_crc(),
                     tx.burst_length.nitems_written(0), rx.correlator.nitems_read(0))
        if new_state != state:
            state, last_change = new_state, time.time()
        elif time.time() - last_change > idle_s:
            break
        time.sleep(0.05)
    tb.stop()
    tb.wait()
    received = [bytes(pmt.u8vector_elements(pmt.cdr(sink.get_message(i))))
                for i in range(sink.num_messages())]
    release(tb, tx, rx)      # else the buffers (shared memory) outlive the run
    return received, rx


SEEDS = range(5)
# PDUs (of 5 seeds x 8) that may be missing at 25 dB. Every PDU that arrives must be bit-exact and in
# order; a missing one must be accounted for by a CRC failure or a missed header, never by silence.
# BPSK/QPSK: the clock recovery occasionally slips a symbol at a payload start (seen once in about
# 8 runs of this test, i.e. ~1 PDU in 3000). 16-QAM uncoded/repetition: the first burst after a cold
# start is often lost while the FLL/Costas loops acquire the offset (measured: 7/150 PDUs lost
# uncoded, all of them the first; 13/150 with repetition, 11 of them the first).
ALLOWED_LOSSES = {("16qam", "none"): 10, ("16qam", "repetition"): 10}
DEFAULT_ALLOWED_LOSSES = 1


@pytest.mark.parametrize("fec_code", packet.FEC_CODES)
@pytest.mark.parametrize("modulation", packet.MODULATIONS)
def test_high_snr_delivers_pdus_bit_exact_in_order(modulation, fec_code):
    """25 dB Es/N0 with frequency and clock offsets: PDUs of 1..1200 bytes arrive bit-exact and in
    order, the last one included; losses stay within ALLOWED_LOSSES over all seeds."""
    lost = 0
    for seed in SEEDS:
        pdus = _random_pdus(8, seed=100 * seed + 10 * packet.MODULATIONS.index(modulation)
                            + packet.FEC_CODES.index(fec_code))
        received, rx = _loopback(pdus, modulation, fec_code, snr_db=25, channel_seed=seed + 1)
        remaining = iter(pdus)
        assert all(r in remaining for r in received), f"seed {seed}: wrong or reordered PDU"
        assert rx.packets_ok() == len(received)
        missing = len(pdus) - len(received)
        assert missing <= rx.packets_failed_crc() + (len(pdus) - rx.headers_detected()), \
            f"seed {seed}: a PDU vanished without a CRC failure or a missed header"
        lost += missing
    assert lost <= ALLOWED_LOSSES.get((modulation, fec_code), DEFAULT_ALLOWED_LOSSES), lost


def test_low_snr_drops_packets_but_never_delivers_corrupt_ones():
    pdus = _random_pdus(6, seed=3, max_len=300)
    received, rx = _loopback(pdus, "qpsk", "none", snr_db=-5, timeout_s=10)
    assert len(received) < len(pdus)
    assert all(r in pdus for r in received)
    assert rx.packets_ok() == len(received)


def test_noise_voltage_gives_requested_snr():
    pdus = _random_pdus(4, seed=5, max_len=1000)
    tb = gr.top_block()
    source = pdu_list_source(pdus)
    tx = packet.packet_tx("qpsk", "cc", SPS)
    samples = blocks.vector_sink_c()
    tb.msg_connect(source, "out", tx, "in")
    tb.connect(tx, samples)
    tb.start()
    time.sleep(1.0)
    tb.stop()
    tb.wait()
    x = np.array(samples.data())
    burst = x[np.abs(x) > 1e-3]  # drop the silent padding
    assert len(burst) > 10000
    measured_power = np.mean(np.abs(burst) ** 2)
    snr_db = 10.0
    noise_voltage = packet.noise_voltage_for_snr(snr_db, "qpsk", SPS)
    rng = np.random.default_rng(0)
    noise = noise_voltage * (rng.standard_normal(200000) + 1j * rng.standard_normal(200000)) / np.sqrt(2)
    es_n0 = measured_power * SPS / np.mean(np.abs(noise) ** 2)
    assert 10 * np.log10(es_n0) == pytest.approx(snr_db, abs=0.3)
    assert measured_power == pytest.approx(packet.tx_output_power(SPS), rel=0.05)


def test_channel_symbols_grow_with_length_and_redundancy():
    for modulation in packet.MODULATIONS:
        assert packet.channel_symbols_for(1000, modulation, "cc") > packet.channel_symbols_for(
            1000, modulation, "none")
        assert packet.channel_symbols_for(1000, modulation, "none") > packet.channel_symbols_for(
            100, modulation, "none")
    assert packet.bits_per_symbol("16qam") == 4


def test_header_announcing_more_than_the_mtu_is_rejected_not_fatal():
    """A noise-made header can announce up to 4095 bytes; the payload decoder would throw on it and
    its thread would die. The guard answers the demux with #f instead, and counts it."""
    rx = packet.packet_rx("qpsk", "cc", SPS, mtu_bytes=200)
    guard, sink = rx.header_guard, blocks.message_debug()
    tb = gr.top_block()
    tb.msg_connect(guard, "out", sink, "store")
    tb.start()
    too_long = pmt.to_pmt({packet.PAYLOAD_SYMBOLS_TAG: guard.max_payload_symbols + 1})
    fits = pmt.to_pmt({packet.PAYLOAD_SYMBOLS_TAG: guard.max_payload_symbols})
    for msg in (too_long, fits, pmt.PMT_F):
        guard._post(pmt.intern("in"), msg)
    deadline = time.time() + 5
    while sink.num_messages() < 3 and time.time() < deadline:
        time.sleep(0.02)
    tb.stop()
    tb.wait()
    out = [sink.get_message(i) for i in range(sink.num_messages())]
    assert pmt.eq(out[0], pmt.PMT_F) and pmt.is_dict(out[1]) and pmt.eq(out[2], pmt.PMT_F)
    assert guard.rejected == 1


def test_released_flowgraphs_free_most_of_their_shared_memory():
    """Dozens of loopback runs in one process (eval --channel-mode flowgraph, the test suite) must not
    exhaust the system's shared-memory segments: release() frees what GNU Radio's hier-block
    self-references keep alive (measured: 46 segments per run without it, 14 with it)."""
    import subprocess

    def segments():
        out = subprocess.run(["ipcs", "-m"], capture_output=True, text=True, check=True).stdout
        return sum(1 for line in out.splitlines() if line.startswith("0x"))

    before = segments()
    for seed in range(3):
        received, _ = _loopback(_random_pdus(2, seed=seed, max_len=50), "qpsk", "cc", snr_db=25, channel_seed=seed + 1)
        assert len(received) == 2
    assert segments() - before <= 3 * 20


def test_mcs_table_rows_are_stock_modem_settings_ordered_by_rate():
    from semcom.radio.mcs import MCS_TABLE, mcs_by_name

    rates = [m.payload_bits_per_symbol for m in MCS_TABLE]
    assert rates == sorted(rates) and rates[0] <= 0.25 and rates[-1] >= 3.0
    assert all(m.modulation in packet.MODULATIONS and m.fec_code in packet.FEC_CODES for m in MCS_TABLE)
    with pytest.raises(ValueError, match="unknown MCS"):
        mcs_by_name("qpsk-r99")


@pytest.mark.parametrize("fec_code", ["cc34", "cc14"])
def test_rate_matching_inverts_at_every_length_and_counts_malformed_frames(fec_code):
    """The receiver's rate matcher restores the rate-1/2 soft frame the encoder's output came from, for
    every PDU length; a soft frame of a length no encoder emits is dropped and counted, not decoded."""
    tx, rx = packet._rate_match_tx(fec_code), packet._rate_match_rx(fec_code)
    published = []
    for block in (tx, rx):
        block.message_port_pub = lambda port, msg: published.append(msg)
    rng = np.random.default_rng(1)
    for pdu_len in (1, 2, 3, 7, 64, 333, 1000, 1500):
        coded = rng.integers(0, 256, packet._encoded_payload_bytes(pdu_len, "cc"), dtype=np.uint8)
        tx._on_pdu(pmt.cons(pmt.PMT_NIL, pmt.init_u8vector(len(coded), coded)))
        sent = np.asarray(pmt.u8vector_elements(pmt.cdr(published.pop())), np.uint8)
        assert len(sent) == packet._encoded_payload_bytes(pdu_len, fec_code)
        soft = 1.0 - 2.0 * np.unpackbits(sent).astype(np.float32)            # bit 0 -> +1, bit 1 -> -1
        rx._on_pdu(pmt.cons(pmt.PMT_NIL, pmt.init_f32vector(len(soft), soft)))
        restored = np.asarray(pmt.f32vector_elements(pmt.cdr(published.pop())))
        expected = 1.0 - 2.0 * np.unpackbits(coded).astype(np.float32)
        kept = restored != 0                                                   # punctured bits are erasures
        assert len(restored) == len(expected) and np.array_equal(restored[kept], expected[kept])
        assert kept.mean() == pytest.approx(1.0 if fec_code == "cc14" else 2 / 3, abs=0.01)
    rx._on_pdu(pmt.cons(pmt.PMT_NIL, pmt.init_f32vector(12, np.ones(12, np.float32))))
    assert rx.malformed == 1 and not published
