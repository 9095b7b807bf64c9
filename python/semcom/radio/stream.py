"""bursts_to_stream: packet bursts in (from one or more transmitters), one sample stream out."""

from __future__ import annotations

import time
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
# With wait_for_first_burst, the stream opens with this much silence before the first burst: a
# receiver's AGC and burst search see noise before the first access code, as on a real capture.
LEAD_IN_SAMPLES = 4096
WAIT_POLL_S = 0.01      # how often a waiting source looks for its first burst (no busy loop)


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
    """Stream source: the queued bursts, back to back, and zeros whenever the queue is empty
    (``zero_fill``), or nothing until the next burst (it polls the queue every ``WAIT_POLL_S``)."""

    def __init__(self, bursts: deque, wait_for_first_burst: bool, zero_fill: bool = True):
        gr.sync_block.__init__(self, name="semcom_zero_fill_source", in_sig=None, out_sig=[np.complex64])
        self._bursts = bursts
        self._waiting = wait_for_first_burst
        self._zero_fill = zero_fill
        self._current = np.zeros(0, np.complex64)
        self._current_is_burst = False
        self.zeros_out = 0
        self.bursts_out = 0
        self.last_burst_end = 0      # output offset just past the last burst sent whole

    def work(self, input_items, output_items):
        out = output_items[0]
        if not self._zero_fill and not len(self._current) and not self._bursts:
            time.sleep(WAIT_POLL_S)
            return 0
        if self._waiting:
            if not self._bursts:
                time.sleep(WAIT_POLL_S)
                return 0
            self._waiting = False
            self._current = np.zeros(LEAD_IN_SAMPLES, np.complex64)
        n = 0
        while n < len(out):
            if not len(self._current):
                if not self._bursts:
                    break
                self._current = self._bursts.popleft()
                self._current_is_burst = True
            k = min(len(out) - n, len(self._current))
            out[n:n + k] = self._current[:k]
            self._current = self._current[k:]
            n += k
            if self._current_is_burst and not len(self._current):
                self._current_is_burst = False
                self.bursts_out += 1
                self.last_burst_end = self.nitems_written(0) + n
        if n < len(out) and not self._zero_fill:
            return n
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

    ``wait_for_first_burst`` holds the stream back until the first burst is complete, then opens it with
    ``LEAD_IN_SAMPLES`` of silence. A recording of fixed length then counts from the image, not from
    the start of a flowgraph whose encoder may take seconds (more on a loaded machine).

    ``n_inputs`` transmitters (e.g. packet_tx and analog_tx of a hybrid frame) share the one output:
    each input's bursts are queued whole, so bursts of different inputs never overlap, and they go
    out in the order they were completed. ``zero_fill=False`` sends the bursts back to back with no
    silence between them and nothing while none waits: a simulated channel then sees what
    ``packet_tx`` alone gives it, and a loopback does not spend its CPU on noise. Such a stream
    does not end by itself (a downstream ``head`` is not noticed while no burst waits): stop the
    flowgraph with ``stop()`` once the receiver has what it needs.
    """

    def __init__(self, wait_for_first_burst: bool = False, n_inputs: int = 1, zero_fill: bool = True):
        if n_inputs < 1:
            raise ValueError(f"n_inputs {n_inputs}: at least one transmitter")
        gr.hier_block2.__init__(self, "semcom_bursts_to_stream",
                                gr.io_signature(n_inputs, n_inputs, gr.sizeof_gr_complex),
                                gr.io_signature(1, 1, gr.sizeof_gr_complex))
        self._bursts: deque[np.ndarray] = deque()
        self.collectors = [_burst_collector(self._bursts) for _ in range(n_inputs)]
        self.source = _zero_fill_source(self._bursts, wait_for_first_burst, zero_fill)
        for port, collector in enumerate(self.collectors):
            self.connect((self, port), collector)
        self.connect(self.source, self)

    @property
    def bursts_in(self) -> int:
        return sum(c.bursts_in for c in self.collectors)

    @property
    def bursts_out(self) -> int:
        """Bursts sent whole on the output."""
        return self.source.bursts_out

    @property
    def last_burst_end(self) -> int:
        """Output sample offset just past the last burst sent whole (0 before the first)."""
        return self.source.last_burst_end

    @property
    def queued_bursts(self) -> int:
        """Bursts waiting to go out (a growing number means the sink is slower than the TX)."""
        return len(self._bursts)


def finish_recording(tb: gr.top_block, head, n_samples: int, tx, to_stream: bursts_to_stream,
                     poll_s: float = 0.05) -> str:
    """Wait until a fixed-length recording is full, stop ``tb``, and say what is missing from it.

    ``head`` counts the recorded samples; ``tx`` is the semantic_tx feeding ``to_stream`` (built with
    ``wait_for_first_burst``). Returns "" when every PDU the TX sent is whole in the recording, else
    the reason (the encoder failed, or the recording is too short for the frame): a truncated capture
    would otherwise decode as a silently incomplete image.
    """
    while head.nitems_written(0) < n_samples:
        if tx.idle.is_set() and tx.images_sent == 0 and tx.errors:
            break
        time.sleep(poll_s)
    tb.stop()
    tb.wait()
    if tx.images_sent == 0:
        return f"nothing recorded: the TX sent no image ({tx.last_error or 'still encoding'})"
    if to_stream.bursts_out < tx.pdus_sent or to_stream.last_burst_end > n_samples:
        return (f"recording too short: {to_stream.bursts_out} of {tx.pdus_sent} bursts sent by sample "
                f"{n_samples}; raise the duration")
    return ""
