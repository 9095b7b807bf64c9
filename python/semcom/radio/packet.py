"""Burst packet modem built from GNU Radio's own gr-digital / gr-fec / gr-pdu blocks.

Modelled on GNU Radio's ``examples/digital/packet`` (packet_tx / packet_rx), written as
plain Python hier blocks so that the modulation and the payload FEC can be chosen by name.

Frame on air (symbol rate, before the RRC pulse shaping)::

    ramp-up | header (BPSK, repetition-9) | scrambled payload + CRC32 (FEC, payload constellation) | ramp-down | zeros

The header announces the burst's MCS (``PHY_MODES`` code and PDU length in header_format_default's
16-bit field, see HEADER_LENGTH_BITS), so one packet_rx decodes bursts of every MCS in one stream, and
packet_tx sends each PDU on the MCS its metadata names (``MCS_KEY``); received PDUs carry their MCS and
an Es/N0 estimate of their header (``SNR_KEY``) in their metadata.

The payload and its CRC32 are scrambled (additively, x^17 + x^14 + 1, reset per packet) before the FEC
encoder, so that a run of equal bytes does not go out as a bare carrier; ``scrambler_keystream`` is
bit-exact with stock ``digital.additive_scrambler_bb(SCRAMBLER_MASK, SCRAMBLER_SEED, SCRAMBLER_REG_LEN,
0, 8, "packet_len")``, which is how a stock gr-digital receiver descrambles (docs/ota.md).

The header is always BPSK on the diagonal, so packet detection does not depend on the payload
modulation; its points are a subset of the QPSK/16-QAM constellations (and BPSK payloads lie on the same
diagonal), so a Costas loop tracks phase through header and payload of a burst; the absolute phase
(Costas ambiguity) is reset on every burst from the ``phase_est`` tag of the access-code correlator.

RX chain: access-code correlator -> duplicate-peak filter -> polyphase clock recovery (its phase set per
burst from the correlator's time_est) -> one branch per modulation: [BPSK: rotation onto the real axis]
-> Costas loop (2nd order for BPSK, 4th for QPSK/16-QAM, bandwidth per modulation) -> header/payload
demux -> header parser and guard (taking the bursts of its modulation) -> payload soft decisions -> the
code's rate matcher and FEC decoder. The 16-QAM FLL of the one-modulation receiver is gone: it sat
ahead of the shared correlator, where it hurt BPSK/QPSK (see the note above CLOCK_LOOP_BW).
"""

import functools
import math
import threading
import zlib

import numpy as np
import pmt
from gnuradio import analog, blocks, digital, fec, filter, gr, pdu
from gnuradio.filter import firdes
from semcom.radio.flowgraph import releasable_hier_block2

MODULATIONS = ("bpsk", "qpsk", "16qam")
# Payload codes. The "cc" family is one gr-fec K=7 rate-1/2 convolutional code (tail-biting, soft Viterbi),
# rate-matched after the encoder: "cc34" punctures it to 3/4 (the 802.11a pattern), "cc14" sends the
# coded block twice and the receiver averages the copies' soft bits before the Viterbi decoder
# (maximal-ratio combining). gr-fec's cc_decoder decodes rate 1/2 only, hence repetition for rate 1/4.
# A rate 1/8 ("cc14" sent 4 times) was tried and dropped: below about -1 dB Es/N0 the burst is not
# acquired at all (0 of 60 headers at -4 dB, 4 of 60 at -2 dB), so a lower payload rate buys nothing.
FEC_CODES = ("cc", "cc34", "cc14", "repetition", "none")
FEC_CODE_RATES = {"cc": 1 / 2, "cc34": 3 / 4, "cc14": 1 / 4, "repetition": 1 / 3, "none": 1.0}

ACCESS_CODE = digital.packet_utils.default_access_code  # 64 bits
ACCESS_CODE_THRESHOLD = 3  # access-code bit errors tolerated by the header parser
# Header FEC: a repetition code, as in the loopback example. One factor for every MCS of a link (one
# receiver decodes them all): 9, because rate 1/4 works about 3 dB below rate 1/2, where a
# repetition-3 header is lost first (BPSK/CC 1/4 at 0 dB, 60 PDUs: 50 headers parsed with 9, 38 with 3).
# packet_tx/packet_rx take another factor (both ends must agree).
HEADER_REPETITION = 9
# The MCS rides in the header: header_format_default's layout (access code, then one 16-bit field sent
# twice, which its parser compares), with the field holding (phy mode code << 11) | PDU length in bytes
# instead of the coded length. The stock parser (bps 1) reports it as "payload symbols" = 8 x field;
# _header_guard decodes it and rewrites "payload symbols" for the announced mode, which the demux needs.
# header_format_counter's bps field was the stock alternative: its parser divides by the received field,
# and a header whose field reads 0 (a bit error, noise, a hostile sender) kills the process (SIGFPE,
# measured with 3.10.5); that field is also not covered by the duplicate check, and it adds 32 bits.
HEADER_LENGTH_BITS = 11             # PDU length: MTUs up to 2047 bytes
HEADER_MODE_BITS = 16 - HEADER_LENGTH_BITS
CRC_BYTES = 4
# Additive scrambler on payload + CRC32 (after the CRC, before the FEC encoder), reset at every packet.
# x^17 + x^14 + 1 in gr::digital::lfsr's convention (mask bits are the feedback taps, reg_len is the
# degree minus one): a maximal-length sequence of 131071 bits, longer than any frame, so a payload of
# equal bytes comes out as pseudo-random bits instead of a constant symbol (a carrier).
SCRAMBLER_MASK = 0x24001
SCRAMBLER_SEED = 0x1FFFF
SCRAMBLER_REG_LEN = 16

CC_CONSTRAINT_LENGTH = 7
CC_RATE = 2
CC_POLYS = [109, 79]
PAYLOAD_REPETITION = 3
# Tail-biting: the coded frame is exactly CC_RATE x the data bits, a whole number of bytes. A
# terminated code adds 2 x 6 tail bits, of which the byte-oriented async encoder dropped the last
# half byte; the decoder then lost the last bits of the CRC on some (long, 16-QAM) frames.
CC_MODE = fec.CC_TAILBITING
CC_FAMILY = ("cc", "cc34", "cc14")
# Rate 3/4 puncturing of the interleaved rate-1/2 output (poly 109 = 0o155, 79 = 0o117: the bit-reversed
# 0o133/0o171 of 802.11a, in the same order): keep A1 B1 A2 B3 of every 3 input bits.
PUNCTURE_PATTERN_3_4 = (1, 1, 1, 0, 0, 1)
CC_BLOCK_REPEATS = {"cc14": 2}

NFILTS = 32  # polyphase filter arms of the resampler and the clock recovery
TX_RRC_SPAN_SYMBOLS = 5
RX_RRC_SPAN_SYMBOLS = 11

BURST_RAMP_LENGTH = 20  # Hann ramp length in symbols; burst_shaper inserts phasing symbols there
BURST_TAIL_MARGIN_SYMBOLS = 512  # extra silence after each burst, on top of the RX block sizes

# Coarse frequency correction ahead of the correlator (as in GNU Radio's packet_rx): with the offset
# removed, the correlator's phase_est (the phase at the middle of the access code) is also valid at
# the header start where the Costas loop takes it, and the Costas loops can stay narrow. Its range is
# clamped so that noise between bursts cannot walk it away. Used for 16-QAM only: between bursts the
# FLL still wanders in the noise, and at BPSK/QPSK operating SNRs (4-12 dB) that wander decorrelates
# the 384-sample access code: measured with QPSK/CC, 200-byte PDUs, 40 per point, CRC-passed PDUs
# with/without it: 10/26 at 4 dB, 25/40 vs 40/40 at 8 dB, 38/40 vs 40/40 at 12 dB. 16-QAM works
# only above about 20 dB, where it is harmless and shortens the phase pull-in of the first burst.
# The receiver of every mode (issue #14) has no FLL: it would sit ahead of the shared correlator.
CLOCK_LOOP_BW = 2 * math.pi / 400
CLOCK_MAX_DEVIATION = 1.5
# Samples into the clock recovery are limited to this magnitude (packet_tx sends about unit RMS, peaks
# below 2): pfb_clock_sync_ccf's phase step grows with the square of the level, and a burst 16 dB too
# hot made it emit 5 symbols per input sample and stall (tests/test_rx_impairments.py, hot burst).
CLOCK_SYNC_MAX_AMPLITUDE = 4.0
# Soft decisions come from a look-up table built for this noise power: the default (1.0, far above
# any usable SNR) makes 16-QAM's inner-bit LLRs so flat that noise flips their sign although the
# symbol decision is right. The LLRs are then scaled and clipped to +-1: gr-fec's async decoders
# map a float x to the byte 127 + 48x, which wraps around for |x| > 2.6.
SOFT_DECISION_NOISE_POWER = 0.2
SOFT_DECISION_LUT_BITS = 8
SOFT_DECISION_SCALE = 0.25
# Loop bandwidths per branch, measured on the receiver of every MCS (benchmarks/phy_mcs_header.py per,
# 200 PDUs per length, 2e-4 cycles/sample, 20 ppm; PER of 1000-byte PDUs): qpsk-r12 at 4.5 dB 0.455 with
# 2*pi/400, 0.070 with 2*pi/800, 0.035 with 2*pi/1600 (its headers: 12% lost with 2*pi/400, none with
# 1600); 16qam-r12 at 14 dB 0.375 with 2*pi/800, 0.095 with 2*pi/1600; repetition-coded 16-QAM frames
# (up to ~14k symbols) lost 19 of 40 at 25 dB with 2*pi/800 (tests/test_packet.py). A wide loop follows
# the noise and slips cycles over long payloads. bpsk-r14 at 0 dB: 0.295 with 2*pi/200, 0.270 with 800
# (within noise); BPSK keeps its loop. tests/test_rx_impairments.py (phase noise, 50 ppm, carrier
# offsets) passes with QPSK at 2*pi/1600.
COSTAS_LOOP_BW = {"bpsk": 2 * math.pi / 200, "qpsk": 2 * math.pi / 1600, "16qam": 2 * math.pi / 1600}
# One 4th-order loop for every modulation (BPSK on the diagonal) was measured and dropped: BPSK/CC 1/4,
# 64-byte PDUs, 100 per point, headers parsed at -1 / +1 dB: 2π/200: 0 / 0; 2π/400: 2 / 12; 2π/800: 9 / -;
# 2π/1600: 4 / 94; 2π/3200: 86 / 99 (a loop that narrow then had to hold 16-QAM's phase).
# The Costas loops' frequency range, in cycles per sample. Unclamped (+-1 rad/symbol) the loop's
# frequency wanders in the noise between bursts and every burst starts with a pull-in; clamped, a burst
# after a long gap is found more often at low SNR (QPSK/CC, 6 dB, 120 PDUs after random gaps of up to
# 5000 samples, 2e-4 cycles/sample and 20 ppm: 103 headers unclamped, 110 clamped). The correlator
# does not find bursts beyond about 1e-3 anyway (the one-mode receiver's 16-QAM FLL removed up to 2e-3).
COSTAS_MAX_OFFSET = 2e-3
CORRELATOR_THRESHOLD = 0.5  # of the noise-free peak power: tolerates ~1e-3 cycles/sample offset
# Correlator tag -> first header symbol at the clock-sync output, measured per samples/symbol
# (like the mark_delays table of GNU Radio's packet_rx example; depends on the filter lengths).
MARK_DELAY_SYMBOLS = {2: 11, 4: 10, 8: 9}

LENGTH_TAG = "packet_len"
# The demux triggers on the correlator's corr_est tag; the clock recovery sets its filter phase from
# the time_est tag at the same offset, as in GNU Radio's packet_rx example. Before issue #15 time_est
# was removed: the timing loop then entered every burst with the phase it had drifted to in the noise
# and converged during the header, half a symbol either way, while pfb_clock_sync_ccf had already
# placed the trigger tag by its phase at the tag. A burst that did not start on the sample parity the
# loop had kept from the previous one (any gap of odd length, any real stream) came out one symbol
# early or late and failed its CRC. tests/test_rx_impairments.py (QPSK/CC, random gaps of 0..5000
# samples, 2e-4 cycles/sample, 20 ppm, 200 PDUs): 138 delivered at 20 dB and 146 at 10 dB before,
# 200 and 200 with time_est. time_est was dropped because it was "often half a sample off": that was
# the correlator firing twice on one access code (a repetition-coded code correlates to 2/3 of its
# peak one symbol off, which with noise or a frequency offset crosses the threshold two samples after
# the peak), and a time_est from there is half a symbol wrong. _correlator_peak_filter keeps one
# tag set per access code: the strongest within (repetition + 1) symbols.
TRIGGER_TAG = "corr_est"
CORRELATOR_TAGS = ("corr_est", "time_est", "phase_est")
PAYLOAD_SYMBOLS_TAG = "payload symbols"

_BITS_PER_SYMBOL = {"bpsk": 1, "qpsk": 2, "16qam": 4}
# Every (modulation, fec_code) pair a header can announce; its position is the code on air (never reorder:
# append). Codes from len(PHY_MODES) to 2**HEADER_MODE_BITS - 1 are unknown and dropped (counted).
PHY_MODES = tuple((m, f) for m in MODULATIONS for f in FEC_CODES)
MCS_KEY = "mcs"             # PDU metadata: the MCS name (semcom.radio.mcs) a PDU goes / went out on


def bits_per_symbol(modulation):
    """Payload bits carried by one channel symbol."""
    _check_choice(modulation, MODULATIONS, "modulation")
    return _BITS_PER_SYMBOL[modulation]


def _check_choice(value, choices, what):
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {choices}")


def _diagonal_bpsk():
    """BPSK on the 45 degree diagonal: a subset of QPSK/16-QAM corners' directions."""
    a = 1 / math.sqrt(2)
    return digital.constellation_calcdist([complex(-a, -a), complex(a, a)], [0, 1], 2, 1).base()


def _payload_constellation(modulation):
    """Unit average energy constellations so that one SNR definition serves all of them. BPSK lies on the
    diagonal too: one 4th-order Costas loop tracks every modulation (its lock points are the diagonals)."""
    if modulation == "bpsk":
        return _diagonal_bpsk()
    if modulation == "qpsk":
        points = [p / math.sqrt(2) for p in digital.psk_4()[0]]
        return digital.constellation_calcdist(points, list(range(4)), 4, 1).base()
    points = digital.constellation_16qam().points()
    return digital.constellation_calcdist(points, list(range(16)), 4, 1).base()


def _header_constellation():
    return _diagonal_bpsk()


def _header_format():
    """The stock format the receiver parses with (bps 1: "payload symbols" is 8 x the 16-bit field)."""
    return digital.header_format_default(ACCESS_CODE, ACCESS_CODE_THRESHOLD, 1)


def mcs_name(modulation, fec_code):
    """Name of a PHY mode in PDU metadata: its semcom.radio.mcs row name, else "<modulation>-<fec_code>"."""
    from semcom.radio.mcs import MCS_TABLE

    for row in MCS_TABLE:
        if (row.modulation, row.fec_code) == (modulation, fec_code):
            return row.name
    return f"{modulation}-{fec_code}"


_MODE_BY_NAME = {mcs_name(m, f): (m, f) for m, f in PHY_MODES}


def phy_mode(name):
    """(modulation, fec_code) of an MCS name (mcs_name's inverse); ValueError if unknown."""
    try:
        return _MODE_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown MCS {name!r}; choose one of {tuple(_MODE_BY_NAME)}") from None


def header_field(pdu_len_bytes, modulation, fec_code):
    """The 16-bit header field (sent twice) announcing a PDU of ``pdu_len_bytes`` on this mode."""
    if not 0 <= pdu_len_bytes < 1 << HEADER_LENGTH_BITS:
        raise ValueError(f"a header announces PDUs of up to {(1 << HEADER_LENGTH_BITS) - 1} bytes")
    return PHY_MODES.index((modulation, fec_code)) << HEADER_LENGTH_BITS | pdu_len_bytes


def header_bytes(pdu_len_bytes, modulation, fec_code):
    """What header_format_default.format emits, with header_field in place of the length (12 bytes)."""
    access = int(ACCESS_CODE, 2).to_bytes(len(ACCESS_CODE) // 8, "big")
    field = header_field(pdu_len_bytes, modulation, fec_code).to_bytes(2, "big")
    return access + field + field


def payload_symbols(pdu_len_bytes, modulation, fec_code):
    """Payload channel symbols of a PDU (coded PDU + CRC32): the "payload symbols" the demux needs."""
    return -(-_encoded_payload_bytes(pdu_len_bytes, fec_code) * 8 // bits_per_symbol(modulation))


def _frame_bits(mtu_bytes):
    """Largest FEC frame: an MTU-sized PDU plus its CRC32."""
    return (mtu_bytes + CRC_BYTES) * 8


def _punctured_bits(coded_bits):
    """Bits kept by the 3/4 pattern out of ``coded_bits`` rate-1/2 coded bits."""
    period, rest = divmod(coded_bits, len(PUNCTURE_PATTERN_3_4))
    return period * sum(PUNCTURE_PATTERN_3_4) + sum(PUNCTURE_PATTERN_3_4[:rest])


def _puncture_mask(coded_bits):
    repeats = -(-coded_bits // len(PUNCTURE_PATTERN_3_4))
    return np.tile(np.array(PUNCTURE_PATTERN_3_4, bool), repeats)[:coded_bits]


def _coded_bits_for_punctured_bytes(punctured_bytes):
    """Rate-1/2 coded bits of the frame that punctures to ``punctured_bytes`` (None if no frame does)."""
    data_bytes = punctured_bytes * 3 // 4
    for candidate in range(max(1, data_bytes - 2), data_bytes + 3):
        coded_bits = CC_RATE * 8 * candidate
        if -(-_punctured_bits(coded_bits) // 8) == punctured_bytes:
            return coded_bits
    return None


def _meta_mode(msg, default=None):
    """(modulation, fec_code) named by a PDU's MCS_KEY metadata; ``default`` if it has none; None if unknown."""
    meta = pmt.car(msg) if pmt.is_pair(msg) else pmt.PMT_NIL
    name = pmt.dict_ref(meta, pmt.intern(MCS_KEY), pmt.PMT_NIL) if pmt.is_dict(meta) else pmt.PMT_NIL
    if pmt.is_null(name):
        return default
    return _MODE_BY_NAME.get(pmt.symbol_to_string(name)) if pmt.is_symbol(name) else None


class _rate_match_tx(gr.basic_block):
    """Rate-1/2 coded PDU (packed bytes) -> punctured (``cc34``) or repeated (``cc14``) PDU, by the PDU's
    MCS_KEY metadata (else ``fec_code``); PDUs of the other codes pass unchanged."""

    def __init__(self, fec_code=None):
        gr.basic_block.__init__(self, "semcom_rate_match_tx", None, None)
        self.fec_code = fec_code
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._on_pdu)

    def _on_pdu(self, msg):
        fec_code = (_meta_mode(msg) or (None, self.fec_code))[1]
        coded = np.asarray(pmt.u8vector_elements(pmt.cdr(msg)), np.uint8)
        if fec_code == "cc34":
            bits = np.unpackbits(coded)
            coded = np.packbits(bits[_puncture_mask(len(bits))])
        elif fec_code in CC_BLOCK_REPEATS:
            coded = np.tile(coded, CC_BLOCK_REPEATS[fec_code])
        self.message_port_pub(pmt.intern("out"), pmt.cons(pmt.car(msg), pmt.init_u8vector(len(coded), coded)))


class _rate_match_rx(gr.basic_block):
    """Soft bits (f32 PDU) of a rate-matched frame -> soft bits of the rate-1/2 frame for the Viterbi
    decoder: punctured positions become erasures (0), repeated copies are averaged. Frames whose length
    no encoder output has are dropped and counted in ``malformed``. The code is the PDU's MCS_KEY
    metadata (else ``fec_code``); frames of other codes pass unchanged."""

    def __init__(self, fec_code=None):
        gr.basic_block.__init__(self, "semcom_rate_match_rx", None, None)
        self.fec_code = fec_code
        self.malformed = 0
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._on_pdu)

    def _on_pdu(self, msg):
        out = self.matched(msg)
        if out is not None:
            self.message_port_pub(pmt.intern("out"), out)

    def matched(self, msg):
        """The rate-1/2 soft frame of ``msg`` (a PDU), or None (counted) if its length is malformed."""
        fec_code = (_meta_mode(msg) or (None, self.fec_code))[1]
        soft = np.asarray(pmt.f32vector_elements(pmt.cdr(msg)), np.float32)
        if fec_code == "cc34":
            coded_bits = _coded_bits_for_punctured_bytes(len(soft) // 8) if len(soft) % 8 == 0 else None
            if coded_bits is None:
                self.malformed += 1
                return None
            mask = _puncture_mask(coded_bits)
            full = np.zeros(coded_bits, np.float32)
            full[mask] = soft[: int(mask.sum())]
        elif fec_code in CC_BLOCK_REPEATS:
            repeats = CC_BLOCK_REPEATS[fec_code]
            if len(soft) % (repeats * 16):
                self.malformed += 1
                return None
            full = soft.reshape(repeats, -1).mean(axis=0)
        else:
            return msg
        return pmt.cons(pmt.car(msg), pmt.init_f32vector(len(full), full))


@functools.lru_cache(maxsize=4)
def _keystream_block(length_bytes):
    lfsr = digital.lfsr(SCRAMBLER_MASK, SCRAMBLER_SEED, SCRAMBLER_REG_LEN)
    bits = np.fromiter((lfsr.next_bit() for _ in range(8 * length_bytes)), np.uint8, 8 * length_bytes)
    keystream = np.packbits(bits.reshape(-1, 8), axis=1, bitorder="little").ravel()
    keystream.setflags(write=False)
    return keystream


def scrambler_keystream(length_bytes):
    """The bytes XORed onto a packet's first ``length_bytes`` (payload + CRC32) before the FEC encoder.

    Byte k holds LFSR bits 8k..8k+7, the first in the LSB: what stock ``digital.additive_scrambler_bb``
    with ``bits_per_byte=8`` XORs onto byte k after a reset.
    """
    block = 1 << max(11, int(length_bytes - 1).bit_length())  # a few cached sizes serve every length
    return _keystream_block(block)[:length_bytes]


def _scramble(data):
    """Additive (de)scrambling of packed bytes: its own inverse."""
    data = np.asarray(data, np.uint8)
    return data ^ scrambler_keystream(len(data))


class _payload_scrambler(gr.basic_block):
    """PDU with its CRC32 appended -> the same PDU scrambled (TX, ahead of the FEC encoder)."""

    def __init__(self):
        gr.basic_block.__init__(self, "semcom_payload_scrambler", None, None)
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._on_pdu)

    def _on_pdu(self, msg):
        data = _scramble(pmt.u8vector_elements(pmt.cdr(msg)))
        self.message_port_pub(pmt.intern("out"), pmt.cons(pmt.car(msg), pmt.init_u8vector(len(data), data)))


class _payload_check(gr.basic_block):
    """Decoded frame (packed bytes: scrambled payload + CRC32) -> descrambled payload if its CRC32 passes.

    Counts every frame it is given (``decoded``) and whether it passed, in one handler under one lock,
    so that ``counts()`` is always a consistent snapshot (before, decoded and passed frames were counted
    by two handlers and their difference was seen at -1). The CRC is the one stock
    ``digital.crc32_async_bb`` appends (zlib's CRC-32, little-endian)."""

    def __init__(self):
        gr.basic_block.__init__(self, "semcom_payload_check", None, None)
        self._lock = threading.Lock()
        self._decoded = 0
        self._passed = 0
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._on_frame)

    def counts(self):
        """(frames decoded, frames that passed the CRC), read together."""
        with self._lock:
            return self._decoded, self._passed

    def _on_frame(self, msg):
        frame = pmt.cdr(msg) if pmt.is_pair(msg) else pmt.PMT_NIL
        if not pmt.is_u8vector(frame):
            with self._lock:
                self._decoded += 1
            return
        data = _scramble(pmt.u8vector_elements(frame))
        passed = len(data) > CRC_BYTES and \
            zlib.crc32(data[:-CRC_BYTES].tobytes()) == int.from_bytes(data[-CRC_BYTES:].tobytes(), "little")
        with self._lock:
            self._decoded += 1
            self._passed += passed
        if passed:
            payload = data[:-CRC_BYTES]
            self.message_port_pub(pmt.intern("out"),
                                  pmt.cons(pmt.car(msg), pmt.init_u8vector(len(payload), payload)))


class _correlator_peak_filter(gr.sync_block):
    """Samples through unchanged, ``window`` samples late; of the correlator's tags (corr_est, time_est,
    phase_est at one offset) it keeps only those whose corr_est is the largest within ``window``
    samples either side: one tag set per access code. ``dropped`` counts the tag sets removed.
    Samples above CLOCK_SYNC_MAX_AMPLITUDE leave limited to it (phase kept).

    Every other tag is dropped: nothing after it reads them, and the correlator's corr_start and
    amp_est come at every sample above the threshold. A burst far above the level packet_tx sends
    (an AGC's first gain, set from noise) put one on every other sample, and pfb_clock_sync_ccf then
    stopped consuming input for good with both cores busy (tests/test_rx_impairments.py, hot burst).

    It also drops a tag set that follows a kept, at least as strong one by at most ``holdoff`` samples:
    the correlator only sees the access code's first 192 symbols, which with a repetition-9 header are
    its first 21 bits, and a header's field bits can match them (or their inverse) above the threshold.
    Such a peak inside the header reset the Costas loop's phase from its phase_est mid-header (measured:
    qpsk-r12 at 25 dB, 1 header in 8 on some seeds, the field read inverted after the access code).
    A true access code never follows another within a header's length, so ``holdoff`` is one header."""

    def __init__(self, window, holdoff=0):
        gr.sync_block.__init__(self, "semcom_correlator_peak_filter", [np.complex64], [np.complex64])
        self.window = int(window)
        self.holdoff = int(holdoff)
        self._kept = []         # (offset, |corr|^2) of the tag sets let through, within holdoff
        self.dropped = 0
        self._keys = {pmt.intern(k) for k in CORRELATOR_TAGS}
        self._peak_key = pmt.intern(TRIGGER_TAG)
        self._peaks = []        # (offset, |corr|^2) of the recent correlator peaks
        self._pending = []      # tags seen on the input whose samples have not left yet
        self.set_history(self.window + 1)
        self.set_tag_propagation_policy(gr.TPP_DONT)

    def _strongest(self, offset, value):
        return all(not (abs(o - offset) <= self.window and (v > value or (v == value and o < offset)))
                   for o, v in self._peaks)

    def work(self, input_items, output_items):
        out = output_items[0]
        n = len(out)
        out[:] = input_items[0][:n]
        magnitude = np.abs(out)
        hot = magnitude > CLOCK_SYNC_MAX_AMPLITUDE
        if hot.any():
            out[hot] *= CLOCK_SYNC_MAX_AMPLITUDE / magnitude[hot]
        read = self.nitems_read(0)     # input_items[0][window] is this sample: the first new one
        for tag in self.get_tags_in_range(0, read, read + n):
            self._pending.append(tag)
            if tag.key == self._peak_key:
                self._peaks.append((tag.offset, pmt.to_double(tag.value)))
        written_end = read + n - self.window   # input offsets below this leave in this call
        waiting = []
        for tag in self._pending:
            if tag.offset >= written_end:
                waiting.append(tag)
                continue
            if tag.key not in self._keys:
                continue
            value = next((v for o, v in self._peaks if o == tag.offset), None)
            shadowed = any(o < tag.offset <= o + self.holdoff and v >= value for o, v in self._kept) \
                if value is not None else False
            if value is None or not self._strongest(tag.offset, value) or shadowed:
                self.dropped += tag.key == self._peak_key
                continue
            if tag.key == self._peak_key:
                self._kept = [(o, v) for o, v in self._kept if o + self.holdoff >= tag.offset]
                self._kept.append((tag.offset, value))
            self.add_item_tag(0, tag.offset + self.window, tag.key, tag.value, tag.srcid)
        self._pending = waiting
        self._peaks = [(o, v) for o, v in self._peaks if o >= written_end - 2 * self.window]
        return n


def _payload_encoder(fec_code, mtu_bytes):
    frame_bits = _frame_bits(mtu_bytes)
    if fec_code in CC_FAMILY:
        return fec.cc_encoder_make(frame_bits, CC_CONSTRAINT_LENGTH, CC_RATE, CC_POLYS, 0,
                                   CC_MODE, False)
    if fec_code == "repetition":
        return fec.repetition_encoder_make(frame_bits, PAYLOAD_REPETITION)
    return fec.dummy_encoder_make(frame_bits)


def _payload_decoder(fec_code, mtu_bytes):
    frame_bits = _frame_bits(mtu_bytes)
    if fec_code in CC_FAMILY:
        return fec.cc_decoder.make(frame_bits, CC_CONSTRAINT_LENGTH, CC_RATE, CC_POLYS, 0, -1,
                                   CC_MODE, False)
    if fec_code == "repetition":
        return fec.repetition_decoder.make(frame_bits, PAYLOAD_REPETITION, 0.5)
    return fec.dummy_decoder.make(frame_bits)


def _encoded_payload_bytes(pdu_len_bytes, fec_code):
    """Length of the FEC-coded PDU+CRC, i.e. what the header announces."""
    data_bits = (pdu_len_bytes + CRC_BYTES) * 8
    if fec_code == "cc":
        return CC_RATE * data_bits // 8  # tail-biting: no tail bits
    if fec_code == "cc34":
        return -(-_punctured_bits(CC_RATE * data_bits) // 8)
    if fec_code in CC_BLOCK_REPEATS:
        return CC_BLOCK_REPEATS[fec_code] * CC_RATE * data_bits // 8
    if fec_code == "repetition":
        return data_bits * PAYLOAD_REPETITION // 8
    return data_bits // 8


def _header_symbols(repetition=HEADER_REPETITION):
    return _header_format().header_nbits() * repetition


def channel_symbols_for(pdu_len_bytes, modulation, fec_code, header_repetition=HEADER_REPETITION):
    """Channel symbols one PDU occupies on air: ramps, header, FEC-coded payload+CRC.

    The silent tail padding after each burst is not counted: it carries no energy.
    """
    _check_choice(fec_code, FEC_CODES, "fec_code")
    return BURST_RAMP_LENGTH + _header_symbols(header_repetition) + payload_symbols(pdu_len_bytes, modulation,
                                                                                    fec_code)


def _tx_rrc_taps(samples_per_symbol, excess_bw):
    """Prototype filter of the polyphase resampler, running at NFILTS x the symbol rate."""
    return firdes.root_raised_cosine(NFILTS, NFILTS, 1.0, excess_bw,
                                     TX_RRC_SPAN_SYMBOLS * samples_per_symbol * NFILTS)


def _rx_rrc_taps(samples_per_symbol, excess_bw):
    return firdes.root_raised_cosine(NFILTS, NFILTS * samples_per_symbol, 1.0, excess_bw,
                                     RX_RRC_SPAN_SYMBOLS * samples_per_symbol * NFILTS)


def _tx_filter_delay(samples_per_symbol, excess_bw):
    taps_per_filter = len(_tx_rrc_taps(samples_per_symbol, excess_bw)) / NFILTS
    return int(1 + (taps_per_filter - 1) // 2)


def tx_output_power(samples_per_symbol, excess_bw=0.35):
    """Mean power per complex output sample of packet_tx for unit-energy i.i.d. symbols.

    The resampler visits the polyphase arms 0, NFILTS/sps, 2*NFILTS/sps, ...; each output
    sample's power is the energy of its arm.
    """
    taps = np.asarray(_tx_rrc_taps(samples_per_symbol, excess_bw))
    arms = [taps[(k * NFILTS) // samples_per_symbol::NFILTS] for k in range(samples_per_symbol)]
    return float(np.mean([np.sum(arm ** 2) for arm in arms]))


def noise_voltage_for_snr(snr_db, modulation, samples_per_symbol, excess_bw=0.35):
    """``channels.channel_model`` noise_voltage giving a per-symbol SNR Es/N0 of ``snr_db``.

    Definition: Es = P * sps, with P the mean power of a TX burst sample (all constellations
    have unit mean symbol energy, so P does not depend on ``modulation``); N0 = noise_voltage**2,
    the complex noise power per sample over the full sample-rate bandwidth.
    """
    _check_choice(modulation, MODULATIONS, "modulation")
    symbol_energy = tx_output_power(samples_per_symbol, excess_bw) * samples_per_symbol
    return math.sqrt(symbol_energy / 10 ** (snr_db / 10))


def _max_burst_symbols(mtu_bytes, tail_symbols, header_repetition):
    """Longest burst of any mode (a receiver takes every mode, a transmitter every mode its PDUs name)."""
    return max(channel_symbols_for(mtu_bytes, m, f, header_repetition) for m, f in PHY_MODES) + tail_symbols


def _max_payload_symbols(mtu_bytes, modulation=None):
    return max(payload_symbols(mtu_bytes, m, f) for m, f in PHY_MODES if modulation in (None, m))


def _reserve(block, items, port=0):
    """Let ``items`` fit in one call: tagged-stream blocks handle a whole burst at once and the
    scheduler only offers half an output buffer. The port is explicit because the port-less
    overload is a silent no-op on some blocks (e.g. chunks_to_symbols)."""
    block.set_min_output_buffer(port, 2 * items)


def _preamble_bits(repetition=HEADER_REPETITION):
    """Access code as it appears on air: each bit repeated by the header repetition code."""
    return [int(b) for b in ACCESS_CODE for _ in range(repetition)]


def _tx_pulse(samples_per_symbol, excess_bw):
    """Pulse the polyphase resampler effectively applies at the output rate."""
    prototype = np.asarray(_tx_rrc_taps(samples_per_symbol, excess_bw))
    arms = np.round(np.arange(0, len(prototype), NFILTS / samples_per_symbol)).astype(int)
    return prototype[arms[arms < len(prototype)]]


def _modulated_preamble(samples_per_symbol, excess_bw, repetition=HEADER_REPETITION, whole=False):
    """Access-code waveform exactly as packet_tx emits it, so the absolute correlator threshold
    is a fraction of the peak a unit-gain channel produces. Only its first 192 symbols (the whole
    repetition-3 access code) are correlated: a longer coherent template decorrelates under the
    channel's frequency offset (2e-4 cycles/sample turns the 9x preamble by 1.4 rad). ``whole``: all
    of it, for the coarse search's differential detector, which a frequency offset does not hurt and
    which needs the code's bit transitions (the first 192 symbols of the 9x code hold 21 bits)."""
    points = _header_constellation().points()
    symbols = np.array([points[b] for b in _preamble_bits(repetition)], dtype=np.complex64)
    upsampled = np.zeros(len(symbols) * samples_per_symbol, dtype=np.complex64)
    upsampled[::samples_per_symbol] = symbols
    waveform = np.convolve(upsampled, _tx_pulse(samples_per_symbol, excess_bw))[:len(upsampled)]
    return list(waveform if whole else waveform[:len(ACCESS_CODE) * 3 * samples_per_symbol])


def _correlator(samples_per_symbol, excess_bw, mark_delay=0, repetition=HEADER_REPETITION):
    return digital.corr_est_cc(_modulated_preamble(samples_per_symbol, excess_bw, repetition),
                               samples_per_symbol, mark_delay, CORRELATOR_THRESHOLD,
                               digital.THRESHOLD_ABSOLUTE)


def _tail_symbols(samples_per_symbol, excess_bw, repetition=HEADER_REPETITION):
    """Silence after a burst that pushes it through the RX: the correlator's FFT filter only
    releases whole blocks of samples, and the matched filter needs its span."""
    block_samples = _correlator(samples_per_symbol, excess_bw, 0, repetition).output_multiple()
    return -(-block_samples // samples_per_symbol) + RX_RRC_SPAN_SYMBOLS + BURST_TAIL_MARGIN_SYMBOLS


class _mode_router(gr.basic_block):
    """PDUs -> one of ``ports`` by their mode (MCS_KEY metadata, else ``default``): ``route(modulation,
    fec_code)`` names the port, or None to drop the PDU. Unknown MCS names are dropped and counted in
    ``unknown``; the metadata leaving carries the mode's canonical name."""

    def __init__(self, ports, route, default=None, transform=None):
        gr.basic_block.__init__(self, "semcom_mode_router", None, None)
        self.route, self.default, self.unknown = route, default, 0
        self.transform = transform      # msg -> msg or None (dropped), applied on the way out
        self.message_port_register_in(pmt.intern("in"))
        for port in ports:
            self.message_port_register_out(pmt.intern(port))
        self.set_msg_handler(pmt.intern("in"), self._on_pdu)

    def _on_pdu(self, msg):
        mode = _meta_mode(msg, self.default)
        if mode is None:
            self.unknown += 1
            return
        port = self.route(*mode)
        if port is not None:
            meta = pmt.car(msg) if pmt.is_dict(pmt.car(msg)) else pmt.make_dict()
            meta = pmt.dict_add(meta, pmt.intern(MCS_KEY), pmt.intern(mcs_name(*mode)))
            msg = pmt.cons(meta, pmt.cdr(msg))
            if self.transform is not None:
                msg = self.transform(msg)
            if msg is not None:
                self.message_port_pub(pmt.intern(port), msg)


def _fec_family(fec_code):
    """The encoder/decoder a code uses: one rate-1/2 convolutional code serves the whole cc family."""
    return "cc" if fec_code in CC_FAMILY else fec_code


_FEC_FAMILIES = ("cc", "repetition", "none")
_PDU_BYTES_KEY = "pdu bytes"      # TX-internal metadata: the PDU length the header announces


class _pdu_length_tag(gr.basic_block):
    """Records a PDU's length in its metadata (before the CRC and FEC make it longer)."""

    def __init__(self):
        gr.basic_block.__init__(self, "semcom_pdu_length_tag", None, None)
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._on_pdu)

    def _on_pdu(self, msg):
        meta = pmt.car(msg) if pmt.is_dict(pmt.car(msg)) else pmt.make_dict()
        meta = pmt.dict_add(meta, pmt.intern(_PDU_BYTES_KEY), pmt.from_long(pmt.length(pmt.cdr(msg))))
        self.message_port_pub(pmt.intern("out"), pmt.cons(meta, pmt.cdr(msg)))


class _formatter(gr.basic_block):
    """Coded PDU -> its header (``header_bytes``: header_format_default's layout, the MCS in the length
    field) on "header", and its payload mapped onto its mode's constellation (complex symbols, as stock
    repack_bits_bb(8, k, MSB first) + chunks_to_symbols_bc would) on "payload", in one handler so that
    header and payload stay paired. The payload is mapped here because stream modulators per
    constellation would need a stream merge that keeps burst order, which gr-blocks does not have."""

    def __init__(self):
        gr.basic_block.__init__(self, "semcom_formatter", None, None)
        self._points = {m: np.asarray(_payload_constellation(m).points(), np.complex64) for m in MODULATIONS}
        self.message_port_register_in(pmt.intern("in"))
        for port in ("header", "payload"):
            self.message_port_register_out(pmt.intern(port))
        self.set_msg_handler(pmt.intern("in"), self._on_pdu)

    def _on_pdu(self, msg):
        modulation, fec_code = _meta_mode(msg)
        pdu_bytes = pmt.to_long(pmt.dict_ref(pmt.car(msg), pmt.intern(_PDU_BYTES_KEY), pmt.PMT_NIL))
        header = np.frombuffer(header_bytes(pdu_bytes, modulation, fec_code), np.uint8)
        k = bits_per_symbol(modulation)
        bits = np.unpackbits(np.asarray(pmt.u8vector_elements(pmt.cdr(msg)), np.uint8)).reshape(-1, k)
        symbols = self._points[modulation][bits @ (1 << np.arange(k - 1, -1, -1))]
        self.message_port_pub(pmt.intern("header"), pmt.cons(pmt.make_dict(), pmt.init_u8vector(len(header), header)))
        self.message_port_pub(pmt.intern("payload"),
                              pmt.cons(pmt.make_dict(), pmt.init_c32vector(len(symbols), symbols)))


class packet_tx(releasable_hier_block2):
    """PDUs (message port 'in', pmt.cons(meta, u8vector)) -> complex baseband bursts (stream output 0).

    Each PDU goes out on the MCS its metadata names (MCS_KEY, an ``mcs_name``), else on ``modulation`` and
    ``fec_code``; PDUs naming an unknown MCS are dropped and counted (``unknown_mcs()``). PDUs of one
    code family (the cc codes; repetition; none) leave in order; mixing families may reorder them.
    """

    def __init__(self, modulation="qpsk", fec_code="cc", samples_per_symbol=2, excess_bw=0.35,
                 mtu_bytes=1500, header_repetition=HEADER_REPETITION):
        gr.hier_block2.__init__(self, "semcom_packet_tx", gr.io_signature(0, 0, 0),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        _check_choice(modulation, MODULATIONS, "modulation")
        _check_choice(fec_code, FEC_CODES, "fec_code")
        if mtu_bytes >= 1 << HEADER_LENGTH_BITS:
            raise ValueError(f"mtu_bytes must be below {1 << HEADER_LENGTH_BITS} (the header's length field)")
        self.message_port_register_hier_in("in")

        repetition = header_repetition
        tail_symbols = _tail_symbols(samples_per_symbol, excess_bw, repetition)
        max_symbols = _max_burst_symbols(mtu_bytes, tail_symbols, repetition)

        self.length_tag = _pdu_length_tag()
        self.crc = digital.crc32_async_bb(False)
        self.scrambler = _payload_scrambler()
        self.router = _mode_router(_FEC_FAMILIES, lambda m, f: _fec_family(f), (modulation, fec_code))
        self.msg_connect(self, "in", self.length_tag, "in")
        self.msg_connect(self.length_tag, "out", self.crc, "in")
        self.msg_connect(self.crc, "out", self.scrambler, "in")
        self.msg_connect(self.scrambler, "out", self.router, "in")
        self.rate_match = _rate_match_tx()
        self.formatter = _formatter()
        self.encoders = {}
        for family in _FEC_FAMILIES:
            encoder = fec.async_encoder(_payload_encoder(family, mtu_bytes), True, False, False,
                                        mtu_bytes + CRC_BYTES)
            self.encoders[family] = encoder
            self.msg_connect(self.router, family, encoder, "in")
            self.msg_connect(encoder, "out", self.rate_match if family == "cc" else self.formatter, "in")
        self.msg_connect(self.rate_match, "out", self.formatter, "in")
        self.payload_encoder = self.encoders["cc"]

        header_nbytes = _header_format().header_nbits() // 8
        self.header_encoder = fec.async_encoder(
            fec.repetition_encoder_make(header_nbytes * 8, repetition), True, False, False, header_nbytes)
        self.msg_connect(self.formatter, "header", self.header_encoder, "in")
        self.header_modulator = self._modulator(_header_constellation(), max_symbols)
        self.msg_connect(self.header_encoder, "out", self.header_modulator[0], "pdus")
        self.payload_symbols = pdu.pdu_to_tagged_stream(gr.types.complex_t, LENGTH_TAG)
        _reserve(self.payload_symbols, max_symbols)
        self.msg_connect(self.formatter, "payload", self.payload_symbols, "pdus")

        self.mux = blocks.tagged_stream_mux(gr.sizeof_gr_complex, LENGTH_TAG, 0)
        _reserve(self.mux, max_symbols)
        filter_delay = _tx_filter_delay(samples_per_symbol, excess_bw)
        self.shaper = digital.burst_shaper_cc(firdes.window(filter.window.WIN_HANN, BURST_RAMP_LENGTH, 0),
                                              0, filter_delay + tail_symbols, True, LENGTH_TAG)
        _reserve(self.shaper, max_symbols + filter_delay)
        self.resampler = filter.pfb_arb_resampler_ccf(samples_per_symbol,
                                                      _tx_rrc_taps(samples_per_symbol, excess_bw),
                                                      NFILTS)
        self.resampler.declare_sample_delay(filter_delay)
        self.burst_length = blocks.tagged_stream_multiply_length(gr.sizeof_gr_complex, LENGTH_TAG,
                                                                 samples_per_symbol)
        _reserve(self.burst_length, (max_symbols + filter_delay) * samples_per_symbol)

        self.connect(self.header_modulator[-1], (self.mux, 0))
        self.connect(self.payload_symbols, (self.mux, 1))
        self.connect(self.mux, self.shaper, self.resampler, self.burst_length, self)

    def unknown_mcs(self):
        """PDUs dropped because their metadata named an unknown MCS."""
        return self.router.unknown

    def _modulator(self, constellation, max_symbols):
        """PDU bytes -> constellation symbols, as a tagged stream; returns the block chain."""
        chain = [
            pdu.pdu_to_tagged_stream(gr.types.byte_t, LENGTH_TAG),
            blocks.repack_bits_bb(8, constellation.bits_per_symbol(), LENGTH_TAG, False,
                                  gr.GR_MSB_FIRST),
            digital.chunks_to_symbols_bc(constellation.points(), 1),
        ]
        for block in chain[1:]:
            _reserve(block, max_symbols)
        self.connect(*chain)
        return chain


class _header_parser(gr.sync_block):
    """Decoded header bits -> one verdict per header on 'info': the stock header_format_default's dict
    ("payload symbols" = 8 x the 16-bit length) when the access code matches within
    ACCESS_CODE_THRESHOLD bits and the two length fields agree, else #f.

    It replaces protocol_parser_b, whose format searches for the access code across calls and keeps
    that state: after the garbage headers of a burst far above the expected level (16 dB hot, as an
    AGC's first gain from noise delivers), its reads ran ahead of its input (nitems_read 5e8 behind 96
    bits written), no header was parsed again and the receiver stayed deaf with a core busy. Here
    every header is judged on its own bits: the demux cut them at the access code already."""

    def __init__(self, header_format):
        gr.sync_block.__init__(self, "semcom_header_parser", [np.uint8], None)
        self.header_bits = header_format.header_nbits()
        code = np.array([int(b) for b in ACCESS_CODE], np.uint8)
        self._code = code
        self._pending = np.zeros(0, np.uint8)
        self.message_port_register_out(pmt.intern("info"))

    def _verdict(self, bits):
        n = len(self._code)
        if int(np.count_nonzero(bits[:n] != self._code)) > ACCESS_CODE_THRESHOLD:
            return pmt.PMT_F
        weights = 1 << np.arange(15, -1, -1)
        first, second = (int(bits[n + 16 * i:n + 16 * (i + 1)] @ weights) for i in range(2))
        if first != second:
            return pmt.PMT_F
        return pmt.dict_add(pmt.make_dict(), pmt.intern(PAYLOAD_SYMBOLS_TAG), pmt.from_long(8 * first))

    def work(self, input_items, output_items):
        bits = np.concatenate([self._pending, input_items[0] & 1])
        whole = len(bits) - len(bits) % self.header_bits
        for start in range(0, whole, self.header_bits):
            self.message_port_pub(pmt.intern("info"), self._verdict(bits[start:start + self.header_bits]))
        self._pending = bits[whole:].copy()
        return len(input_items[0])


class _header_guard(gr.basic_block):
    """Parsed headers -> what the demux needs: the announced mode (MCS_KEY) and its "payload symbols".

    The stock parser (bps 1) reports the header field as "payload symbols" = 8 x field; the field is
    (mode code << HEADER_LENGTH_BITS) | PDU length. A header announcing an unknown mode code (noise that
    passed the access-code and duplicate checks, a hostile or newer sender) is answered with a rejection
    (#f) and counted in ``unknown_mcs``; one announcing a PDU longer than the MTU too, counted in
    ``rejected``: the payload decoder throws on a frame larger than its MTU, which ends its thread and
    silently stops the receiver. Given a ``modulation``, it rejects (silently) the headers of the other
    modulations' modes: each branch of packet_rx takes its own bursts; ``accepted`` counts the rest.
    Each accepted header's Es/N0 estimate also goes out on ``snr`` (dB), whether its payload then passes
    the CRC or not."""

    def __init__(self, mtu_bytes, modulation=None, snr=None):
        gr.basic_block.__init__(self, "semcom_header_guard", None, None)
        self.mtu_bytes = mtu_bytes
        self.modulation = modulation
        self.snr = snr          # a _SnrCell: its estimate of this header goes into the info (SNR_KEY)
        self.rejected = 0
        self.unknown_mcs = 0
        self.accepted = 0
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.message_port_register_out(pmt.intern("snr"))
        self.set_msg_handler(pmt.intern("in"), self._on_header)

    def _on_header(self, msg):
        if pmt.is_dict(msg):
            msg = self._decoded(msg)
        self.message_port_pub(pmt.intern("out"), msg)

    def _decoded(self, info):
        symbols = pmt.dict_ref(info, pmt.intern(PAYLOAD_SYMBOLS_TAG), pmt.PMT_NIL)
        if not pmt.is_integer(symbols):
            self.rejected += 1
            return pmt.PMT_F
        field = pmt.to_long(symbols) // 8
        code, pdu_bytes = field >> HEADER_LENGTH_BITS, field & ((1 << HEADER_LENGTH_BITS) - 1)
        if code >= len(PHY_MODES):
            self.unknown_mcs += 1
            return pmt.PMT_F
        if pdu_bytes > self.mtu_bytes:
            self.rejected += 1
            return pmt.PMT_F
        modulation, fec_code = PHY_MODES[code]
        if self.modulation not in (None, modulation):
            return pmt.PMT_F                # another branch's burst
        self.accepted += 1
        if self.snr is not None and self.snr.last_db is not None:
            estimate = pmt.from_double(round(self.snr.last_db, 2))
            info = pmt.dict_add(info, pmt.intern(SNR_KEY), estimate)
            self.message_port_pub(pmt.intern("snr"), estimate)
        info = pmt.dict_add(info, pmt.intern(PAYLOAD_SYMBOLS_TAG),
                            pmt.from_long(payload_symbols(pdu_bytes, modulation, fec_code)))
        return pmt.dict_add(info, pmt.intern(MCS_KEY), pmt.intern(mcs_name(modulation, fec_code)))


class packet_rx(releasable_hier_block2):
    """complex baseband (stream input 0) -> PDUs whose CRC32 passed (message port 'out'); counters.

    Message port 'snr': the Es/N0 estimate (dB) of every valid header, also of bursts whose payload then
    fails: what a link adapting to the SNR needs when the MCS it last chose was too fast for the channel
    (the PDUs on 'out' carry the same estimate as ``snr_db`` metadata, but only those that passed).

    One receiver for every mode: the header (diagonal BPSK, repetition ``header_repetition``) names
    each burst's MCS, and the PDU leaves with it in its metadata (MCS_KEY). The access-code correlator,
    its peak filter and the clock recovery are shared; after them one branch per modulation (its own
    Costas loop, tuned for that modulation (COSTAS_LOOP_BW), and header/payload demux) decodes every
    header and takes the payloads of the bursts that announced its modulation. One 4th-order loop
    for all of them loses BPSK below ~2 dB (see COSTAS_LOOP_BW), hence the branches.
    ``modulation`` and ``fec_code`` are accepted for compatibility and select nothing.
    """

    def __init__(self, modulation="qpsk", fec_code="cc", samples_per_symbol=2, excess_bw=0.35,
                 mtu_bytes=1500, header_repetition=HEADER_REPETITION):
        gr.hier_block2.__init__(self, "semcom_packet_rx",
                                gr.io_signature(1, 1, gr.sizeof_gr_complex), gr.io_signature(0, 0, 0))
        _check_choice(modulation, MODULATIONS, "modulation")
        _check_choice(fec_code, FEC_CODES, "fec_code")
        self.message_port_register_hier_out("out")
        self.message_port_register_hier_out("snr")

        self.repetition = header_repetition
        self.mtu_bytes = mtu_bytes
        self.samples_per_symbol = samples_per_symbol
        tail_symbols = _tail_symbols(samples_per_symbol, excess_bw, header_repetition)
        self.max_symbols = _max_burst_symbols(mtu_bytes, tail_symbols, header_repetition)
        if samples_per_symbol not in MARK_DELAY_SYMBOLS:
            raise ValueError(f"samples_per_symbol must be one of {sorted(MARK_DELAY_SYMBOLS)}")
        mark_delay = MARK_DELAY_SYMBOLS[samples_per_symbol] * samples_per_symbol

        self.correlator = _correlator(samples_per_symbol, excess_bw, mark_delay, header_repetition)
        self.clock_sync = digital.pfb_clock_sync_ccf(
            samples_per_symbol, CLOCK_LOOP_BW, _rx_rrc_taps(samples_per_symbol, excess_bw), NFILTS,
            NFILTS // 2, CLOCK_MAX_DEVIATION, 1)
        self.peak_filter = _correlator_peak_filter((header_repetition + 1) * samples_per_symbol,
                                                   _header_symbols(header_repetition) * samples_per_symbol)
        self.connect(self, self.correlator, self.peak_filter, self.clock_sync)

        self.payload_check = _payload_check()
        self.rate_match = _rate_match_rx()
        self.decoders = {family: fec.async_decoder(_payload_decoder(family, mtu_bytes), True, False,
                                                   mtu_bytes + CRC_BYTES) for family in _FEC_FAMILIES}
        for decoder in self.decoders.values():
            self.msg_connect(decoder, "out", self.payload_check, "in")
        self.payload_decoder = self.decoders["cc"]
        self.msg_connect(self.payload_check, "out", self, "out")
        self.branches = {m: _rx_branch(self, m) for m in MODULATIONS}
        self.costas = self.branches["qpsk"].costas      # the constellation view of semantic_receiver
        self.header_guard = self.branches["bpsk"].guard  # counts unknown modes and over-MTU lengths

    def packets_ok(self):
        """PDUs delivered (CRC32 passed)."""
        return self.payload_check.counts()[1]

    def packets_failed_crc(self):
        """Payloads that were received after a valid header but failed the CRC32 (never negative:
        both counts come from one handler, read under its lock)."""
        decoded, passed = self.payload_check.counts()
        return decoded - passed

    def headers_detected(self):
        """Valid headers parsed (bursts detected), each by the branch of the modulation it announced."""
        return sum(branch.guard.accepted for branch in self.branches.values())

    def unknown_mcs(self):
        """Headers dropped because they announced a mode code this receiver does not know."""
        return self.header_guard.unknown_mcs


SNR_KEY = "snr_db"       # PDU metadata at the receiver: Es/N0 estimated on its header's symbols


class _SnrCell:
    """The latest header's Es/N0 estimate (dB, or None), written by _header_snr and read by _header_guard.
    A plain object between them: a Python block holding another keeps its buffers (shared memory)
    alive after the flowgraph is released."""

    def __init__(self):
        self.last_db = None


class _header_snr(gr.sync_block):
    """Header symbols through unchanged; of every ``header_symbols`` of them, the M2M4 estimate of Es/N0
    (dB) in ``cell.last_db`` (constant-modulus BPSK header, complex noise: S = sqrt(2 M2^2 - M4),
    N = M2 - S). The demux waits for its header's verdict before it releases another header, so the
    guard that reads the cell when that header's parse arrives reads that header's estimate."""

    def __init__(self, header_symbols, cell):
        gr.sync_block.__init__(self, "semcom_header_snr", [np.complex64], [np.complex64])
        self.header_symbols = header_symbols
        self.cell = cell
        self._m2 = self._m4 = 0.0
        self._count = 0

    def work(self, input_items, output_items):
        x = input_items[0]
        output_items[0][:] = x
        done = 0
        while done < len(x):
            take = min(len(x) - done, self.header_symbols - self._count)
            power = np.abs(x[done:done + take]).astype(np.float64) ** 2
            self._m2 += power.sum()
            self._m4 += (power ** 2).sum()
            self._count += take
            done += take
            if self._count == self.header_symbols:
                m2, m4 = self._m2 / self._count, self._m4 / self._count
                signal = math.sqrt(max(2 * m2 * m2 - m4, 0.0))
                noise = max(m2 - signal, 1e-12 * m2)
                self.cell.last_db = 10 * math.log10(max(signal, 1e-12 * m2) / noise)
                self._m2 = self._m4 = 0.0
                self._count = 0
        return len(x)


# The BPSK branch turns the diagonal onto the real axis ahead of its 2nd-order Costas loop (which sets
# its phase from the correlator's phase_est, measured against the diagonal preamble) and decodes there.
_BPSK_BRANCH_ROTATION = complex(math.cos(-math.pi / 4), math.sin(-math.pi / 4))


def _real_bpsk():
    return digital.constellation_calcdist([-1 + 0j, 1 + 0j], [0, 1], 2, 1).base()


class _rx_branch:
    """One modulation's part of packet_rx: clock-sync output -> [rotation] -> Costas loop -> demux ->
    header decoder, parser and guard (accepting this modulation's modes) / payload soft decoder -> the
    receiver's rate matcher and FEC decoders. Built into ``rx``'s flowgraph."""

    def __init__(self, rx, modulation):
        hdr_format = _header_format()
        bpsk = modulation == "bpsk"
        hdr_const = _real_bpsk() if bpsk else _header_constellation()
        pld_const = _real_bpsk() if bpsk else _payload_constellation(modulation)
        pld_const.gen_soft_dec_lut(SOFT_DECISION_LUT_BITS, SOFT_DECISION_NOISE_POWER)
        front = [rx.clock_sync]
        if bpsk:
            self.rotation = blocks.multiply_const_cc(_BPSK_BRANCH_ROTATION)
            front.append(self.rotation)
        self.costas = digital.costas_loop_cc(COSTAS_LOOP_BW[modulation], 2 if bpsk else 4, False)
        self.costas.set_max_freq(2 * math.pi * COSTAS_MAX_OFFSET * rx.samples_per_symbol)  # rad per symbol
        self.costas.set_min_freq(-2 * math.pi * COSTAS_MAX_OFFSET * rx.samples_per_symbol)
        _reserve(self.costas, rx.max_symbols)  # the demux takes a whole payload from this buffer
        self.demux = digital.header_payload_demux(
            hdr_format.header_nbits() * rx.repetition, 1, 0, PAYLOAD_SYMBOLS_TAG, TRIGGER_TAG, True,
            gr.sizeof_gr_complex, "rx_time", 1, [], 0)
        for port in (0, 1):  # the scheduler asks every output for room for a whole payload
            _reserve(self.demux, rx.max_symbols, port)
        self.demux.set_log_level("warn")  # it logs every rejected (noise-triggered) header
        rx.connect(*front, self.costas, self.demux)

        snr_cell = _SnrCell()
        self.header_snr = _header_snr(hdr_format.header_nbits() * rx.repetition, snr_cell)
        self.header_soft = digital.constellation_soft_decoder_cf(hdr_const)
        self.header_decoder = fec.decoder(
            fec.repetition_decoder.make(hdr_format.header_nbits(), rx.repetition, 0.5),
            gr.sizeof_float, gr.sizeof_char)
        self.parser = _header_parser(hdr_format)
        rx.connect((self.demux, 0), self.header_snr, self.header_soft, self.header_decoder, self.parser)
        self.guard = _header_guard(rx.mtu_bytes, modulation, snr_cell)
        rx.msg_connect(self.parser, "info", self.guard, "in")
        rx.msg_connect(self.guard, "out", self.demux, "header_data")
        rx.msg_connect(self.guard, "snr", rx, "snr")

        max_soft_bits = _max_payload_symbols(rx.mtu_bytes, modulation) * pld_const.bits_per_symbol()
        self.soft = [digital.constellation_soft_decoder_cf(pld_const),
                     blocks.multiply_const_ff(SOFT_DECISION_SCALE), analog.rail_ff(-1.0, 1.0),
                     blocks.tagged_stream_multiply_length(gr.sizeof_float, PAYLOAD_SYMBOLS_TAG,
                                                          pld_const.bits_per_symbol()),
                     pdu.tagged_stream_to_pdu(gr.types.float_t, PAYLOAD_SYMBOLS_TAG)]
        for block in self.soft[:-1]:
            _reserve(block, max_soft_bits)
        rx.connect((self.demux, 1), *self.soft)
        # Routing and rate matching in one handler: each Python message hop after the last stream block
        # is one more chance for a flowgraph whose source ended to stop before the PDU is out (seen
        # with a router and a rate matcher in a row: a burst at the end of a finite stream was lost).
        self.router = _mode_router(_FEC_FAMILIES, lambda m, f: _fec_family(f), transform=rx.rate_match.matched)
        rx.msg_connect(self.soft[-1], "pdus", self.router, "in")
        for family in _FEC_FAMILIES:
            rx.msg_connect(self.router, family, rx.decoders[family], "in")
