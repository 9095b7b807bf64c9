"""bursts_to_stream: whole bursts in a continuous stream, and a recording that starts at the first burst."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pmt
from gnuradio import blocks, gr

from semcom.radio.packet import LENGTH_TAG
from semcom.radio.stream import LEAD_IN_SAMPLES, bursts_to_stream, finish_recording

BURST_LENGTHS = (1000, 2500, 700)


def tagged_bursts(rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Nonzero bursts back to back, each opened by a packet_len tag, as packet_tx emits them."""
    bursts = [(rng.standard_normal(n) + 1j * rng.standard_normal(n) + 5).astype(np.complex64) for n in BURST_LENGTHS]
    tags, offset = [], 0
    for burst in bursts:
        tag = gr.tag_t()
        tag.offset, tag.key, tag.value = offset, pmt.intern(LENGTH_TAG), pmt.from_long(len(burst))
        tags.append(tag)
        offset += len(burst)
    return np.concatenate(bursts), tags


def flowgraph(wait_for_first_burst: bool, n_out: int):
    samples, tags = tagged_bursts(np.random.default_rng(7))
    tb = gr.top_block()
    to_stream = bursts_to_stream(wait_for_first_burst=wait_for_first_burst)
    head = blocks.head(gr.sizeof_gr_complex, n_out)
    sink = blocks.vector_sink_c()
    tb.connect(blocks.vector_source_c(samples.tolist(), False, 1, tags), to_stream, head, sink)
    return tb, to_stream, head, sink, samples


def run(wait_for_first_burst: bool, n_out: int) -> tuple[np.ndarray, bursts_to_stream, np.ndarray]:
    tb, to_stream, _, sink, samples = flowgraph(wait_for_first_burst, n_out)
    tb.run()
    return np.asarray(sink.data(), np.complex64), to_stream, samples


def sent_tx(pdus: int) -> SimpleNamespace:
    """What finish_recording reads of a semantic_tx that has published one image of ``pdus`` PDUs."""
    idle = threading.Event()
    idle.set()
    return SimpleNamespace(idle=idle, images_sent=1, pdus_sent=pdus, errors=0, last_error="")


def test_waiting_stream_opens_with_the_lead_in_then_every_burst_whole():
    n_out = LEAD_IN_SAMPLES + sum(BURST_LENGTHS) + 500
    out, to_stream, samples = run(True, n_out)
    assert len(out) == n_out
    assert not out[:LEAD_IN_SAMPLES].any()
    np.testing.assert_array_equal(out[LEAD_IN_SAMPLES:LEAD_IN_SAMPLES + len(samples)], samples)
    assert not out[LEAD_IN_SAMPLES + len(samples):].any()
    assert to_stream.bursts_out == len(BURST_LENGTHS)
    assert to_stream.last_burst_end == LEAD_IN_SAMPLES + len(samples)


def test_a_recording_that_ends_inside_a_burst_is_reported_short():
    cut = LEAD_IN_SAMPLES + BURST_LENGTHS[0] + 10          # ends 10 samples into the second burst
    tb, to_stream, head, sink, _ = flowgraph(True, cut)
    tb.start()
    problem = finish_recording(tb, head, cut, sent_tx(len(BURST_LENGTHS)), to_stream)
    assert len(sink.data()) == cut
    assert to_stream.last_burst_end > cut
    assert problem.startswith("recording too short")


def test_a_recording_that_holds_every_burst_is_not_reported():
    n_out = LEAD_IN_SAMPLES + sum(BURST_LENGTHS) + 500
    tb, to_stream, head, _, _ = flowgraph(True, n_out)
    tb.start()
    assert finish_recording(tb, head, n_out, sent_tx(len(BURST_LENGTHS)), to_stream) == ""
    # a TX that published more PDUs than reached the stream: the recording misses some
    assert finish_recording(tb, head, n_out, sent_tx(len(BURST_LENGTHS) + 1), to_stream).startswith("recording too short")


def test_a_tx_that_failed_ends_the_wait_with_its_error():
    tb, to_stream, head, _, _ = flowgraph(True, 10 ** 9)
    idle = threading.Event()
    idle.set()
    failed = SimpleNamespace(idle=idle, images_sent=0, pdus_sent=0, errors=1, last_error="photo.png: no such file")
    tb.start()
    assert finish_recording(tb, head, 10 ** 9, failed, to_stream) == "nothing recorded: the TX sent no image (photo.png: no such file)"


def test_default_stream_carries_the_bursts_whole_between_zeros():
    out, to_stream, samples = run(False, 200_000)
    nonzero = np.flatnonzero(out)
    start = nonzero[0]
    # the zero fill may run ahead of the bursts, but never cuts into one: they arrive as one block
    np.testing.assert_array_equal(out[start:start + len(samples)], samples)
    assert len(nonzero) == len(samples)
    assert to_stream.bursts_out == len(BURST_LENGTHS)


def test_two_transmitters_share_one_stream_whole_bursts_and_no_fill():
    """bursts_to_stream(n_inputs=2, zero_fill=False), as the hybrid mode joins packet_tx and analog_tx:
    every burst of both inputs comes out whole and back to back, nothing else in between."""
    first, tags = tagged_bursts(np.random.default_rng(7))
    second = -first[::-1].copy()       # other values, the same burst lengths in reverse order
    second_tags = []
    offset = 0
    for n in BURST_LENGTHS[::-1]:
        tag = gr.tag_t()
        tag.offset, tag.key, tag.value = offset, pmt.intern(LENGTH_TAG), pmt.from_long(n)
        second_tags.append(tag)
        offset += n
    tb = gr.top_block()
    to_stream = bursts_to_stream(n_inputs=2, zero_fill=False)
    sink = blocks.vector_sink_c()
    tb.connect(blocks.vector_source_c(first.tolist(), False, 1, tags), (to_stream, 0))
    tb.connect(blocks.vector_source_c(second.tolist(), False, 1, second_tags), (to_stream, 1))
    tb.connect(to_stream, sink)
    tb.start()       # a source that waits for bursts never ends by itself: stop it once all are out
    deadline = time.monotonic() + 10
    while to_stream.bursts_out < 2 * len(BURST_LENGTHS) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # anything sent after the last burst would show up as extra samples
    tb.stop()
    tb.wait()
    out = np.asarray(sink.data(), np.complex64)
    bursts = {}
    for samples, lengths in ((first, BURST_LENGTHS), (second, BURST_LENGTHS[::-1])):
        for start, n in zip(np.cumsum((0,) + lengths[:-1]), lengths):
            bursts[samples[start].tobytes()] = samples[start:start + n]
    position, seen = 0, 0
    while position < len(out):
        burst = bursts.pop(out[position].tobytes())     # KeyError: a burst cut or interleaved
        np.testing.assert_array_equal(out[position:position + len(burst)], burst)
        position += len(burst)
        seen += 1
    assert seen == 2 * len(BURST_LENGTHS) and not bursts
    assert to_stream.bursts_in == 2 * len(BURST_LENGTHS)


def test_bursts_to_stream_needs_an_input():
    import pytest

    with pytest.raises(ValueError, match="at least one"):
        bursts_to_stream(n_inputs=0)
