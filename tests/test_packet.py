"""Loopback tests of semcom.radio.packet: packet_tx -> channel_model -> packet_rx."""
import random
import time

import numpy as np
import pmt
import pytest
from gnuradio import blocks, channels, gr
from semcom.radio import packet
from semcom.radio.flowgraph import release
from semcom.radio.pdu import from_pdu, pdu_list_source, to_pdu

SPS = 2
FREQ_OFFSET = 2e-4  # cycles/sample, as the loopback default
TIMING_OFFSET = 1.00002  # 20 ppm sample-clock offset (a TCXO-class radio)


def _random_pdus(count, seed, max_len=1200):
    rng = random.Random(seed)
    return [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, max_len))) for _ in range(count)]


def _loopback(pdus, modulation, fec_code, snr_db, timeout_s=20, idle_s=2.0, channel_seed=7):
    """``pdus`` through one MCS; (received payloads, rx) as for ``_link``."""
    received, _, rx = _link(pdus, modulation, fec_code, snr_db, timeout_s, idle_s, channel_seed)
    return [payload for _, payload in received], rx


def _mixed_loopback(pdus, mcs, snr_db=25, channel_seed=3, timeout_s=60):
    """``pdus[i]`` on MCS ``mcs[i]`` (None: no MCS metadata, packet_tx's qpsk/cc) through one receiver."""
    messages = [to_pdu(p, {} if m is None else {packet.MCS_KEY: m}) for p, m in zip(pdus, mcs)]
    return _link(messages, "qpsk", "cc", snr_db, timeout_s, 2.0, channel_seed)


def _link(pdus, modulation, fec_code, snr_db, timeout_s, idle_s, channel_seed):
    """packet_tx -> channel -> packet_rx until all PDUs arrived, the flowgraph has been idle for ``idle_s``
    (no sample sent or received, no new header, decoded payload or PDU: a busy machine slows it down but
    does not end it early) or the timeout; returns ([(meta, payload)], tx, rx)."""
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
    received = [from_pdu(sink.get_message(i)) for i in range(sink.num_messages())]
    release(tb, tx, rx)      # else the buffers (shared memory) outlive the run
    return received, tx, rx


SEEDS = range(5)
# PDUs (of 5 seeds x 8) that may be missing at 25 dB. Every PDU that arrives must be bit-exact and in
# order; a missing one must be accounted for by a CRC failure or a missed header, never by silence.
# BPSK/QPSK: the clock recovery occasionally slips a symbol at a payload start (seen once in about
# 8 runs of this test, i.e. ~1 PDU in 3000). 16-QAM uncoded/repetition: the first burst after a cold
# start is often lost while the FLL/Costas loops acquire the offset (measured: 7/150 PDUs lost
# uncoded, all of them the first; 13/150 with repetition, 11 of them the first).
# 16-QAM repetition (frames up to ~14k symbols): the receiver of every MCS has no FLL; with the 16-QAM
# branch's loop at 2*pi/800 it lost 19 of 40, at 2*pi/1600 2 of 40 (and 16-QAM uncoded 0).
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


def _guard_answers(guard, headers):
    """What ``guard`` answers the demux for each parsed header (dicts or #f), in order."""
    sink = blocks.message_debug()
    tb = gr.top_block()
    tb.msg_connect(guard, "out", sink, "store")
    tb.start()
    for msg in headers:
        guard._post(pmt.intern("in"), msg)
    deadline = time.time() + 5
    while sink.num_messages() < len(headers) and time.time() < deadline:
        time.sleep(0.02)
    tb.stop()
    tb.wait()
    return [sink.get_message(i) for i in range(sink.num_messages())]


def _parsed(field):
    """The stock parser's answer (header_format_default, bps 1) to a header carrying ``field``."""
    return pmt.to_pmt({packet.PAYLOAD_SYMBOLS_TAG: 8 * field})


def test_header_announcing_more_than_the_mtu_is_rejected_not_fatal():
    """A noise-made header can announce up to 2047 bytes; the payload decoder would throw on it and
    its thread would die. The guard answers the demux with #f instead, and counts it."""
    guard = packet._header_guard(200)
    too_long = _parsed(packet.header_field(201, "qpsk", "cc"))
    fits = _parsed(packet.header_field(200, "qpsk", "cc"))
    out = _guard_answers(guard, [too_long, fits, pmt.PMT_F])
    assert pmt.eq(out[0], pmt.PMT_F) and pmt.is_dict(out[1]) and pmt.eq(out[2], pmt.PMT_F)
    assert guard.rejected == 1
    symbols = pmt.to_long(pmt.dict_ref(out[1], pmt.intern(packet.PAYLOAD_SYMBOLS_TAG), pmt.PMT_NIL))
    assert symbols == packet.payload_symbols(200, "qpsk", "cc")
    assert pmt.symbol_to_string(pmt.dict_ref(out[1], pmt.intern(packet.MCS_KEY), pmt.PMT_NIL)) == "qpsk-r12"


def test_header_fields_name_every_mode_and_the_guard_decodes_them():
    """Every (modulation, code) pair has a code on air; the guard turns each header back into the mode's
    name and payload length; a branch's guard takes only its own modulation's bursts."""
    guard, bpsk_guard = packet._header_guard(1500), packet._header_guard(1500, "bpsk")
    headers = [_parsed(packet.header_field(1000, m, f)) for m, f in packet.PHY_MODES]
    for msg, (m, f) in zip(_guard_answers(guard, headers), packet.PHY_MODES):
        meta = pmt.to_python(msg)
        assert meta[packet.MCS_KEY] == packet.mcs_name(m, f) and packet.phy_mode(meta[packet.MCS_KEY]) == (m, f)
        assert meta[packet.PAYLOAD_SYMBOLS_TAG] == packet.payload_symbols(1000, m, f)
    answers = _guard_answers(bpsk_guard, headers)
    assert [pmt.is_dict(a) for a in answers] == [m == "bpsk" for m, _ in packet.PHY_MODES]
    assert bpsk_guard.accepted == len(packet.FEC_CODES) and bpsk_guard.unknown_mcs == 0
    code = packet.PHY_MODES.index(("bpsk", "cc14"))
    assert packet.header_bytes(5, "bpsk", "cc14")[8:] == bytes([code << 3, 5]) * 2     # the field, twice


def test_mixed_mcs_pdus_through_one_receiver_arrive_bit_exact_with_their_mcs():
    """One packet_tx and one packet_rx carry PDUs of every MCS of the table (and the other modes), in
    any order: each arrives bit-exact, with the MCS it was sent on in its metadata; a PDU without an
    MCS goes out on the transmitter's configured one."""
    from semcom.radio.mcs import MCS_NAMES

    names = list(MCS_NAMES) + ["qpsk-none", "16qam-repetition", "bpsk-repetition", None]
    rng = random.Random(14)
    mcs = [names[i % len(names)] for i in range(3 * len(names))]
    rng.shuffle(mcs)
    pdus = _random_pdus(len(mcs), seed=14, max_len=1200)
    received, tx, rx = _mixed_loopback(pdus, mcs)
    got = {payload: meta for meta, payload in received}
    assert set(got) <= set(pdus), "a corrupt or unknown PDU was delivered"
    for payload, m in zip(pdus, mcs):
        if payload in got:
            assert got[payload][packet.MCS_KEY] == (m or "qpsk-r12")
    assert len(got) >= len(pdus) - 1, (len(got), len(pdus))
    assert tx.unknown_mcs() == 0 and rx.unknown_mcs() == 0


def test_header_announcing_an_unknown_mcs_is_counted_and_dropped(monkeypatch):
    """A sender announcing a mode code the receiver does not know (a newer table, a hostile sender):
    the burst is dropped and counted, and the bursts after it still arrive. Codes 15 (the first unused)
    and 31 (the largest the field holds); a header field of 0 parses too (bpsk-r12, length 0: the
    stock header_format_counter's parser would divide by it)."""
    real = packet.header_bytes
    hostile = {77: 15, 78: 31}

    def header_bytes(pdu_len, modulation, fec_code):
        if pdu_len in hostile:
            field = hostile[pdu_len] << packet.HEADER_LENGTH_BITS | pdu_len
            return real(pdu_len, modulation, fec_code)[:8] + field.to_bytes(2, "big") * 2
        return real(pdu_len, modulation, fec_code)

    monkeypatch.setattr(packet, "header_bytes", header_bytes)
    pdus = [b"a" * 50, b"b" * 77, b"c" * 60, b"d" * 78, b"e" * 40, b"f"]
    received, tx, rx = _mixed_loopback(pdus, ["qpsk-r12", "bpsk-r12", "16qam-r12", "qpsk-r34", "bpsk-r14",
                                              "qpsk-r12"])
    payloads = [payload for _, payload in received]
    assert sorted(payloads) == sorted(p for p in pdus if len(p) not in hostile)
    assert rx.unknown_mcs() == 2
    assert tx.unknown_mcs() == 0


@pytest.mark.parametrize("snr_db", [5, 15])
def test_pdus_carry_an_snr_estimate_from_their_header(snr_db):
    """Each PDU's metadata has the M2M4 Es/N0 estimate of its header's symbols (snr_db): within 1 dB on
    average of the channel's at 5 and 15 dB, whatever the payload's MCS, and within 1.5 dB per PDU."""
    mcs = ["bpsk-r14", "bpsk-r12"] * 6 if snr_db == 5 else ["qpsk-r12", "qpsk-r34", "16qam-r12"] * 4
    pdus = _random_pdus(len(mcs), seed=snr_db, max_len=300)
    received, _, _ = _mixed_loopback(pdus, mcs, snr_db=snr_db)
    estimates = [meta[packet.SNR_KEY] for meta, _ in received]
    assert len(estimates) >= len(pdus) - 2
    assert np.mean(estimates) == pytest.approx(snr_db, abs=1.0)
    assert max(abs(e - snr_db) for e in estimates) < 1.5, estimates


def test_transmitter_drops_pdus_naming_an_unknown_mcs():
    received, tx, rx = _mixed_loopback([b"x" * 30, b"y" * 30], ["qpsk-r99", "bpsk-r12"])
    assert [payload for _, payload in received] == [b"y" * 30]
    assert tx.unknown_mcs() == 1


def test_released_flowgraphs_free_most_of_their_shared_memory():
    """Dozens of loopback runs in one process (eval --channel-mode flowgraph, the test suite) must not
    exhaust the system's shared-memory segments: release() frees what GNU Radio's hier-block
    self-references and message connections keep alive (measured: 46 segments per run without it, 14
    with it before it undid message connections, 0 now; the receiver of every MCS leaves 34 without that)."""
    import subprocess

    def segments():
        out = subprocess.run(["ipcs", "-m"], capture_output=True, text=True, check=True).stdout
        return sum(1 for line in out.splitlines() if line.startswith("0x"))

    before = segments()
    for seed in range(3):
        received = _loopback(_random_pdus(2, seed=seed, max_len=50), "qpsk", "cc", snr_db=25, channel_seed=seed + 1)[0]
        assert len(received) == 2      # and the receiver goes: its blocks hold their buffers while it lives
    assert segments() - before <= 3 * 5


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


def _stock_header_bits(length):
    """The 96 header bits the stock formatter writes for a PDU of ``length`` bytes."""
    tb = gr.top_block()
    tag = gr.tag_utils.python_to_tag((0, pmt.intern("len"), pmt.from_long(length), pmt.PMT_NIL))
    sink = blocks.vector_sink_b()
    tb.connect(blocks.vector_source_b([0] * length, False, 1, [tag]),
               packet.digital.protocol_formatter_bb(packet._header_format(), "len"), sink)
    tb.run()
    return np.unpackbits(np.array(sink.data(), np.uint8))


class _chunked_source(gr.sync_block):
    """``bits`` at most ``chunk`` per call: headers split across the parser's calls, as a scheduler may."""

    def __init__(self, bits, chunk):
        gr.sync_block.__init__(self, "chunked_source", None, [np.uint8])
        self.bits, self.chunk, self.sent = bits, chunk, 0

    def work(self, input_items, output_items):
        n = min(len(output_items[0]), self.chunk, len(self.bits) - self.sent)
        if n == 0:
            return -1
        output_items[0][:n] = self.bits[self.sent:self.sent + n]
        self.sent += n
        return n


def _verdicts(parser, bits, chunk):
    """``bits`` into ``parser`` (a header parser block), ``chunk`` per call; its 'info' messages."""
    tb = gr.top_block()
    store = blocks.message_debug()
    source = _chunked_source(bits, chunk)   # a Python block needs a Python reference while it runs
    tb.connect(source, parser)
    tb.msg_connect(parser, "info", store, "store")
    tb.run()
    deadline = time.monotonic() + 5
    while store.num_messages() < len(bits) // 96 and time.monotonic() < deadline:
        time.sleep(0.01)
    return [store.get_message(i) for i in range(store.num_messages())]


def test_header_parser_judges_each_header_like_the_stock_format_and_on_its_own_bits():
    """Per header, the verdict of the stock header_format_default (3 access-code bit errors taken, 4 not,
    the two length fields must agree); a garbage header (the access code cut at its end, as a burst far
    too hot gives) does not spoil the next one, which left protocol_parser_b deaf for good."""
    good = [_stock_header_bits(n) for n in (1, 300, 1500)]
    three_off, four_off, lengths_differ = good[1].copy(), good[1].copy(), good[1].copy()
    three_off[[0, 9, 63]] ^= 1
    four_off[[0, 9, 30, 63]] ^= 1
    lengths_differ[95] ^= 1
    cut_code = np.concatenate([np.zeros(40, np.uint8), good[0][:56]])
    frames = [*good, three_off, four_off, lengths_differ, cut_code, good[2]]
    expected = [8 * 1, 8 * 300, 8 * 1500, 8 * 300, None, None, None, 8 * 1500]
    for chunk in (96, 7):
        verdicts = _verdicts(packet._header_parser(packet._header_format()), np.concatenate(frames), chunk)
        got = [pmt.to_long(pmt.dict_ref(v, pmt.intern(packet.PAYLOAD_SYMBOLS_TAG), pmt.PMT_NIL))
               if pmt.is_dict(v) else None for v in verdicts]
        assert got == expected
    stock = _verdicts(packet.digital.protocol_parser_b(packet._header_format()), np.concatenate(good), 96)
    assert [pmt.to_long(pmt.dict_ref(v, pmt.intern(packet.PAYLOAD_SYMBOLS_TAG), pmt.PMT_NIL))
            for v in stock if pmt.is_dict(v)] == expected[:3]
