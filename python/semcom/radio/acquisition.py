"""coarse_frequency_correction: finds each burst's carrier offset on its preamble and removes it.

``packet_rx``'s access-code correlator is coherent over the access code's first 192 symbols, so it finds
nothing beyond about 1e-3 cycles/sample (the code then turns by more than a cycle); its Costas loop only
tracks what is left after the correlator found the burst. A radio's oscillators are much further off:
20 ppm at 2.4 GHz and 1 MS/s is 0.048 cycles/sample. This block sits ahead of ``packet_rx`` and, per
burst:

1. **finds** the access code with a *differential* correlator: ``d[n] = r[n] * conj(r[n - D])`` (D = one
   symbol) turns any carrier offset f into a constant phase ``2 pi f D``, so its correlation with the
   same product of the known preamble has a magnitude that does not depend on f (for |f| < 1/(2D)). The
   metric is normalised by both energies (0..1), so it does not depend on the input level either.
   Stock blocks compute it (delay, multiply_conjugate, fft_filter, moving_average, divide);
2. **measures** the offset on the preamble it found: the FFT of ``r * conj(preamble)`` (zero-padded
   ``FFT_OVERSAMPLING`` times, peak interpolated) peaks at f; over the whole access code (576 symbols
   of the repetition-9 header, 1152 samples at 2 samples/symbol) this is accurate to well under 5e-4
   cycles/sample at 0 dB Es/N0 (tests/test_rx_impairments.py), inside the correlator's tolerance;
3. **removes** it, phase-continuously, from a little before that burst on, until the next burst's
   estimate. The output is the input ``delay`` samples late, so the correction starts before the burst
   although it is only known after its preamble; stream tags move with the samples.

Between bursts the correction is held (a transmitter's offset drifts slowly), so a burst the detector
misses still gets its predecessor's. The last ``delay`` samples of a finite input (plus up to a block of
the FFT filter: 2551-2848 samples in all at 2 samples/symbol, measured) never leave: a recording must go
on that long after its last burst. packet_tx's silent tail (1688 samples) is shorter since the header
went to repetition 9, so a recording that ends with the last burst's tail loses that burst here.
"""

from __future__ import annotations

import numpy as np
from gnuradio import blocks, filter, gr
from scipy.ndimage import maximum_filter1d

from semcom.radio import packet

MAX_OFFSET = 0.05            # cycles/sample searched either side (20 ppm at 2.4 GHz, 1 MS/s is 0.048)
# Normalised differential-correlation metric (0..1) a preamble must reach, and the coherence (0..1)
# of r * conj(preamble) at the estimated offset that confirms it. Measured (QPSK/CC, 60 bursts, random
# gaps, 0.03 cycles/sample, 20 ppm): the metric's peak on a burst is 0.064..0.16 at 0 dB Es/N0 and
# 0.028..0.09 at -2 dB; noise and payloads reach 0.037 at 0 dB and 0.059 noiseless (a payload can
# look like the access code), so a detection is only believed when its preamble also coheres: bursts
# 0.28..0.42 at 0 dB and 0.2..0.33 at -2 dB, noise and payloads at most 0.035.
DETECTION_THRESHOLD = 0.04
COHERENCE_THRESHOLD = 0.15
FFT_OVERSAMPLING = 8
GUARD_SYMBOLS = packet.BURST_RAMP_LENGTH + 8    # the correction starts this far ahead of the access code
PHASOR_ROW = 256             # the correction's phasors: an outer product of tables this long and n / it long
CANDIDATE_PEAKS = 8          # metric peaks tried in turn when the highest does not cohere
WORK_ITEMS = 8192            # samples per call at least: the Python work has a fixed cost per call


class _offset_remover(gr.sync_block):
    """Inputs: samples, and the normalised differential metric of the preamble ending at each sample.
    Output: the samples ``delay`` late, each burst's offset (measured on its preamble) removed."""

    def __init__(self, preamble: np.ndarray, max_offset: float, threshold: float, guard: int,
                 coherence_threshold: float, peak_spacing: int):
        gr.sync_block.__init__(self, "semcom_offset_remover", [np.complex64, np.float32], [np.complex64])
        self._preamble = preamble
        self._preamble_energy = float(np.sum(np.abs(preamble) ** 2))
        self._n = len(preamble)
        self._fft_size = 1 << int(np.ceil(np.log2(self._n * FFT_OVERSAMPLING)))
        max_bin = int(np.ceil(max_offset * self._fft_size))
        self._bins = np.r_[0:max_bin + 1, self._fft_size - max_bin:self._fft_size]
        self._threshold = float(threshold)
        self._coherence_threshold = float(coherence_threshold)
        self._guard = guard
        self._peak_spacing = peak_spacing      # samples per header bit: one candidate peak per bit at most
        # A metric peak is decided once a preamble's length of metric follows it; its burst started a
        # preamble earlier still, and the correction a guard before that.
        self.delay = 2 * self._n + guard + 64
        self.set_history(self.delay + 1)
        self.set_tag_propagation_policy(gr.TPP_DONT)      # tags move by hand, ``delay`` late like the samples
        self.set_min_noutput_items(WORK_ITEMS)
        self.set_min_output_buffer(0, 4 * WORK_ITEMS)
        self._decided_to = 0         # absolute item index up to which metric peaks have been decided
        self._schedule = []          # (absolute input index, offset from there on), ascending
        self._phase = 0.0            # cycles, of the next output sample
        self.offset = 0.0            # cycles/sample being removed at the latest output sample
        self.estimates = 0           # bursts measured (both written by the work thread only)
        self.rejected = 0            # detections whose preamble did not cohere at any offset (noise, payload)

    def _estimate(self, segment: np.ndarray) -> tuple[float, float]:
        """Carrier offset (cycles/sample) of a received preamble, by the peak of |FFT(r * conj(p))|, and
        its coherence: the normalised correlation (0..1) of the segment with the preamble at that offset."""
        spectrum = np.abs(np.fft.fft(segment * np.conj(self._preamble), self._fft_size))
        k = int(self._bins[np.argmax(spectrum[self._bins])])
        left, mid, right = spectrum[(k - 1) % self._fft_size], spectrum[k], spectrum[(k + 1) % self._fft_size]
        curvature = left - 2 * mid + right
        fine = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        signed = k if k <= self._fft_size // 2 else k - self._fft_size
        energy = float(np.sum(np.abs(segment) ** 2)) * self._preamble_energy
        return (signed + fine) / self._fft_size, float(mid ** 2 / energy) if energy > 0 else 0.0

    @staticmethod
    def _phasors(phase: float, offset: float, n: int) -> np.ndarray:
        """exp(-2j pi (phase + offset k)), k = 0..n-1, as an outer product of two short tables: about
        n / ROW + ROW complex exponentials instead of n."""
        rows = -(-n // PHASOR_ROW)
        fine = np.exp(-2j * np.pi * ((offset * np.arange(PHASOR_ROW)) % 1.0)).astype(np.complex64)
        coarse = np.exp(-2j * np.pi * ((phase + offset * PHASOR_ROW * np.arange(rows)) % 1.0)).astype(np.complex64)
        return np.outer(coarse, fine).reshape(-1)[:n]

    def _detect(self, x: np.ndarray, metric: np.ndarray, base: int) -> None:
        """Schedule the offsets of the preambles whose metric peak has a preamble's length of metric after it."""
        n = self._n
        end = base + len(metric) - n               # peaks before this are the largest for n items on
        start = max(self._decided_to, base + n)    # and have n items of metric before them in ``metric``
        if end <= start:
            return
        # A candidate is the largest metric within n items either side (maximum_filter1d: one pass).
        region = metric[start - base - n:end - base + n]
        peaks = (region >= self._threshold) & (region == maximum_filter1d(region, 2 * n + 1, mode="nearest"))
        taken_to = 0
        for k in np.flatnonzero(peaks[n:len(region) - n]) + (start - base):
            if k < taken_to:
                continue
            first = k - n + 1                      # the preamble's first sample, in x
            offset, coherence = self._estimate(x[first:first + n])
            if coherence < self._coherence_threshold:
                first, offset, coherence = self._next_candidates(x, metric, k)
            if coherence < self._coherence_threshold:
                self.rejected += 1
                continue
            self._schedule.append((base + first - self._guard, offset))
            self.estimates += 1
            taken_to = k + n
        self._decided_to = max(self._decided_to, end)

    def _next_candidates(self, x: np.ndarray, metric: np.ndarray, k: int) -> tuple[int, float, float]:
        """(first sample, offset, coherence) of the most coherent of the next-highest metric peaks within a
        preamble's length of ``k``, when the highest did not cohere. The 9x access code's differential
        template is mostly "no transition", and so is the 9x header after it: at 0 dB the metric's
        highest peak can lie 100-260 symbols into the header (measured, 9 of 60 bursts), with the
        preamble's own peak a lower local maximum before it."""
        n, lo, hi = self._n, max(self._n - 1, k - self._n), min(len(metric), k + self._n + 1)
        window = metric[lo:hi]
        local = np.flatnonzero((window >= self._threshold) &
                               (window == maximum_filter1d(window, self._peak_spacing, mode="nearest"))) + lo
        best = (k - n + 1, 0.0, 0.0)
        for j in local[np.argsort(metric[local])[::-1]][:CANDIDATE_PEAKS]:
            if j == k:
                continue
            offset, coherence = self._estimate(x[j - n + 1:j + 1])
            if coherence > best[2]:
                best = (j - n + 1, offset, coherence)
        return best

    def work(self, input_items, output_items):
        x, metric = input_items
        out = output_items[0]
        n = len(out)
        read = self.nitems_read(0)
        base = read - self.delay                   # absolute index of x[0]
        for tag in self.get_tags_in_range(0, read, read + n):
            self.add_item_tag(0, tag.offset + self.delay, tag.key, tag.value, tag.srcid)
        self._detect(x, metric, base)
        # out[i] is x[i] (absolute index base + i): rotate it by the offset in force there.
        segments = [(0, self.offset)]              # (first output index, offset from there on)
        for index, offset in self._schedule:
            if index < base + n:
                segments.append((max(0, index - base), offset))
        self._schedule = [(i, o) for i, o in self._schedule if i >= base + n]
        self.offset = segments[-1][1]
        if all(offset == 0.0 for _, offset in segments):
            out[:] = x[:n]
            return n
        rotation = np.empty(n, np.complex64)
        for (start, offset), (end, _) in zip(segments, segments[1:] + [(n, None)]):
            if end > start:
                rotation[start:end] = self._phasors(self._phase, offset, end - start)
                self._phase = (self._phase + offset * (end - start)) % 1.0
        np.multiply(x[:n], rotation, out=out)
        return n


class coarse_frequency_correction(gr.hier_block2):
    """Complex baseband in -> the same, ``delay`` samples late, with each burst's carrier offset removed.

    Put it ahead of ``packet_rx`` (same samples_per_symbol and header_repetition; every MCS shares the
    access code, so ``modulation`` and ``fec_code`` are accepted for compatibility and select nothing).
    ``estimates`` counts the bursts measured; ``offset`` is the offset (cycles/sample) being removed.
    """

    def __init__(self, modulation: str = "qpsk", fec_code: str = "cc", samples_per_symbol: int = 2,
                 excess_bw: float = 0.35, max_offset: float = MAX_OFFSET,
                 threshold: float = DETECTION_THRESHOLD, coherence_threshold: float = COHERENCE_THRESHOLD,
                 header_repetition: int = packet.HEADER_REPETITION):
        gr.hier_block2.__init__(self, "semcom_coarse_frequency_correction",
                                gr.io_signature(1, 1, gr.sizeof_gr_complex), gr.io_signature(1, 1, gr.sizeof_gr_complex))
        if not 0 < max_offset < 0.5 / samples_per_symbol:
            raise ValueError(f"max_offset must be in (0, {0.5 / samples_per_symbol}) cycles/sample "
                             "(the differential detector's lag is one symbol)")
        preamble = np.asarray(packet._modulated_preamble(samples_per_symbol, excess_bw, header_repetition, whole=True),
                              np.complex64)
        lag = samples_per_symbol
        template = preamble[lag:] * np.conj(preamble[:-lag])
        taps = len(template)
        # d[k] = x[k] conj(x[k - lag]); metric[k] = |sum_i conj(t[i]) d[k - taps + 1 + i]|^2 /
        # (sum |d|^2 over the same window * sum |t|^2): the preamble ending at x[k].
        self.lagged = blocks.delay(gr.sizeof_gr_complex, lag)
        self.product = blocks.multiply_conjugate_cc()
        self.correlator = filter.fft_filter_ccc(1, list(np.conj(template[::-1])))
        self.correlation_power = blocks.complex_to_mag_squared()
        self.product_power = blocks.complex_to_mag_squared()
        self.energy = blocks.moving_average_ff(taps, float(np.sum(np.abs(template) ** 2)))
        # Perfect silence (a noiseless link) must read 0, not float rounding over float rounding: inputs
        # come at about unit level (packet_rx's correlator needs that), so this floor is far below any signal.
        self.floor = blocks.add_const_ff(1e-6 * taps * float(np.sum(np.abs(template) ** 2)))
        self.metric = blocks.divide_ff()
        self.remover = _offset_remover(preamble, max_offset, threshold, GUARD_SYMBOLS * samples_per_symbol,
                                       coherence_threshold, header_repetition * samples_per_symbol)
        self.connect(self, (self.product, 0))
        self.connect(self, self.lagged, (self.product, 1))
        self.connect(self.product, self.correlator, self.correlation_power, (self.metric, 0))
        self.connect(self.product, self.product_power, self.energy, self.floor, (self.metric, 1))
        # The remover takes WORK_ITEMS plus its history at once: its input buffers must hold that, and the
        # one a user's upstream block gives the hier input may be smaller.
        self.buffer = blocks.copy(gr.sizeof_gr_complex)
        for block in (self.buffer, self.metric):
            block.set_min_output_buffer(0, 4 * WORK_ITEMS)
        self.connect(self, self.buffer, (self.remover, 0))
        self.connect(self.metric, (self.remover, 1))
        self.connect(self.remover, self)

    @property
    def delay(self) -> int:
        return self.remover.delay

    @property
    def estimates(self) -> int:
        return self.remover.estimates

    @property
    def offset(self) -> float:
        return self.remover.offset
