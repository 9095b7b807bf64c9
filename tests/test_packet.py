"""Loopback tests of semcom.radio.packet: packet_tx -> channel_model -> packet_rx."""
import random
import time

import numpy as np
import pmt
import pytest
from gnuradio import blocks, channels, gr

from semcom.radio import packet

SPS = 2
FREQ_OFFSET = 5e-4  # cycles/sample
TIMING_OFFSET = 1.0001


class _pdu_source(gr.basic_block):
    """Publishes a fixed list of PDUs once the flowgraph starts."""

    def __init__(self, payloads):
        gr.basic_block.__init__(self, "pdu_source", None, None)
        self.payloads = payloads
        self.message_port_register_out(pmt.intern("out"))

    def start(self):
        for payload in self.payloads:
            self.message_port_pub(pmt.intern("out"),
                                  pmt.cons(pmt.PMT_NIL, pmt.init_u8vector(len(payload), list(payload))))
        return True


def _random_pdus(count, seed, max_len=1200):
    rng = random.Random(seed)
    return [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, max_len))) for _ in range(count)]


def _loopback(pdus, modulation, fec_code, snr_db, timeout_s):
    """Run the loopback until all PDUs arrived or the timeout; returns (received, rx)."""
    tb = gr.top_block()
    source = _pdu_source(pdus)
    tx = packet.packet_tx(modulation, fec_code, SPS)
    rx = packet.packet_rx(modulation, fec_code, SPS)
    channel = channels.channel_model(packet.noise_voltage_for_snr(snr_db, modulation, SPS),
                                     FREQ_OFFSET, TIMING_OFFSET, [1.0], 7)
    sink = blocks.message_debug()
    tb.msg_connect(source, "out", tx, "in")
    tb.connect(tx, channel, rx)
    tb.msg_connect(rx, "out", sink, "store")
    tb.start()
    deadline = time.time() + timeout_s
    while sink.num_messages() < len(pdus) and time.time() < deadline:
        time.sleep(0.05)
    tb.stop()
    tb.wait()
    received = [bytes(pmt.u8vector_elements(pmt.cdr(sink.get_message(i))))
                for i in range(sink.num_messages())]
    return received, rx


@pytest.mark.parametrize("fec_code", packet.FEC_CODES)
@pytest.mark.parametrize("modulation", [
    "bpsk", "qpsk",
    pytest.param("16qam", marks=pytest.mark.xfail(reason="16-QAM loses packets (phase/scale tracking)",
                                                   strict=False)),
])
def test_high_snr_delivers_all_pdus_in_order(modulation, fec_code):
    count = 5 if modulation == "16qam" else 10
    pdus = _random_pdus(count, seed=10 * packet.MODULATIONS.index(modulation) + packet.FEC_CODES.index(fec_code))
    received, rx = _loopback(pdus, modulation, fec_code, snr_db=25,
                             timeout_s=4 if modulation == "16qam" else 15)
    assert received == pdus
    assert rx.packets_ok() == len(pdus)
    assert rx.packets_failed_crc() == 0


def test_low_snr_drops_packets_but_never_delivers_corrupt_ones():
    pdus = _random_pdus(6, seed=3, max_len=300)
    received, rx = _loopback(pdus, "qpsk", "none", snr_db=-5, timeout_s=4)
    assert len(received) < len(pdus)
    assert all(r in pdus for r in received)
    assert rx.packets_ok() == len(received)


def test_noise_voltage_gives_requested_snr():
    pdus = _random_pdus(4, seed=5, max_len=1000)
    tb = gr.top_block()
    source = _pdu_source(pdus)
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
