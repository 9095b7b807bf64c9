"""packet_rx on streams as real radios deliver them (issue #15): bursts after random gaps of noise, at
odd sample offsets, with carrier and sample-clock offsets, multipath, phase noise and any input level.

The bursts come from the real packet_tx; semcom.radio.impairments lays them into one stream and runs
the channel, with seeded contents, gaps and noise. The counts still vary by a PDU or two from run to
run: pfb_clock_sync_ccf looks for a time_est tag only in the input window of its current symbol, and
when its filter phase wraps at that moment (likeliest when bursts sit exactly on the sample grid, as
without a sample-clock offset) it steps over the tag; whether that happens depends on how the
scheduler cut the stream into calls. The bounds below leave room for that.
"""

import subprocess
import sys
import threading
import time
import zlib

import numpy as np
import pmt
import pytest
from gnuradio import blocks, digital, gr, pdu
from semcom.radio import packet
from semcom.radio.impairments import (Impairments, gapped_stream, multipath_taps, random_gaps, random_pdus,
                                      receive, tx_bursts)

CFO = 2e-4          # cycles/sample, the issue's target condition
SFO_PPM = 20.0


@pytest.fixture(scope="module")
def short_bursts():
    """48 PDUs of 20..600 bytes (QPSK, CC r=1/2) and their bursts."""
    pdus = random_pdus(48, np.random.default_rng(15), 20, 600)
    return pdus, tx_bursts(pdus)


@pytest.fixture(scope="module")
def target_bursts():
    """200 PDUs of 20..1500 bytes and their bursts, with seeded random gaps of 0..5000 samples."""
    rng = np.random.default_rng(2024)
    pdus = random_pdus(200, rng, 20, 1500)
    bursts = tx_bursts(pdus)
    return pdus, gapped_stream(bursts, random_gaps(len(pdus), rng))


# (gaps, impairments, PDUs of 48 that arrived before issue #15)
ANY_OFFSET_CASES = {
    "2001, CFO/SFO": ("2001", Impairments(snr_db=20, frequency_offset=CFO, sfo_ppm=SFO_PPM, seed=5), 35),
    "random": ("random", Impairments(snr_db=20, seed=5), 39),
    "random, noiseless": ("random", Impairments(snr_db=100, seed=5), 40),
}


@pytest.mark.parametrize("case", list(ANY_OFFSET_CASES))
def test_bursts_arrive_whatever_sample_they_start_on(short_bursts, case):
    """A gap of 2001 samples puts every other burst on an odd sample; random gaps put them anywhere and
    in any buffer position, with or without noise between them. Before issue #15 the clock recovery
    converged half a symbol either way and payloads came out one symbol off (35, 39 and 40 of 48 of
    these streams arrived)."""
    pdus, bursts = short_bursts
    gaps, imp, _before = ANY_OFFSET_CASES[case]
    gap_list = [2001] * len(pdus) if gaps == "2001" else random_gaps(len(pdus), np.random.default_rng(3))
    result = receive(gapped_stream(bursts, gap_list), imp)
    assert result.headers_detected == len(pdus)
    assert result.delivered(pdus) >= len(pdus) - 1, (result.delivered(pdus), result.failed_crc)
    assert len(pdus) - result.delivered(pdus) <= result.failed_crc


@pytest.mark.parametrize("snr_db,required", [(20.0, 0.99), (10.0, 0.95)])
def test_issue_targets_with_random_gaps_cfo_and_sfo(target_bursts, snr_db, required):
    """The issue's targets: >= 99% of PDUs at 20 dB and >= 95% at 10 dB with random gaps, 2e-4
    cycles/sample and 20 ppm (QPSK, CC r=1/2). Every PDU that arrives is bit-exact; every one missing
    is a lost header or a counted CRC failure. Before issue #15: 138 and 146 of 200; now 200 and 200."""
    pdus, stream = target_bursts
    result = receive(stream, Impairments(snr_db=snr_db, frequency_offset=CFO, sfo_ppm=SFO_PPM, seed=9))
    delivered = result.delivered(pdus)
    assert len(result.received) == delivered, "a PDU arrived that was never sent"
    assert len(pdus) - delivered <= (len(pdus) - result.headers_detected) + result.failed_crc
    assert delivered >= required * len(pdus), (delivered, result.headers_detected, result.failed_crc)


@pytest.mark.parametrize("sfo_ppm", [50.0, -50.0])
def test_50_ppm_sample_clock_offset_over_the_longest_packets(sfo_ppm):
    """+-50 ppm drifts 1.2 samples over a 1500-byte QPSK/CC burst: the timing loop must track it."""
    pdus = random_pdus(24, np.random.default_rng(50), 1500, 1500)
    stream = gapped_stream(tx_bursts(pdus), random_gaps(len(pdus), np.random.default_rng(51)))
    result = receive(stream, Impairments(snr_db=20, frequency_offset=CFO, sfo_ppm=sfo_ppm, seed=3))
    assert result.delivered(pdus) >= len(pdus) - 1, (result.delivered(pdus), result.failed_crc)


# (impairments, PDUs of 60 that must arrive). Measured at the commit of this test: 58-60 of 60 (the AGC
# costs 2) except the two-tap profile (an echo of -6 dB one sample late, no equalizer: 42 of 60).
IMPAIRMENT_CASES = {
    "3-tap multipath": (Impairments(20, CFO, SFO_PPM, taps=tuple(multipath_taps("3-tap"))), 57),
    "2-tap multipath": (Impairments(20, CFO, SFO_PPM, taps=tuple(multipath_taps("2-tap"))), 36),
    "phase noise 0.01": (Impairments(20, CFO, SFO_PPM, phase_noise=0.01), 57),
    "AGC, -40 dBFS": (Impairments(20, CFO, SFO_PPM, level_dbfs=-40, agc=True), 57),
    "AGC, -10 dBFS": (Impairments(20, CFO, SFO_PPM, level_dbfs=-10, agc=True), 57),
    "AGC, +10 dBFS": (Impairments(20, CFO, SFO_PPM, level_dbfs=10, agc=True), 57),
}


@pytest.fixture(scope="module")
def impairment_stream():
    rng = np.random.default_rng(7)
    pdus = random_pdus(60, rng, 20, 1500)
    return pdus, gapped_stream(tx_bursts(pdus), random_gaps(len(pdus), rng))


# (impairments, PDUs of 60 that must arrive) with the coarse frequency search ahead of packet_rx.
# Measured in three runs at the commit of this test: 60, 60, 60, 59 and 58-59 of 60; the bound leaves
# the same run-to-run room as IMPAIRMENT_CASES.
# The issue's range: +-0.05 cycles/sample (20 ppm at 2.4 GHz and 1 MS/s is 0.048), found per burst.
COARSE_CFO_CASES = {
    "coarse CFO +0.05, 20 dB": (Impairments(20, 0.05, SFO_PPM, coarse_cfo=True), 57),
    "coarse CFO -0.05, 20 dB": (Impairments(20, -0.05, SFO_PPM, coarse_cfo=True), 57),
    "coarse CFO -0.0123, 10 dB": (Impairments(10, -0.0123, SFO_PPM, coarse_cfo=True), 57),
    "coarse CFO 0.05, AGC at -30 dBFS": (Impairments(20, 0.05, SFO_PPM, level_dbfs=-30, agc=True, coarse_cfo=True), 57),
    "coarse CFO 2e-4, 20 dB (no harm)": (Impairments(20, CFO, SFO_PPM, coarse_cfo=True), 57),
}


@pytest.mark.parametrize("case", [*IMPAIRMENT_CASES, *COARSE_CFO_CASES])
def test_multipath_phase_noise_input_level_and_carrier_offsets(impairment_stream, case, capsys):
    pdus, stream = impairment_stream
    imp, required = {**IMPAIRMENT_CASES, **COARSE_CFO_CASES}[case]
    result = receive(stream, imp)
    with capsys.disabled():
        print(f"\n{case}: {result.delivered(pdus)}/{len(pdus)} PDUs, {result.headers_detected} headers, "
              f"{result.failed_crc} CRC failures")
    assert all(r in pdus for r in result.received), "a PDU arrived that was never sent"
    assert result.delivered(pdus) >= required


def test_carrier_offset_beyond_the_correlator_range_is_a_counted_loss_not_garbage(impairment_stream):
    """1e-3 cycles/sample decorrelates packet_rx's access code when the coarse search is off: nothing
    wrong is delivered (the coarse search above exists because this loses PDUs)."""
    pdus, stream = impairment_stream
    result = receive(stream, Impairments(20, 1e-3, SFO_PPM))
    assert all(r in pdus for r in result.received)


def test_coarse_search_at_low_snr_loses_no_more_than_without_it(target_bursts):
    """At 6 dB (QPSK/CC's steep part) the search must not cost PDUs where there is no offset to find:
    its estimates (~4e-5 cycles/sample rms there) are far inside packet_rx's tolerance."""
    pdus, stream = target_bursts
    imp = Impairments(snr_db=6, frequency_offset=CFO, sfo_ppm=SFO_PPM, seed=9)
    without = receive(stream, imp).delivered(pdus)
    imp.coarse_cfo = True
    with_search = receive(stream, imp).delivered(pdus)
    sigma = np.sqrt(len(pdus) * 0.25)                  # binomial spread at PER ~ 1/2, the worst case
    assert with_search >= without - 2 * sigma, (with_search, without)


def _offset_estimates(stream: np.ndarray, frequency_offset: float, snr_db: float):
    from semcom.radio import acquisition
    from semcom.radio.impairments import _channel_blocks

    search = acquisition.coarse_frequency_correction()
    estimates = []
    measure = search.remover._estimate

    def recording(segment):
        offset, coherence = measure(segment)
        if coherence >= acquisition.COHERENCE_THRESHOLD:
            estimates.append(offset)
        return offset, coherence

    search.remover._estimate = recording
    tb = gr.top_block()
    tb.connect(blocks.vector_source_c(stream, False), *_channel_blocks(Impairments(snr_db, frequency_offset), "qpsk", 2),
               search, blocks.null_sink(gr.sizeof_gr_complex))
    tb.run()
    return search, np.array(estimates)


@pytest.mark.parametrize("offset,snr_db", [(0.05, 20.0), (-0.031, 0.0), (0.0, 3.0)])
def test_coarse_search_measures_every_burst_accurately(impairment_stream, offset, snr_db):
    """One estimate per burst (none from noise or payloads), each within 5e-4 cycles/sample: packet_rx's
    correlator tolerates about 1e-3, its Costas loop tracks the rest."""
    pdus, stream = impairment_stream
    search, estimates = _offset_estimates(stream, offset, snr_db)
    assert search.estimates == len(estimates)
    assert len(pdus) - 3 <= len(estimates) <= len(pdus), (len(estimates), search.remover.rejected)
    assert np.abs(estimates - offset).max() < 5e-4, np.abs(estimates - offset).max()


def test_coarse_search_on_noise_and_silence_changes_nothing():
    """Noise alone (2 M samples) and perfect silence: no estimate, so the samples pass unrotated."""
    from semcom.radio import acquisition

    rng = np.random.default_rng(4)
    noise = ((rng.standard_normal(2_000_000) + 1j * rng.standard_normal(2_000_000)) / np.sqrt(2)).astype(np.complex64)
    stream = np.concatenate([noise, np.zeros(100_000, np.complex64)])
    search = acquisition.coarse_frequency_correction()
    sink = blocks.vector_sink_c()
    tb = gr.top_block()
    tb.connect(blocks.vector_source_c(stream, False), search, sink)
    tb.run()
    out = np.array(sink.data())
    assert search.estimates == 0 and search.offset == 0.0
    assert np.array_equal(out[search.delay:], stream[:len(out) - search.delay])


def test_coarse_search_moves_stream_tags_with_their_samples():
    """A tag (e.g. a radio's rx_time) leaves on the sample it came with, ``delay`` later."""
    from semcom.radio import acquisition

    tag = gr.tag_utils.python_to_tag((5000, pmt.intern("rx_time"), pmt.from_long(7), pmt.PMT_F))
    source = blocks.vector_source_c(np.arange(40_000).astype(np.complex64), False, 1, [tag])
    search = acquisition.coarse_frequency_correction()
    sink = blocks.vector_sink_c()
    tb = gr.top_block()
    tb.connect(source, search, sink)
    tb.run()
    tags = [t for t in sink.tags() if pmt.symbol_to_string(t.key) == "rx_time"]
    assert [t.offset for t in tags] == [5000 + search.delay]
    assert np.array(sink.data())[5000 + search.delay] == 5000


def _u8(data):
    return pmt.cons(pmt.make_dict(), pmt.init_u8vector(len(data), list(data)))


def test_scrambler_is_the_stock_additive_scrambler():
    """The keystream is what digital.additive_scrambler_bb (8 bits per byte, reset per packet) XORs on,
    so a stock receiver descrambles with that block: a PDU through the TX's CRC and scrambler, then a
    stock additive_scrambler_bb and crc32_async_bb(check), comes back unchanged."""
    rng = np.random.default_rng(4)
    payloads = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (1, 17, 700, 1500)]
    crc, scrambler = digital.crc32_async_bb(False), packet._payload_scrambler()
    to_stream = pdu.pdu_to_tagged_stream(gr.types.byte_t, packet.LENGTH_TAG)
    stock = digital.additive_scrambler_bb(packet.SCRAMBLER_MASK, packet.SCRAMBLER_SEED, packet.SCRAMBLER_REG_LEN,
                                          0, 8, packet.LENGTH_TAG)
    to_pdu = pdu.tagged_stream_to_pdu(gr.types.byte_t, packet.LENGTH_TAG)
    check = digital.crc32_async_bb(True)
    tb = gr.top_block()
    sink = blocks.message_debug()
    tb.msg_connect(crc, "out", scrambler, "in")
    tb.msg_connect(scrambler, "out", to_stream, "pdus")
    tb.connect(to_stream, stock, to_pdu)
    tb.msg_connect(to_pdu, "pdus", check, "in")
    tb.msg_connect(check, "out", sink, "store")
    tb.start()
    for p in payloads:
        crc._post(pmt.intern("in"), _u8(p))
        time.sleep(0.05)      # one packet at a time: the stock scrambler resets on each packet_len tag
    deadline = time.time() + 10
    while sink.num_messages() < len(payloads) and time.time() < deadline:
        time.sleep(0.02)
    tb.stop()
    tb.wait()
    out = [bytes(pmt.u8vector_elements(pmt.cdr(sink.get_message(i)))) for i in range(sink.num_messages())]
    assert out == payloads
    keystream = packet.scrambler_keystream(4000)
    assert np.array_equal(packet.scrambler_keystream(100), keystream[:100])
    bits = np.unpackbits(keystream)
    assert abs(bits.mean() - 0.5) < 0.02                # balanced


@pytest.mark.parametrize("fill", [0x00, 0xFF, 0x55])
def test_a_run_of_equal_bytes_does_not_go_out_as_a_carrier(fill):
    """Without the scrambler a PDU of equal bytes is a constant (or two-point) symbol sequence after the
    convolutional code: a spectral line carrying most of the burst's power. Scrambled, the payload's
    spectrum is flat; the PDU still arrives."""
    data = bytes([fill]) * 1000
    burst = tx_bursts([data])[0]
    body = burst[np.abs(burst) > 1e-3][2000:-2000]        # the payload part of the burst
    spectrum = np.abs(np.fft.fft(body[:8192])) ** 2
    assert spectrum.max() / spectrum.mean() < 30, spectrum.max() / spectrum.mean()   # a line: > 1000
    result = receive(gapped_stream([burst], [1234]), Impairments(snr_db=20))
    assert result.received == [data]


def test_packet_counters_are_read_consistently_while_frames_arrive():
    """packets_failed_crc() was seen at -1: two counters updated by two handlers. Now one handler counts
    both under one lock; a reader polling while 3000 frames arrive never sees a negative or an
    inconsistent count, and the final counts are exact."""
    rx = packet.packet_rx("qpsk", "cc", 2, mtu_bytes=200)
    rng = np.random.default_rng(8)
    frames, good = [], 0
    for k in range(3000):
        payload = rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
        frame = payload + zlib.crc32(payload).to_bytes(4, "little")
        if k % 3 == 0:
            frame = bytes([frame[0] ^ 1]) + frame[1:]       # a CRC failure
        else:
            good += 1
        frames.append(_u8(packet._scramble(np.frombuffer(frame, np.uint8)).tobytes()))
    tb = gr.top_block()
    sink = blocks.message_debug()
    tb.msg_connect(rx.payload_check, "out", sink, "store")
    seen, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            seen.append((rx.packets_ok(), rx.packets_failed_crc()))

    tb.start()
    thread = threading.Thread(target=reader)
    thread.start()
    for frame in frames:
        rx.payload_check._post(pmt.intern("in"), frame)
    deadline = time.time() + 20
    while (rx.packets_ok() + rx.packets_failed_crc() < len(frames) or sink.num_messages() < good) \
            and time.time() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join()
    tb.stop()
    tb.wait()
    assert len(seen) > 100
    assert all(ok >= 0 and failed >= 0 and ok + failed <= len(frames) for ok, failed in seen)
    assert (rx.packets_ok(), rx.packets_failed_crc()) == (good, len(frames) - good)
    assert sink.num_messages() == good


def _stream_with_a_hot_burst(short_bursts, hot, gain=16.0):
    """The short bursts after random gaps at 20 dB, burst ``hot`` (and the gap before it) ``gain`` x too
    strong: what the AGC of semantic_receiver delivers when its first gain, set from the first buffer,
    was computed on noise, or what a nearby transmitter or a gain step does."""
    pdus, bursts = short_bursts
    rng = np.random.default_rng(16)
    gaps = random_gaps(len(pdus), rng)
    stream = gapped_stream(bursts, gaps)
    noise = packet.noise_voltage_for_snr(20, "qpsk", 2) / np.sqrt(2)
    stream = stream + (noise * (rng.standard_normal(len(stream)) + 1j * rng.standard_normal(len(stream)))).astype(np.complex64)
    start = sum(gaps[:hot]) + sum(len(b) for b in bursts[:hot])
    stream[start:start + gaps[hot] + len(bursts[hot])] *= gain
    return pdus, stream


def _in_child(code, stream, pdus, tmp_path, timeout_s=90):
    """Run ``code`` (argv: the stream's .npy, the PDUs' .npy) in a fresh interpreter; its last stdout
    line. A stalled flowgraph answers nothing (not even nitems_read, nor tb.stop()), so it is killed."""
    np.save(tmp_path / "stream.npy", stream)
    np.save(tmp_path / "pdus.npy", np.array(pdus, dtype=object), allow_pickle=True)
    try:
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "stream.npy"), str(tmp_path / "pdus.npy")],
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the receiver did not get through the stream in {timeout_s} s (a few s when it works)")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split("\n")[-2]


_CONSUME = """
import sys
import numpy as np
from gnuradio import blocks, gr
from semcom.radio import packet
stream = np.load(sys.argv[1])
tb = gr.top_block()
rx = packet.packet_rx()
tb.connect(blocks.vector_source_c(stream, False), rx)
tb.run()
print(rx.clock_sync.nitems_read(0), rx.clock_sync.nitems_written(0))
"""

_DELIVER = """
import sys
import numpy as np
from semcom.radio.impairments import Impairments, receive
stream, pdus = np.load(sys.argv[1]), list(np.load(sys.argv[2], allow_pickle=True))
result = receive(stream, Impairments(snr_db=100))
print(result.delivered(pdus), result.headers_detected)
"""


def test_a_burst_far_too_strong_does_not_stall_the_clock_recovery(short_bursts, tmp_path):
    """A burst 24 dB too hot, unlimited, drove pfb_clock_sync_ccf's phase (its step grows with the level
    squared) so far that it emitted about 5 symbols per input sample and then stopped consuming, both
    cores busy (and before the peak filter dropped corr_start/amp_est, one tag on every sample above the
    threshold, it stopped at once: 14 k of 430 k samples)."""
    pdus, stream = _stream_with_a_hot_burst(short_bursts, 0)
    consumed, symbols = map(int, _in_child(_CONSUME, stream, pdus, tmp_path, 60).split())
    assert consumed >= len(stream) - 20000, (consumed, len(stream))
    assert abs(symbols - consumed / 2) < 50, (symbols, consumed)     # 2 samples per symbol


@pytest.mark.parametrize("hot", [0, 24])
def test_bursts_around_one_far_too_strong_still_arrive(short_bursts, tmp_path, hot):
    """Only the hot burst and the one after it may be lost (measured: those two; 6x too hot, only the
    hot one). Before, protocol_parser_b's access-code search ran off its input on the hot burst's
    garbage headers and no header was parsed again (0 of 48), or the clock recovery stalled."""
    pdus, stream = _stream_with_a_hot_burst(short_bursts, hot)
    delivered, headers = map(int, _in_child(_DELIVER, stream, pdus, tmp_path).split())
    assert delivered >= len(pdus) - 2, (delivered, headers)


_TOO_HOT = ("issue #15: 16 dB above packet_tx's level the correlator fires all through the payload (random data "
            "correlates above its absolute threshold: 18 k peaks for 48 bursts), and a peak kept after each "
            "header-length holdoff resets the clock and Costas loops mid-payload: 48 headers, 0 PDUs")
_TOO_WEAK = ("issue #15: the correlator's threshold is absolute (half the nominal peak power), so 3 dB below "
             "packet_tx's level, with CFO and noise, no burst is found: the AGC is what makes this work")


@pytest.mark.parametrize("level_dbfs, lost_at_most", [
    pytest.param(-3.0, 1, marks=pytest.mark.xfail(strict=True, reason=_TOO_WEAK)),
    (10.0, 3),
    pytest.param(16.0, 1, marks=pytest.mark.xfail(strict=True, reason=_TOO_HOT)),
])
def test_bursts_off_the_expected_level_without_an_agc(short_bursts, level_dbfs, lost_at_most):
    """How far from packet_tx's level packet_rx alone copes (the window an AGC must hit): +10 dB loses a
    few payloads to the CRC (measured 2 of 48), beyond that it fails as the xfail reasons say."""
    pdus, bursts = short_bursts
    stream = gapped_stream(bursts, random_gaps(len(pdus), np.random.default_rng(17)))
    result = receive(stream, Impairments(snr_db=20, frequency_offset=2e-4, sfo_ppm=20, level_dbfs=level_dbfs))
    assert result.delivered(pdus) >= len(pdus) - lost_at_most, (result.delivered(pdus), result.headers_detected)
