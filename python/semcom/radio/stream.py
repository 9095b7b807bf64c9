"""bursts_to_stream: packet bursts in, a continuous sample stream out (zeros between bursts)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pmt
from gnuradio import gr

from semcom.radio.packet import LENGTH_TAG

# A burst is released this many samples before its announced end: the TX resampler holds its last
# few output samples back until the next burst pushes them out, and they lie in the burst's silent
# tail (hundreds of symbols), so releasing early loses nothing; the held-back samples go out in
# front of the next burst.
RELEASE_SLACK_SAMPLES = 256


class _burst_collector(gr.sync_block):
    """Stream sink: cuts the input at burst ends (``packet_len`` tags) and queues whole bursts."""

    def __init__(self, bursts: deque):
        gr.sync_block.__init__(self, name="semcom_burst_collector", in_sig=[np.complex64], out_sig=None)
        self._bursts = bursts
        self._length_tag = pmt.intern(LENGTH_TAG)
        self._pending: list[np.ndarray] = []
        self._pending_start = 0      # absolute offset of the first pending sample
        self._ends: deque[int] = deque()   # absolute offsets where announced bursts end
        self.bursts_in = 0

    def work(self, input_items, output_items):
        samples = input_items[0]
        read = self.nitems_read(0)
        if not self._pending:
            self._pending_start = read
        self._pending.append(samples.copy())
        for tag in self.get_tags_in_window(0, 0, len(samples), self._length_tag):
            self.bursts_in += 1
            self._ends.append(tag.offset + pmt.to_long(tag.value))
        end = read + len(samples)
        while self._ends and end >= self._ends[0] - RELEASE_SLACK_SAMPLES:
            joined = np.concatenate(self._pending)
            cut = max(0, min(self._ends.popleft(), end) - self._pending_start)
            if cut:
                self._bursts.append(joined[:cut])
            rest = joined[cut:]
            self._pending = [rest] if len(rest) else []
            self._pending_start += cut
        return len(samples)


class _zero_fill_source(gr.sync_block):
    """Stream source: the queued bursts, back to back, and zeros whenever the queue is empty."""

    def __init__(self, bursts: deque):
        gr.sync_block.__init__(self, name="semcom_zero_fill_source", in_sig=None, out_sig=[np.complex64])
        self._bursts = bursts
        self._current = np.zeros(0, np.complex64)
        self.zeros_out = 0

    def work(self, input_items, output_items):
        out = output_items[0]
        n = 0
        while n < len(out):
            if not len(self._current):
                if not self._bursts:
                    break
                self._current = self._bursts.popleft()
            k = min(len(out) - n, len(self._current))
            out[n:n + k] = self._current[:k]
            self._current = self._current[k:]
            n += k
        if n < len(out):
            out[n:] = 0
            self.zeros_out += len(out) - n
        return len(out)


class bursts_to_stream(gr.hier_block2):
    """Complex bursts (packet_tx output) -> a stream that never stalls: zeros while no burst waits.

    ``packet_tx`` emits samples only while it has PDUs; a radio sink, a ZeroMQ link or a recording
    needs a steady sample clock, so the gaps are filled with zeros. A burst is queued only once it is
    complete (its ``packet_len`` tag gives the length), so zeros never land inside a burst.
    Something downstream must set the pace (a hardware sink or a throttle): the zero fill runs as
    fast as it is asked for.
    """

    def __init__(self):
        gr.hier_block2.__init__(self, "semcom_bursts_to_stream", gr.io_signature(1, 1, gr.sizeof_gr_complex),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        self._bursts: deque[np.ndarray] = deque()
        self.collector = _burst_collector(self._bursts)
        self.source = _zero_fill_source(self._bursts)
        self.connect(self, self.collector)
        self.connect(self.source, self)

    @property
    def bursts_in(self) -> int:
        return self.collector.bursts_in

    @property
    def queued_bursts(self) -> int:
        """Bursts waiting to go out (a growing number means the sink is slower than the TX)."""
        return len(self._bursts)
