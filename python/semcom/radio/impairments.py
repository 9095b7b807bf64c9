"""Bursts from ``packet_tx`` as a real radio delivers them: after random gaps of noise, at any sample
offset, through carrier and sample-clock offsets, multipath, phase noise and arbitrary gain.

For the receiver's tests (tests/test_rx_impairments.py) and benchmarks/rx_impairments.py: the bursts are
made once by the real transmitter, laid into one stream with seeded gaps, and the stream goes through
``channels.channel_model`` (noise, frequency offset, sample-clock ratio, taps), an optional phase-noise
generator, a gain and an optional AGC (the one every RX flowgraph uses) into ``packet_rx``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pmt
from gnuradio import analog, blocks, channels, gr

from semcom.radio import acquisition, packet, receiver
from semcom.radio.flowgraph import release
from semcom.radio.pdu import from_pdu, pdu_list_source
from semcom.radio.stream import RELEASE_SLACK_SAMPLES

# Multipath profiles (taps at the sample rate, 2 samples per symbol): a strong echo one sample late,
# and a three-path profile spread over 2 samples (a symbol), both normalised to unit energy. Indoor
# 2.4 GHz delay spreads are 20-100 ns, a fraction of a 1 MS/s sample; these are much harsher.
MULTIPATH_PROFILES = {
    "2-tap": (1.0, 0.0, 0.5j),
    "3-tap": (1.0, 0.4 - 0.3j, 0.2j),
}
SETTLE_S = 1.0   # the run is over when the receiver moved no sample and delivered nothing for this long


def multipath_taps(profile: str) -> list[complex]:
    taps = np.asarray(MULTIPATH_PROFILES[profile], np.complex64)
    return list(taps / np.sqrt(np.sum(np.abs(taps) ** 2)))


def tx_bursts(pdus: list[bytes], modulation: str = "qpsk", fec_code: str = "cc", samples_per_symbol: int = 2,
              timeout_s: float = 60.0) -> list[np.ndarray]:
    """One complex64 array per PDU, exactly as ``packet_tx`` emits it (its silent tail included)."""
    tb = gr.top_block()
    source = pdu_list_source(pdus)
    tx = packet.packet_tx(modulation, fec_code, samples_per_symbol)
    sink = blocks.vector_sink_c()
    tb.msg_connect(source, "out", tx, "in")
    tb.connect(tx, sink)
    tb.start()
    deadline = time.monotonic() + timeout_s

    def starts():
        return sorted((t.offset, pmt.to_long(t.value)) for t in sink.tags()
                      if pmt.symbol_to_string(t.key) == packet.LENGTH_TAG)

    while time.monotonic() < deadline:
        tags = starts()
        # The TX resampler holds its last few samples back until something follows; they lie in the
        # last burst's silent tail, which is filled with zeros below.
        if len(tags) == len(pdus) and len(sink.data()) >= sum(tags[-1]) - RELEASE_SLACK_SAMPLES:
            break
        time.sleep(0.02)
    tb.stop()
    tb.wait()
    samples = np.array(sink.data(), np.complex64)
    tags = starts()
    release(tb, tx)
    if len(tags) != len(pdus):
        raise RuntimeError(f"packet_tx emitted {len(tags)} bursts for {len(pdus)} PDUs")
    samples = np.concatenate([samples, np.zeros(max(0, sum(tags[-1]) - len(samples)), np.complex64)])
    return [samples[offset:offset + length] for offset, length in tags]


def gapped_stream(bursts: list[np.ndarray], gaps: list[int], tail: int = 20000) -> np.ndarray:
    """``gaps[k]`` zero samples, then burst k, for every k; then ``tail`` zeros (the channel adds the noise)."""
    parts = []
    for gap, burst in zip(gaps, bursts):
        parts += [np.zeros(gap, np.complex64), burst]
    parts.append(np.zeros(tail, np.complex64))
    return np.concatenate(parts)


@dataclass
class Impairments:
    snr_db: float = 20.0                 # Es/N0 (packet.noise_voltage_for_snr)
    frequency_offset: float = 0.0        # cycles per sample
    sfo_ppm: float = 0.0                 # sample-clock offset
    taps: tuple = (1.0,)                 # multipath, at the sample rate
    phase_noise: float = 0.0             # channels.phase_noise_gen magnitude (rad, per sample)
    phase_noise_alpha: float = 0.01      # its one-pole filter coefficient
    level_dbfs: float | None = None      # burst RMS level at the receiver input; None: as packet_tx emits
    agc: bool = False                    # the AGC of semcom.radio.receiver ahead of packet_rx
    coarse_cfo: bool = False             # semcom.radio.acquisition's coarse frequency search ahead of packet_rx
    seed: int = 1


@dataclass
class RxResult:
    received: list[bytes]
    headers_detected: int
    failed_crc: int
    duplicate_peaks: int = 0     # correlator peaks the receiver dropped as repeats of one access code

    def delivered(self, pdus: list[bytes]) -> int:
        """PDUs of ``pdus`` that came through (bit-exact); a PDU sent twice counts twice."""
        remaining = list(self.received)
        count = 0
        for p in pdus:
            if p in remaining:
                remaining.remove(p)
                count += 1
        return count


class _collector(gr.basic_block):
    def __init__(self):
        gr.basic_block.__init__(self, "semcom_rx_collector", None, None)
        self.received: list[bytes] = []
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._on_pdu)

    def _on_pdu(self, msg):
        self.received.append(from_pdu(msg)[1])


def _agc():
    agc = analog.agc3_cc(receiver.AGC_ATTACK_RATE, receiver.AGC_DECAY_RATE, receiver.AGC_REFERENCE, 1.0, 1)
    agc.set_max_gain(receiver.AGC_MAX_GAIN)
    return agc


def _channel_blocks(imp: Impairments, modulation: str, samples_per_symbol: int) -> list:
    """channel_model (noise, frequency offset, sample clock, taps), phase noise and the gain of ``imp``."""
    noise_voltage = packet.noise_voltage_for_snr(imp.snr_db, modulation, samples_per_symbol)
    chain = [channels.channel_model(noise_voltage, imp.frequency_offset, 1.0 + imp.sfo_ppm * 1e-6,
                                    list(imp.taps), imp.seed, False)]
    if imp.phase_noise:
        chain.append(channels.phase_noise_gen(imp.phase_noise, imp.phase_noise_alpha))
    if imp.level_dbfs is not None:
        power = packet.tx_output_power(samples_per_symbol)
        chain.append(blocks.multiply_const_cc(10 ** (imp.level_dbfs / 20) / np.sqrt(power)))
    return chain


class _stream_then_silence(gr.sync_block):
    """``samples``, then zeros for as long as the flowgraph runs (a radio's stream never ends), a few
    thousand a call and paced, so that an idle receiver costs little CPU.

    A finite source ends the flowgraph, and GNU Radio stops a message-only block as soon as one of its
    publishers is done: a PDU still on its way through packet_rx's message blocks (the last burst's, at
    the end of the stream) was lost with the receiver of issue #14, whose payload path has one more
    Python message block."""

    CHUNK = 4096
    PACE_S = 0.005

    def __init__(self, samples):
        gr.sync_block.__init__(self, "semcom_stream_then_silence", None, [np.complex64])
        self.samples = np.asarray(samples, np.complex64)
        self.sent = 0

    def work(self, input_items, output_items):
        out = output_items[0]
        if self.sent >= len(self.samples):
            time.sleep(self.PACE_S)
            n = min(len(out), self.CHUNK)
            out[:n] = 0
            return n
        n = min(len(out), len(self.samples) - self.sent)
        out[:n] = self.samples[self.sent:self.sent + n]
        self.sent += n
        return n


def _run_rx(front: list, modulation: str, fec_code: str, samples_per_symbol: int, timeout_s: float) -> RxResult:
    """``front`` (a source and the blocks after it) into ``packet_rx``; runs until the receiver settles
    (a _stream_then_silence source: until its samples went through and nothing moved since)."""
    tb = gr.top_block()
    rx = packet.packet_rx(modulation, fec_code, samples_per_symbol)
    sink = _collector()
    tb.connect(*front, rx)
    tb.msg_connect(rx, "out", sink, "in")
    tb.start()
    started = last_change = time.monotonic()
    state = None
    while time.monotonic() - started < timeout_s:
        consumed = rx.correlator.nitems_read(0)
        if isinstance(front[0], _stream_then_silence):
            consumed = min(consumed, len(front[0].samples))
        now = (consumed, len(sink.received), rx.headers_detected(), rx.packets_failed_crc())
        if now != state:
            state, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > SETTLE_S:
            break
        time.sleep(0.05)
    tb.stop()
    tb.wait()
    result = RxResult(list(sink.received), rx.headers_detected(), rx.packets_failed_crc(),
                      getattr(getattr(rx, "peak_filter", None), "dropped", 0))
    release(tb, rx)
    return result


def receive(stream: np.ndarray, imp: Impairments, modulation: str = "qpsk", fec_code: str = "cc",
            samples_per_symbol: int = 2, timeout_s: float = 300.0) -> RxResult:
    """Push ``stream`` through the impairments into ``packet_rx``; what came out and its counters."""
    front = [_stream_then_silence(stream), *_channel_blocks(imp, modulation, samples_per_symbol)]
    if imp.agc:
        front.append(_agc())
    if imp.coarse_cfo:
        front.append(acquisition.coarse_frequency_correction(modulation, fec_code, samples_per_symbol))
    return _run_rx(front, modulation, fec_code, samples_per_symbol, timeout_s)


def random_pdus(count: int, rng: np.random.Generator, min_len: int = 20, max_len: int = 1500) -> list[bytes]:
    return [rng.integers(0, 256, int(rng.integers(min_len, max_len + 1)), dtype=np.uint8).tobytes()
            for _ in range(count)]


def random_gaps(count: int, rng: np.random.Generator, max_gap: int = 5000) -> list[int]:
    """Gaps of 0..max_gap samples: every parity and phase of the sample clock."""
    return [int(g) for g in rng.integers(0, max_gap + 1, count)]


# A recording with every impairment at once (issue #15, "recorded IQ that ships"): made by
# scripts/make_rx_recording.py, decoded by tests/test_rx_recording.py.
RECORDING_IMPAIRMENTS = Impairments(snr_db=15.0, frequency_offset=3e-4, sfo_ppm=-30.0,
                                    taps=tuple(multipath_taps("3-tap")), phase_noise=0.01,
                                    level_dbfs=-25.0, seed=21)


def make_recording(path: str, pdu_count: int = 120, seed: int = 21,
                   imp: Impairments = RECORDING_IMPAIRMENTS) -> list[bytes]:
    """Write complex64 IQ (2 samples/symbol, QPSK CC r=1/2) of ``pdu_count`` seeded PDUs after random gaps,
    through every impairment of ``imp``, to ``path``; returns the PDUs. Deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    pdus = random_pdus(pdu_count, rng, 20, 1500)
    stream = gapped_stream(tx_bursts(pdus), random_gaps(pdu_count, rng, max_gap=20000))
    tb = gr.top_block()
    chain = [blocks.vector_source_c(stream, False), *_channel_blocks(imp, "qpsk", 2), blocks.file_sink(
        gr.sizeof_gr_complex, str(path), False)]
    tb.connect(*chain)
    tb.run()
    chain[-1].close()
    return pdus


def decode_recording(path: str, agc: bool = True, modulation: str = "qpsk", fec_code: str = "cc",
                     samples_per_symbol: int = 2, timeout_s: float = 300.0) -> RxResult:
    """A recording (complex64 IQ) through the receivers' AGC and ``packet_rx``, as ota_rx_file.py does."""
    front = [_stream_then_silence(np.fromfile(path, np.complex64))]
    if agc:
        front.append(_agc())
    return _run_rx(front, modulation, fec_code, samples_per_symbol, timeout_s)
