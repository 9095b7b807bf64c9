"""Can the receive chain keep up with a radio's continuous stream? (1 MS/s and 10 MS/s)

A recording of K images (packet bursts in noise, made with the real TX chain: semantic_tx ->
packet_tx -> bursts_to_stream -> channel model) is played in a loop through a throttle at the target
rate into ``semantic_receiver`` (AGC3 -> packet_rx -> semantic_rx), which hands frames to a
``semcom worker`` in another process. A radio cannot wait: when the chain falls behind the throttle,
a USRP/HackRF would overflow and drop samples. Reported per rate:

- achieved S/s: samples the receiver consumed / wall time
- behind: target samples - consumed samples at the end (what a radio would have dropped), in % of target
- PDUs in the samples consumed, packets OK (CRC passed), headers detected, images decoded by the worker

Then, unthrottled, the maximum rate of the whole chain and of its parts, to say where the time goes.

    python benchmarks/stream_throughput.py [--seconds 10] [--rates 1e6,10e6] [--images 6] [--agc on,off]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from gnuradio import analog, blocks, channels, gr

from semcom.constants import LOOPBACK_FREQUENCY_OFFSET, LOOPBACK_TIMING_OFFSET  # noqa: E402
from semcom.codec.imageio import load_image
from semcom.paths import bundled_photos
from semcom.radio import packet
from semcom.radio.receiver import AGC_ATTACK_RATE, AGC_DECAY_RATE, AGC_REFERENCE, semantic_receiver
from semcom.radio.semantic_tx import semantic_tx
from semcom.radio.stream import bursts_to_stream
from semcom.worker import WorkerClient, WorkerTimeout

REPO = Path(__file__).resolve().parents[1]
SNR_DB = 20.0
CROP_PX = 160


def record(n_images: int, gap_samples: int) -> tuple[np.ndarray, int]:
    """IQ of ``n_images`` (image ids 0..n-1) as packet bursts in noise, with the TX chain; and the PDU count."""
    photos = [load_image(p) for p in bundled_photos()]
    crops = [photos[i % len(photos)][: CROP_PX, (i // len(photos)) * 40:][:, :CROP_PX] for i in range(n_images)]
    tb = gr.top_block()
    tx = semantic_tx()
    modulator = packet.packet_tx("qpsk", "cc", 2, 0.35, 1500)
    to_stream = bursts_to_stream()
    channel = channels.channel_model(packet.noise_voltage_for_snr(SNR_DB, "qpsk", 2), LOOPBACK_FREQUENCY_OFFSET,
                                     LOOPBACK_TIMING_OFFSET, [1.0], 11)
    sink = blocks.vector_sink_c()
    tb.msg_connect((tx, "pdus"), (modulator, "in"))
    tb.connect(modulator, to_stream, blocks.throttle(gr.sizeof_gr_complex, 4e6), channel, sink)
    tb.start()
    for crop in crops:
        tx.send(np.ascontiguousarray(crop))
    tx.idle.wait(120)
    time.sleep(0.5)
    while to_stream.queued_bursts:
        time.sleep(0.05)
    time.sleep(gap_samples / 4e6 + 0.2)
    tb.stop()
    tb.wait()
    return np.asarray(sink.data(), np.complex64), to_stream.bursts_in


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def start_worker(endpoint: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "python"), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-m", "semcom.cli", "worker", "--bind", endpoint, "--threads", "1"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = WorkerClient(endpoint, timeout_s=2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client.ping()
            break
        except WorkerTimeout:
            continue
    client.close()
    return process


def throttled_run(samples: np.ndarray, n_pdus: int, rate: float, seconds: float, endpoint: str, agc: bool) -> dict:
    tb = gr.top_block()
    source = blocks.vector_source_c(samples.tolist(), True)
    throttle = blocks.throttle(gr.sizeof_gr_complex, rate)
    rx = semantic_receiver(endpoint=endpoint, timeout_s=0.5, agc=agc)
    tb.connect(source, throttle, rx)
    tb.connect((rx, 0), blocks.null_sink(gr.sizeof_gr_complex))
    tb.connect((rx, 1), blocks.null_sink(gr.sizeof_gr_complex))
    started = time.monotonic()
    tb.start()
    time.sleep(seconds)
    consumed = throttle.nitems_written(0)
    elapsed = time.monotonic() - started
    stats = rx.stats
    tb.stop()
    tb.wait()
    target = rate * elapsed
    return {"rate": rate, "agc": agc, "elapsed_s": elapsed, "achieved": consumed / elapsed,
            "pdus_on_air": int(consumed // len(samples) * n_pdus + min(n_pdus, n_pdus * (consumed % len(samples)) / len(samples))),
            "behind_pct": max(0.0, 100 * (target - consumed) / target), "stats": stats}


def max_rate(samples: np.ndarray, make, repeat: int) -> float:
    """Unthrottled samples/s through the block(s) ``make()`` returns (first, last)."""
    tb = gr.top_block()
    source = blocks.vector_source_c(samples.tolist(), True)
    head = blocks.head(gr.sizeof_gr_complex, len(samples) * repeat)
    first, last, outputs = make()
    tb.connect(source, head, first)
    for port in range(outputs):
        tb.connect((last, port), blocks.null_sink(gr.sizeof_gr_complex))
    started = time.monotonic()
    tb.run()
    return len(samples) * repeat / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="throttled run length per rate")
    parser.add_argument("--rates", default="1e6,10e6", help="comma-separated sample rates, S/s")
    parser.add_argument("--images", type=int, default=6, help="images in the looped recording")
    parser.add_argument("--agc", default="on,off", help="throttled runs with the receiver's AGC on and/or off "
                        "(the recording is at packet_tx's level, so both are fair; same recording for all)")
    args = parser.parse_args()

    started = time.monotonic()
    samples, n_pdus = record(args.images, gap_samples=20_000)
    bursts = int((np.abs(samples) > 0.5).sum())
    print(f"recording: {len(samples)} samples ({args.images} images, {100 * bursts / len(samples):.0f}% of "
          f"samples in bursts), made in {time.monotonic() - started:.1f} s", file=sys.stderr)
    endpoint = free_endpoint()
    worker = start_worker(endpoint)
    try:
        runs = [throttled_run(samples, n_pdus, float(r), args.seconds, endpoint, agc == "on")
                for r in args.rates.split(",") for agc in args.agc.split(",")]
    finally:
        worker.terminate()
        worker.wait(timeout=20)

    repeat = max(1, int(4e6 // len(samples)))

    def full():
        rx = semantic_receiver(timeout_s=0.5)
        return rx, rx, 2

    def agc_only():
        agc = analog.agc3_cc(AGC_ATTACK_RATE, AGC_DECAY_RATE, AGC_REFERENCE, 1.0, 1)
        return agc, agc, 1

    def packet_rx_only():
        rx = packet.packet_rx("qpsk", "cc", 2, 0.35, 1500)
        return rx, rx, 0

    parts = {"semantic_receiver (all)": full, "AGC3 alone": agc_only, "packet_rx alone": packet_rx_only}
    ceilings = {name: max_rate(samples, make, repeat) for name, make in parts.items()}

    load = os.getloadavg()
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} CPU cores ({platform.processor() or 'unknown CPU'}), "
          f"Python {platform.python_version()}, GNU Radio {gr.version()}, load average {load[0]:.1f} at the end "
          f"(shared machine). QPSK, CC r=1/2, 2 samples/symbol, {SNR_DB:g} dB Es/N0, {args.seconds:g} s per rate; "
          "frames decoded by a `semcom worker` process (1 thread).\n")
    print("| target rate | AGC | achieved S/s | behind (would be dropped) | PDUs on air (approx.) | packets OK | headers | images decoded |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        s = run["stats"]
        print(f"| {run['rate'] / 1e6:g} MS/s | {'on' if run['agc'] else 'off'} | {run['achieved'] / 1e6:.3f} M | {run['behind_pct']:.1f}% | "
              f"{run['pdus_on_air']} | {s['packets_ok']} | {s['headers_detected']} | {s['images_out']} |")
    print("\n| unthrottled (where the time goes) | max S/s |")
    print("|---|---:|")
    for name, rate in ceilings.items():
        print(f"| {name} | {rate / 1e6:.2f} M |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
