"""Analog burst PHY: frames of arbitrary complex symbols (DeepJSCC outputs) over a single carrier.

Frame on air (symbol rate, before RRC pulse shaping at ``samples_per_symbol``)::

    ramp-up | preamble (127 BPSK) | P h*16 ... P h*16 (header: 576 BPSK) P d*16 ... P d*r P | ramp-down | zeros

- **preamble**: a 127-chip m-sequence, found by ``digital.corr_est_cc`` (burst detection, coarse timing),
  then located to the symbol and used for the initial gain/phase and a coarse frequency estimate.
- **header**: image id (8 bits), frame index (8), data symbol count (16), CRC-16/CCITT (16); each bit
  repeated ``HEADER_REPETITION`` (12) times and scrambled by a PN sequence: 0 of 54 headers lost at
  -2 dB Es/N0 in ``benchmarks/deepjscc_snr.py``-style runs (8 repetitions lost 13%). A header whose CRC
  fails is Chase-decoded (``chase_decode_header``): at -4 dB that loses 1 of 40 headers where hard
  decisions lose 6 (``tests/test_jscc.py::test_headers_read_at_minus_4_db``).
- **pilots** ``P = 1+0j`` before every ``PILOT_SPACING`` header or data symbols and one after the last.
  The header's pilots sit at fixed places, so the header is read with them; then the receiver fits a
  common phase ramp (frequency offset) to preamble, header and pilots, smooths the remaining pilot
  estimates over ``PILOT_SMOOTHING`` pilots and interpolates them linearly to the data (zero-forcing).
- **timing**: ``pfb_clock_sync_ccf`` with a loop 8x narrower than packet_rx's (``CLOCK_LOOP_BW``): with a
  2x / 4x narrower loop, frames at -2 dB occasionally slipped a symbol mid-frame.

Stock blocks do the signal processing that exists in GNU Radio (PDU <-> tagged stream, burst shaping,
RRC polyphase resampling, access-code correlation, polyphase clock recovery, the same chain and filters
as ``semcom.radio.packet``); two small Python blocks build frames and equalise them (vectorised numpy).

Message formats (see ``symbols_pdu`` / ``symbols_from_pdu``): a PDU ``pmt.cons(meta, f32vector)`` whose
payload is the complex symbols as interleaved float32 (re, im, re, im, ...), or a c32vector.
TX meta: ``image_id`` (0..255), ``frame_index`` (0..255). RX meta adds ``snr_db_est`` (Es/N0 per data
symbol, from the pilots), ``n_symbols``, ``channel_gain``, ``frequency_offset`` (cycles/symbol).
``snr_db`` of ``channel_model`` noise is Es/N0 per symbol exactly as in ``packet.noise_voltage_for_snr``
(unit mean symbol energy: the model's symbols are normalised to it, pilots/preamble/header have |s| = 1).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pmt
from gnuradio import blocks, digital, filter, gr, pdu
from gnuradio.filter import firdes

from semcom.radio import packet

log = logging.getLogger(__name__)

SNR_EST_KEY = "snr_db_est"        # RX metadata: Es/N0 per data symbol, from the pilots
PREAMBLE_TAPS = (7, 6)            # m-sequence x^7 + x^6 + 1: 127 chips
HEADER_BITS = 48                  # image_id 8 | frame_index 8 | n_symbols 16 | CRC-16 16
HEADER_REPETITION = 12            # 576 header symbols: reads at -2 dB (8 lost 13% of headers there)
PILOT_SPACING = 16                # data symbols between pilots
PILOT_SMOOTHING = 25              # pilots averaged (centred) for each pilot's channel estimate (~425 symbols)
PILOT_SYMBOL = 1.0 + 0.0j
MAX_FRAME_SYMBOLS = 8192          # data symbols per frame (ten 64 px DeepJSCC tiles)
CHASE_BITS = 4                    # least reliable header bits tried flipped (16 candidates)
SEARCH_SYMBOLS = 24               # preamble search half-window around the correlator's tag
PHASE_FIT_BLOCK_SYMBOLS = 128     # reference symbols averaged per point of the phase-ramp fit
CORRELATOR_THRESHOLD = packet.CORRELATOR_THRESHOLD
# Gaussian-like data gives the timing error detector self-noise that binary symbols do not have: a
# narrower loop than packet's, so the clock does not slip at low SNR over frames of thousands of symbols
# (measured at -2 dB: 2*pi/800 slipped in ~30% of frames, 2*pi/1600 in a few, 2*pi/3200 in none of 54).
CLOCK_LOOP_BW = 2 * math.pi / 3200
TRIGGER_TAG = "corr_est"
LENGTH_TAG = packet.LENGTH_TAG
SAMPLES_PER_SYMBOL_CHOICES = (2, 4, 8)


def _m_sequence(taps=PREAMBLE_TAPS) -> np.ndarray:
    n = taps[0]
    state = [1] * n
    out = []
    for _ in range(2 ** n - 1):
        out.append(state[-1])
        feedback = state[taps[0] - 1] ^ state[taps[1] - 1]
        state = [feedback] + state[:-1]
    return np.array(out, np.int8)


PREAMBLE = (1 - 2 * _m_sequence()).astype(np.complex64)           # +-1, 127 symbols
HEADER_SYMBOLS = HEADER_BITS * HEADER_REPETITION
# Scrambles the repeated header bits so the header does not look like a tone; fixed, known to both ends.
HEADER_SCRAMBLE = (1 - 2 * np.random.default_rng(0x5E3C).integers(0, 2, HEADER_SYMBOLS)).astype(np.float32)


def crc16(bits: np.ndarray) -> int:
    """CRC-16/CCITT-FALSE of a bit array (MSB first)."""
    crc = 0xFFFF
    for b in bits:
        top = (crc >> 15) & 1
        crc = (crc << 1) & 0xFFFF
        if top ^ int(b):
            crc ^= 0x1021
    return crc


def _bits(value: int, width: int) -> list[int]:
    return [(value >> (width - 1 - i)) & 1 for i in range(width)]


def _from_bits(bits) -> int:
    v = 0
    for b in bits:
        v = (v << 1) | int(b)
    return v


def header_bits(image_id: int, frame_index: int, n_symbols: int) -> np.ndarray:
    fields = np.array(_bits(image_id & 0xFF, 8) + _bits(frame_index & 0xFF, 8) + _bits(n_symbols, 16), np.int8)
    return np.concatenate([fields, np.array(_bits(crc16(fields), 16), np.int8)])


def parse_header(bits: np.ndarray) -> tuple[int, int, int] | None:
    """(image_id, frame_index, n_symbols), or None when the CRC or the length check fails."""
    fields, crc = bits[:32], _from_bits(bits[32:48])
    if crc16(fields) != crc:
        return None
    n = _from_bits(fields[16:32])
    if not 1 <= n <= MAX_FRAME_SYMBOLS:
        return None
    return _from_bits(fields[:8]), _from_bits(fields[8:16]), n


def chase_decode_header(soft: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """Soft header bits (negative: 1) -> (bits, fields) of the first of the ``2**CHASE_BITS`` candidates
    whose CRC and length check pass, flipping the least reliable bits (Chase decoding); None if none does.

    Below -3 dB Es/N0 most failed headers have one or two bit errors among their least reliable bits; the
    CRC finds which flip is right. Trying 16 candidates costs 16/65536 in false accepts of a noise header,
    which the frame length and the receiver's own checks (image id, tile count) catch.
    """
    hard = (soft < 0).astype(np.int8)
    weakest = np.argsort(np.abs(soft))[:CHASE_BITS]
    for pattern in range(2 ** CHASE_BITS):
        bits = hard.copy()
        for j, position in enumerate(weakest):
            if pattern >> j & 1:
                bits[position] ^= 1
        fields = parse_header(bits)
        if fields is not None:
            return bits, fields
    return None


def data_region_length(n_symbols: int) -> int:
    """Header and data symbols plus their pilots: everything after the preamble."""
    m = HEADER_SYMBOLS + n_symbols
    return m + -(-m // PILOT_SPACING) + 1


def pilot_positions(n_symbols: int) -> np.ndarray:
    """Indices of the pilots after the preamble: before every PILOT_SPACING header/data symbols, and at the end.

    The header fills whole blocks, so its pilots (the first HEADER_SYMBOLS / PILOT_SPACING + 1) sit at the
    same places in every frame and the receiver can use them before it knows the frame's length.
    """
    blocks_ = -(-(HEADER_SYMBOLS + n_symbols) // PILOT_SPACING)
    return np.append(np.arange(blocks_) * (PILOT_SPACING + 1), data_region_length(n_symbols) - 1)


HEADER_PILOTS = HEADER_SYMBOLS // PILOT_SPACING + 1   # pilots before, inside and right after the header
HEADER_REGION = (HEADER_PILOTS - 1) * (PILOT_SPACING + 1) + 1


def frame_symbols(data: np.ndarray, image_id: int = 0, frame_index: int = 0) -> np.ndarray:
    """(n,) complex data symbols -> preamble + pilot-interleaved header and data, (frame_length(n),) complex64."""
    data = np.asarray(data, np.complex64).ravel()
    n = len(data)
    if not 1 <= n <= MAX_FRAME_SYMBOLS:
        raise ValueError(f"a frame carries 1..{MAX_FRAME_SYMBOLS} data symbols, got {n}")
    if not np.all(np.isfinite(data)):
        raise ValueError("data symbols contain NaN or infinity")
    header = (1 - 2 * np.repeat(header_bits(image_id, frame_index, n), HEADER_REPETITION)) * HEADER_SCRAMBLE
    region = np.empty(data_region_length(n), np.complex64)
    is_pilot = np.zeros(len(region), bool)
    is_pilot[pilot_positions(n)] = True
    region[is_pilot] = PILOT_SYMBOL
    region[~is_pilot] = np.concatenate([header.astype(np.complex64), data])
    return np.concatenate([PREAMBLE, region])


def frame_length(n_symbols: int) -> int:
    """Channel symbols of one frame carrying ``n_symbols`` data symbols (ramps and silence not counted)."""
    return len(PREAMBLE) + data_region_length(n_symbols)


def channel_symbols_for(n_symbols: int) -> int:
    """Channel symbols one frame occupies on air, counted as ``packet.channel_symbols_for`` counts them."""
    return packet.BURST_RAMP_LENGTH + frame_length(n_symbols)


# --- PDUs -------------------------------------------------------------------------------------------

def symbols_pdu(symbols: np.ndarray, meta: dict | None = None) -> pmt.pmt_t:
    """(n,) complex -> pmt.cons(meta dict, f32vector of interleaved re/im)."""
    meta_pmt = pmt.make_dict()
    for key, value in (meta or {}).items():
        meta_pmt = pmt.dict_add(meta_pmt, pmt.intern(key), pmt.to_pmt(value))
    flat = np.asarray(symbols, np.complex64).view(np.float32)
    return pmt.cons(meta_pmt, pmt.init_f32vector(len(flat), flat))


def symbols_from_pdu(msg: pmt.pmt_t) -> tuple[dict, np.ndarray]:
    """PDU with an f32vector (interleaved) or c32vector payload -> (meta dict, (n,) complex64).

    ValueError for anything else (not a pair, other vector type, odd float count).
    """
    if not pmt.is_pair(msg):
        raise ValueError("message is not a PDU (pair of metadata and vector)")
    meta, vec = pmt.car(msg), pmt.cdr(msg)
    meta_dict = (pmt.to_python(meta) or {}) if pmt.is_dict(meta) else {}
    if pmt.is_f32vector(vec):
        flat = np.asarray(pmt.f32vector_elements(vec), np.float32)
        if len(flat) % 2:
            raise ValueError(f"interleaved payload has an odd number of floats ({len(flat)})")
        return meta_dict, flat.view(np.complex64).copy()
    if pmt.is_c32vector(vec):
        return meta_dict, np.asarray(pmt.c32vector_elements(vec), np.complex64)
    raise ValueError("PDU payload must be an f32vector (interleaved re/im) or a c32vector")


def combine_copies(copies: list[tuple[np.ndarray, dict]]) -> tuple[np.ndarray, float]:
    """Maximum-ratio combining of equalised copies of one frame (analog_rx output: unit gain, noise 1/SNR
    each): the SNR-weighted mean, and the combined SNR in dB (the sum of the linear estimates)."""
    weights = np.array([10 ** (meta[SNR_EST_KEY] / 10) for _, meta in copies])
    weights = np.maximum(weights, 1e-3)
    stacked = np.stack([symbols for symbols, _ in copies])
    combined = (weights[:, None] * stacked).sum(axis=0) / weights.sum()
    return combined.astype(np.complex64), float(10 * math.log10(weights.sum()))


# --- TX ---------------------------------------------------------------------------------------------

class _framer(gr.basic_block):
    """Symbol PDUs -> whole-frame symbol PDUs (c32vector); refuses bad PDUs, counting them in ``dropped``."""

    def __init__(self):
        gr.basic_block.__init__(self, "semcom_analog_framer", None, None)
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self._on_pdu)
        self.frames = 0
        self.dropped = 0
        self.last_error = ""

    def _on_pdu(self, msg):
        try:
            meta, symbols = symbols_from_pdu(msg)
            image_id = int(meta.get("image_id", 0))
            frame_index = int(meta.get("frame_index", self.frames))
            if not (0 <= image_id <= 255 and 0 <= frame_index <= 255):
                raise ValueError(f"image_id {image_id} / frame_index {frame_index} out of 0..255")
            frame = frame_symbols(symbols, image_id, frame_index)
        except (ValueError, TypeError) as exc:
            self.dropped += 1
            self.last_error = str(exc)
            log.warning("analog_tx: dropped a PDU: %s", exc)
            return
        self.frames += 1
        self.message_port_pub(pmt.intern("out"), pmt.cons(pmt.car(msg), pmt.init_c32vector(len(frame), frame)))


def _tail_symbols(samples_per_symbol, excess_bw):
    block_samples = _correlator(samples_per_symbol, excess_bw).output_multiple()
    return -(-block_samples // samples_per_symbol) + packet.RX_RRC_SPAN_SYMBOLS + packet.BURST_TAIL_MARGIN_SYMBOLS


def _max_burst_symbols(samples_per_symbol, excess_bw):
    return channel_symbols_for(MAX_FRAME_SYMBOLS) + _tail_symbols(samples_per_symbol, excess_bw)


class analog_tx(gr.hier_block2):
    """Symbol PDUs (message port 'in') -> complex baseband bursts (stream output 0), one burst per PDU."""

    def __init__(self, samples_per_symbol=2, excess_bw=0.35):
        gr.hier_block2.__init__(self, "semcom_analog_tx", gr.io_signature(0, 0, 0),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        _check_sps(samples_per_symbol)
        self.message_port_register_hier_in("in")
        tail = _tail_symbols(samples_per_symbol, excess_bw)
        max_symbols = _max_burst_symbols(samples_per_symbol, excess_bw)
        self.framer = _framer()
        self.to_stream = pdu.pdu_to_tagged_stream(gr.types.complex_t, LENGTH_TAG)
        packet._reserve(self.to_stream, max_symbols)
        filter_delay = packet._tx_filter_delay(samples_per_symbol, excess_bw)
        # Same Hann ramps with phasing symbols as packet_tx: the clock recovery locks before the preamble.
        self.shaper = digital.burst_shaper_cc(firdes.window(filter.window.WIN_HANN, packet.BURST_RAMP_LENGTH, 0),
                                              0, filter_delay + tail, True, LENGTH_TAG)
        packet._reserve(self.shaper, max_symbols + filter_delay)
        self.resampler = filter.pfb_arb_resampler_ccf(samples_per_symbol,
                                                      packet._tx_rrc_taps(samples_per_symbol, excess_bw),
                                                      packet.NFILTS)
        self.resampler.declare_sample_delay(filter_delay)
        self.burst_length = blocks.tagged_stream_multiply_length(gr.sizeof_gr_complex, LENGTH_TAG,
                                                                 samples_per_symbol)
        packet._reserve(self.burst_length, (max_symbols + filter_delay) * samples_per_symbol)
        self.msg_connect(self, "in", self.framer, "in")
        self.msg_connect(self.framer, "out", self.to_stream, "pdus")
        self.connect(self.to_stream, self.shaper, self.resampler, self.burst_length, self)

    def frames_sent(self):
        return self.framer.frames

    def pdus_dropped(self):
        return self.framer.dropped


# --- RX ---------------------------------------------------------------------------------------------

def _check_sps(samples_per_symbol):
    if samples_per_symbol not in SAMPLES_PER_SYMBOL_CHOICES:
        raise ValueError(f"samples_per_symbol must be one of {SAMPLES_PER_SYMBOL_CHOICES}")


def _modulated_preamble(samples_per_symbol, excess_bw):
    """Preamble waveform as analog_tx emits it (unit-gain channel), for corr_est_cc's absolute threshold."""
    up = np.zeros(len(PREAMBLE) * samples_per_symbol, np.complex64)
    up[::samples_per_symbol] = PREAMBLE
    return list(np.convolve(up, packet._tx_pulse(samples_per_symbol, excess_bw))[:len(up)])


def _correlator(samples_per_symbol, excess_bw):
    return digital.corr_est_cc(_modulated_preamble(samples_per_symbol, excess_bw), samples_per_symbol, 0,
                               CORRELATOR_THRESHOLD, digital.THRESHOLD_ABSOLUTE)


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average; near the ends the window shrinks to what exists."""
    kernel = np.ones(min(width, len(x)))
    return np.convolve(x, kernel, mode="same") / np.convolve(np.ones(len(x)), kernel, mode="same")


def _channel(y: np.ndarray, known_t: np.ndarray, known_x: np.ndarray, pilot_t: np.ndarray, f0: float):
    """Channel estimate h(t) for t in 0..len(y)-1 from known symbols; also the phase-ramp-free residuals.

    A line through the unwrapped phases of block means of ``y * conj(x)`` (blocks of
    PHASE_FIT_BLOCK_SYMBOLS) takes out the frequency offset; what remains at the pilots is smoothed
    over PILOT_SMOOTHING pilots and interpolated linearly. Returns (h, zr, slope): zr are the known
    symbols' ``y conj(x)`` with the fitted phase ramp removed, slope in rad/symbol on top of ``f0``.
    """
    t = np.arange(len(y), dtype=np.float64)
    derot = np.exp(-2j * np.pi * f0 * t)
    zk = y[known_t] * derot[known_t] * known_x            # = h(t) + noise; |x| = 1, x real
    block = known_t // PHASE_FIT_BLOCK_SYMBOLS
    counts = np.bincount(block)
    used = counts > 0
    means = (np.bincount(block, zk.real) + 1j * np.bincount(block, zk.imag))[used] / counts[used]
    times = np.bincount(block, known_t.astype(np.float64))[used] / counts[used]
    phases = np.unwrap(np.angle(means))
    if len(times) >= 2:
        slope, intercept = np.polyfit(times, phases, 1, w=np.sqrt(counts[used]))
    else:
        slope, intercept = 0.0, phases[0]
    ramp = np.exp(-1j * (intercept + slope * t))
    zr = zk * ramp[known_t]
    at_pilot = np.searchsorted(known_t, pilot_t)
    pilot_h = _moving_average(zr[at_pilot], PILOT_SMOOTHING)
    h_res = np.interp(t, pilot_t, pilot_h.real) + 1j * np.interp(t, pilot_t, pilot_h.imag)
    return h_res / (ramp * derot), zr, slope


def equalise_frame(y: np.ndarray) -> dict | None:
    """Received symbols starting at the preamble's first symbol -> frame dict, or None (bad header).

    ``y`` must hold at least ``len(PREAMBLE) + HEADER_REGION`` symbols; when it is too short for the
    data the header announces, the dict has ``needed`` (the total length) and no ``symbols``.
    Returns ``image_id, frame_index, n_symbols, symbols ((n,) complex64 equalised), snr_db_est,
    channel_gain, frequency_offset`` (cycles/symbol).
    """
    p = len(PREAMBLE)
    if len(y) < p + HEADER_REGION:
        raise ValueError(f"{len(y)} symbols cannot hold a preamble and a header ({p + HEADER_REGION})")
    y = np.asarray(y, np.complex64)
    # Coarse frequency from the preamble halves; the header is read with preamble + header pilots.
    z = y[:p] * PREAMBLE.real
    half = p // 2
    f0 = np.angle(z[half + 1:].sum() * np.conj(z[:half].sum())) / (2 * np.pi * (half + 1))
    header_pilots = p + np.arange(HEADER_PILOTS) * (PILOT_SPACING + 1)
    known_t = np.concatenate([np.arange(p), header_pilots])
    known_x = np.concatenate([PREAMBLE.real, np.full(HEADER_PILOTS, PILOT_SYMBOL.real)])
    h, _, _ = _channel(y[:p + HEADER_REGION], known_t, known_x, header_pilots, f0)
    is_header = np.ones(HEADER_REGION, bool)
    is_header[header_pilots - p] = False
    hdr_t = p + np.flatnonzero(is_header)
    hdr = y[hdr_t] * np.conj(h[hdr_t])
    soft = (hdr.real * HEADER_SCRAMBLE).reshape(HEADER_BITS, HEADER_REPETITION).sum(axis=1)
    decoded = chase_decode_header(soft)
    if decoded is None:
        return None
    bits, fields = decoded
    image_id, frame_index, n = fields
    needed = frame_length(n)
    out = {"image_id": image_id, "frame_index": frame_index, "n_symbols": n, "needed": needed}
    if len(y) < needed:
        return out
    y = y[:needed]
    # Every known symbol: preamble, the header as decided (its CRC passed), the pilots.
    pilots = p + pilot_positions(n)
    header_x = (1 - 2 * np.repeat(bits, HEADER_REPETITION)) * HEADER_SCRAMBLE
    known_t = np.concatenate([np.arange(p), hdr_t, pilots])
    order = np.argsort(known_t)
    known_t = known_t[order]
    known_x = np.concatenate([PREAMBLE.real, header_x, np.full(len(pilots), PILOT_SYMBOL.real)])[order]
    h, zr, slope = _channel(y, known_t, known_x, pilots, f0)
    is_data = np.ones(needed, bool)
    is_data[known_t] = False
    h_data = h[is_data]
    if np.any(np.abs(h_data) < 1e-9):
        return None
    data = (y[is_data] / h_data).astype(np.complex64)
    # Noise from differences of consecutive known symbols after the preamble (the clock recovery may
    # still settle inside the preamble of the first burst); the channel barely changes between them.
    after = known_t >= p
    d = np.diff(zr[after])
    noise_var = float(np.mean(np.abs(d) ** 2) / 2)
    gain = float(np.mean(np.abs(h_data) ** 2))
    out.update({"symbols": data, SNR_EST_KEY: float(10 * np.log10(gain / max(noise_var, 1e-12))),
                "channel_gain": float(np.sqrt(gain)), "frequency_offset": float(f0 + slope / (2 * np.pi))})
    return out


class _deframer(gr.sync_block):
    """Symbols (1 per sample, after clock recovery) with the correlator's tags -> frame PDUs on 'out'."""

    def __init__(self):
        gr.sync_block.__init__(self, "semcom_analog_deframer", in_sig=[np.complex64], out_sig=None)
        self.message_port_register_out(pmt.intern("out"))
        self._buf = np.zeros(0, np.complex64)
        self._base = 0                     # absolute index of _buf[0]
        self._triggers: list[int] = []
        self._done_until = 0               # symbols before this belong to a delivered frame
        self.counts = {"triggers": 0, "frames": 0, "bad_header": 0, "truncated": 0}

    def work(self, input_items, output_items):
        x = input_items[0]
        n = len(x)
        start = self.nitems_read(0)
        for tag in self.get_tags_in_window(0, 0, n, pmt.intern(TRIGGER_TAG)):
            self._triggers.append(int(tag.offset))
            self.counts["triggers"] += 1
        self._buf = np.concatenate([self._buf, x])
        self._process(final=False)
        # Keep what a pending trigger or a late tag (preamble search window) may still need.
        keep_from = min(self._triggers + [start + n]) - 2 * SEARCH_SYMBOLS
        if keep_from > self._base:
            self._buf = self._buf[keep_from - self._base:]
            self._base = keep_from
        return n

    def _process(self, final: bool):
        p = len(PREAMBLE)
        end = self._base + len(self._buf)
        while self._triggers:
            trig = self._triggers[0]
            if trig < self._done_until:             # a trigger inside a delivered frame (data sidelobe)
                self._triggers.pop(0)
                continue
            lo = max(trig - SEARCH_SYMBOLS, self._base)
            hi = trig + SEARCH_SYMBOLS + p + HEADER_REGION
            if hi > end:
                if final:
                    self.counts["truncated"] += 1
                    self._triggers.pop(0)
                    continue
                return
            # After the filters the tag lands ~10 symbols before the preamble (cf. packet.MARK_DELAY_SYMBOLS):
            # locate the preamble's first symbol within +-SEARCH_SYMBOLS of it.
            window = self._buf[lo - self._base:trig + SEARCH_SYMBOLS + p - self._base]
            corr = np.abs(np.correlate(window, PREAMBLE, mode="valid"))
            first = lo + int(np.argmax(corr))
            frame = equalise_frame(self._buf[first - self._base:])
            if frame is None:
                self.counts["bad_header"] += 1
                self._triggers.pop(0)
                continue
            if "symbols" not in frame:
                if final:
                    self.counts["truncated"] += 1
                    self._triggers.pop(0)
                    continue
                return
            self._triggers.pop(0)
            self._done_until = first + frame["needed"]
            self.counts["frames"] += 1
            meta = {k: frame[k] for k in ("image_id", "frame_index", "n_symbols", SNR_EST_KEY, "channel_gain",
                                          "frequency_offset")}
            self.message_port_pub(pmt.intern("out"), symbols_pdu(frame["symbols"], meta))

    def stop(self):
        self._process(final=True)
        return True


class analog_rx(gr.hier_block2):
    """Complex baseband (stream input 0) -> equalised data symbols per frame (message port 'out')."""

    def __init__(self, samples_per_symbol=2, excess_bw=0.35):
        gr.hier_block2.__init__(self, "semcom_analog_rx", gr.io_signature(1, 1, gr.sizeof_gr_complex),
                                gr.io_signature(0, 0, 0))
        _check_sps(samples_per_symbol)
        self.message_port_register_hier_out("out")
        self.correlator = _correlator(samples_per_symbol, excess_bw)
        self.time_gate = blocks.tag_gate(gr.sizeof_gr_complex, False)
        self.time_gate.set_single_key("time_est")     # as packet_rx: the loop, not the tag, sets the timing
        self.clock_sync = digital.pfb_clock_sync_ccf(
            samples_per_symbol, CLOCK_LOOP_BW, packet._rx_rrc_taps(samples_per_symbol, excess_bw),
            packet.NFILTS, packet.NFILTS // 2, packet.CLOCK_MAX_DEVIATION, 1)
        self.deframer = _deframer()
        self.connect(self, self.correlator, self.time_gate, self.clock_sync, self.deframer)
        self.msg_connect(self.deframer, "out", self, "out")

    @property
    def counts(self) -> dict:
        """triggers (correlator tags), frames (delivered), bad_header (CRC failed: false trigger or noise),
        truncated (the stream ended inside a frame)."""
        return dict(self.deframer.counts)
