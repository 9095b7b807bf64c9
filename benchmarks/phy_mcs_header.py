"""Measurements behind the one-receiver-for-every-MCS PHY (issue #14 item 1): PER per MCS through one
packet_tx -> channel_model -> packet_rx, with the header repetition and the Costas bandwidth as knobs.

    python benchmarks/phy_mcs_header.py per --mcs qpsk-r12 --snr 4 5 --pdus 200 --length 1000
    python benchmarks/phy_mcs_header.py headers --mcs bpsk-r14 --snr -3 -1 1 3 5 --repetition 3 9

Every run is one flowgraph per (setting, SNR) in this process, seeded; it prints one line per point.
"""

from __future__ import annotations

import argparse
import math
import time
from unittest import mock

import numpy as np
import pmt
from gnuradio import channels, gr

from semcom.constants import LOOPBACK_FREQUENCY_OFFSET, LOOPBACK_TIMING_OFFSET
from semcom.radio import packet
from semcom.radio.flowgraph import release
from semcom.radio.pdu import from_pdu, pdu_list_source, to_pdu

SPS = 2


class _collector(gr.basic_block):
    def __init__(self):
        gr.basic_block.__init__(self, "collector", None, None)
        self.received = []
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._on_pdu)

    def _on_pdu(self, msg):
        self.received.append(from_pdu(msg))


def run(pdus, mcs, snr_db, header_repetition=packet.HEADER_REPETITION, costas_loop_bw=None, seed=42,
        settle_s=0.6, timeout_s=600.0):
    """Send ``pdus`` (bytes), PDU i on MCS ``mcs[i]`` (names), through one flowgraph; (received
    [(meta, payload)], rx). The channel SNR is Es/N0 (every constellation has unit symbol energy)."""
    tb = gr.top_block()
    if hasattr(packet, "PHY_MODES"):
        source = pdu_list_source([to_pdu(p, {packet.MCS_KEY: m}) for p, m in zip(pdus, mcs)])
        tx = packet.packet_tx(samples_per_symbol=SPS, header_repetition=header_repetition)
        # packet_rx takes its loops' bandwidths from COSTAS_LOOP_BW; the knob overrides the entry of
        # the MCS's modulation while the receiver is built.
        modulation = mcs[0].split("-")[0]
        override = {} if costas_loop_bw is None else {modulation: costas_loop_bw}
        with mock.patch.dict(packet.COSTAS_LOOP_BW, override):
            rx = packet.packet_rx(samples_per_symbol=SPS, header_repetition=header_repetition)
    else:   # the PHY before this branch (PYTHONPATH at its tree): one MCS per flowgraph, as the PER table
        from semcom.radio.mcs import mcs_by_name

        row = mcs_by_name(mcs[0])
        source = pdu_list_source(list(pdus))
        tx = packet.packet_tx(row.modulation, row.fec_code, SPS)
        rx = packet.packet_rx(row.modulation, row.fec_code, SPS)
    channel = channels.channel_model(noise_voltage=packet.noise_voltage_for_snr(snr_db, "qpsk", SPS),
                                     frequency_offset=LOOPBACK_FREQUENCY_OFFSET,
                                     epsilon=LOOPBACK_TIMING_OFFSET, taps=[1.0 + 0j], noise_seed=seed,
                                     block_tags=False)
    sink = _collector()
    tb.msg_connect(source, "out", tx, "in")
    tb.connect(tx, channel, rx)
    tb.msg_connect(rx, "out", sink, "in")
    tb.start()
    started = still_since = time.monotonic()
    last = None
    while time.monotonic() - started < timeout_s and len(sink.received) < len(pdus):
        time.sleep(0.05)
        now = (tx.burst_length.nitems_written(0), rx.correlator.nitems_read(0), len(sink.received))
        if now != last:
            last, still_since = now, time.monotonic()
        elif now[0] > 0 and time.monotonic() - still_since > settle_s:
            break
    tb.stop()
    tb.wait()
    received = list(sink.received)
    counts = dict(headers=rx.headers_detected(), failed_crc=rx.packets_failed_crc(),
                  unknown=rx.unknown_mcs() if hasattr(rx, "unknown_mcs") else 0)
    release(tb, tx, rx)
    return received, counts


def random_pdus(count, lengths, seed):
    """``count`` PDUs per length, interleaved, each unique (a sequence number first), as the PER table's."""
    rng = np.random.default_rng(seed)
    pdus = []
    for _ in range(count):
        for length in lengths:
            pdus.append(len(pdus).to_bytes(4, "big") + rng.integers(0, 256, length - 4, dtype=np.uint8).tobytes())
    return pdus


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("per", "headers"))
    parser.add_argument("--mcs", nargs="+", default=["qpsk-r12"])
    parser.add_argument("--snr", nargs="+", type=float, default=[5.0])
    parser.add_argument("--pdus", type=int, default=200)
    parser.add_argument("--lengths", nargs="+", type=int, default=[64, 1000])
    parser.add_argument("--repetition", nargs="+", type=int, default=[packet.HEADER_REPETITION])
    parser.add_argument("--costas-bw-inverse", nargs="+", type=float, default=[None],
                        help="the loop bandwidth of the MCS's modulation as 2*pi/x: the x values (default: the module's)")
    args = parser.parse_args()
    for name in args.mcs:
        for repetition in args.repetition:
            for inverse in args.costas_bw_inverse:
                bw = None if inverse is None else 2 * math.pi / inverse
                for snr_db in args.snr:
                    pdus = random_pdus(args.pdus, args.lengths, seed=int(10 * snr_db) + 1000)
                    t0 = time.monotonic()
                    received, counts = run(pdus, [name] * len(pdus), snr_db, repetition, bw)
                    arrived = {p for meta, p in received if meta.get(getattr(packet, "MCS_KEY", ""), name) == name}
                    per = {n: 1 - sum(1 for p in pdus if len(p) == n and p in arrived) / args.pdus
                           for n in args.lengths}
                    print(f"{args.what} mcs={name} rep={repetition} costas=2pi/{inverse or 'default'} "
                          f"snr={snr_db:+.1f} pdus/length={args.pdus} "
                          + " ".join(f"per{n}={v:.3f}" for n, v in per.items())
                          + f" header_loss={1 - counts['headers'] / len(pdus):.3f} failed_crc={counts['failed_crc']} "
                          f"unknown={counts['unknown']} t={time.monotonic() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
