"""PDU success of packet_rx against the impairments of real radios, from one run (issue #15).

One set of PDUs (seeded: random contents, 20..1500 bytes) is sent once through the real packet_tx; its
bursts are laid into streams with seeded gaps of noise and pushed through ``channels.channel_model``
(noise, carrier offset, sample-clock offset, multipath taps), phase noise, a gain and the receivers'
AGC into ``packet_rx`` (QPSK, CC r=1/2, 2 samples/symbol); rows marked "coarse CFO search" put
``semcom.radio.acquisition.coarse_frequency_correction`` ahead of it. Every row is the same PDUs; a PDU counts
when it arrives bit-exact. Prints a Markdown table (for the README) and the commit it ran at.

    python benchmarks/rx_impairments.py [--pdus 100] [--seed 15]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine  # noqa: E402

from semcom.radio.impairments import (MULTIPATH_PROFILES, Impairments, gapped_stream, multipath_taps,  # noqa: E402
                                      random_gaps, random_pdus, receive, tx_bursts)

REPO = Path(__file__).resolve().parents[1]
CFO = 2e-4      # cycles/sample: the target condition (20 ppm at 2.4 GHz and 1 MS/s is 0.048)
SFO = 20.0      # ppm


def rows():
    """(gaps, impairments, label) per table row; gaps: 'back-to-back', '2001' or 'random'."""
    yield "back-to-back", Impairments(20), "AWGN 20 dB, bursts back to back (their silent tails only)"
    yield "2001", Impairments(20), "AWGN 20 dB, gaps of 2001 samples (every other burst on an odd sample)"
    yield "random", Impairments(20), "AWGN 20 dB, random gaps"
    yield "random", Impairments(100), "noiseless, random gaps"
    for snr in (20, 10, 6):
        yield "random", Impairments(snr, CFO, SFO), f"{snr} dB, CFO 2e-4, SFO 20 ppm, random gaps"
    for ppm in (50, -50):
        yield "random", Impairments(20, CFO, ppm), f"20 dB, CFO 2e-4, SFO {ppm:+d} ppm"
    for cfo in (5e-4, 1e-3, 1e-2, 5e-2):
        yield "random", Impairments(20, cfo, SFO), f"20 dB, CFO {cfo:g} cycles/sample, SFO 20 ppm"
    for snr, cfo in ((20, 1e-3), (20, 1e-2), (20, 5e-2), (20, -5e-2), (10, 5e-2), (6, 5e-2), (6, CFO)):
        yield "random", Impairments(snr, cfo, SFO, coarse_cfo=True), \
            f"{snr} dB, CFO {cfo:g} cycles/sample, SFO 20 ppm, coarse CFO search"
    for profile in MULTIPATH_PROFILES:
        taps = tuple(multipath_taps(profile))
        yield "random", Impairments(20, CFO, SFO, taps=taps), \
            f"20 dB, CFO/SFO, multipath {profile} ({', '.join(f'{t:.2f}' for t in taps)})"
    for magnitude in (0.01, 0.03):
        yield "random", Impairments(20, CFO, SFO, phase_noise=magnitude), f"20 dB, CFO/SFO, phase noise {magnitude}"
    for level in (-40, -20, 0, 10):
        yield "random", Impairments(20, CFO, SFO, level_dbfs=level, agc=True), f"20 dB, CFO/SFO, {level:+d} dBFS, AGC"
    for level in (-20, 0):
        yield "random", Impairments(20, CFO, SFO, level_dbfs=level), f"20 dB, CFO/SFO, {level:+d} dBFS, no AGC"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdus", type=int, default=100)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    pdus = random_pdus(args.pdus, rng, 20, 1500)
    bursts = tx_bursts(pdus)
    streams = {"back-to-back": gapped_stream(bursts, [0] * len(pdus)),
               "2001": gapped_stream(bursts, [2001] * len(pdus)),
               "random": gapped_stream(bursts, random_gaps(len(pdus), rng))}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"packet_rx, QPSK CC r=1/2, 2 samples/symbol; {len(pdus)} PDUs of 20..1500 bytes (seed {args.seed}); "
          f"random gaps 0..5000 samples of noise; commit {commit}; {machine()}\n")
    print("| impairment | PDUs delivered | headers | CRC failures |")
    print("|---|---|---|---|")
    started = time.monotonic()
    for gaps, imp, label in rows():
        result = receive(streams[gaps], imp)
        print(f"| {label} | {result.delivered(pdus)}/{len(pdus)} | {result.headers_detected} | {result.failed_crc} |",
              flush=True)
    print(f"\n{time.monotonic() - started:.0f} s")
    search, demodulator = cpu_per_sample(streams["random"])
    print(f"\nCPU per input sample (all threads, one run each, the random-gap stream at 20 dB, 0.05 cycles/sample): "
          f"coarse CFO search {search:.0f} ns, packet_rx {demodulator:.0f} ns; the search adds "
          f"{search / demodulator:.2f}x packet_rx's CPU")
    return 0


def cpu_per_sample(stream) -> tuple[float, float]:
    """Process CPU time per input sample of the coarse search alone and of packet_rx alone (channel in both)."""
    from gnuradio import blocks, gr

    from semcom.radio import acquisition, packet
    from semcom.radio.impairments import _channel_blocks

    imp = Impairments(20, 5e-2, SFO)
    results = []
    for make in (acquisition.coarse_frequency_correction, packet.packet_rx):
        tb = gr.top_block()
        chain = [blocks.vector_source_c(stream, False), *_channel_blocks(imp, "qpsk", 2), make()]
        tb.connect(*chain)
        if make is acquisition.coarse_frequency_correction:
            tb.connect(chain[-1], blocks.null_sink(gr.sizeof_gr_complex))
        started = time.process_time()
        tb.run()
        results.append((time.process_time() - started) / len(stream) * 1e9)
    channel_only = gr.top_block()
    channel_only.connect(blocks.vector_source_c(stream, False), *_channel_blocks(imp, "qpsk", 2),
                         blocks.null_sink(gr.sizeof_gr_complex))
    started = time.process_time()
    channel_only.run()
    channel = (time.process_time() - started) / len(stream) * 1e9
    return results[0] - channel, results[1] - channel


if __name__ == "__main__":
    sys.exit(main())
