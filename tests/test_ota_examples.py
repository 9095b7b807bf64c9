"""The over-the-air chain without hardware, and TX / RX split across processes with gr-zeromq.

Runs the checked-in grcc scripts as separate processes with their command-line options, like a user
would: ota_tx_file records IQ through a channel model, ota_rx_file decodes the recording; zmq_tx and
zmq_rx exchange samples over tcp://127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from semcom.codec.imageio import load_image
from semcom.codec.pipeline import SemanticEncoder
from semcom.eval.metrics import quality_report
from semcom.paths import data_path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
PHOTO = data_path("photos", "chelsea.png")
# 250 kS/s keeps the recording small; 50 Hz is 2e-4 cycles/sample, the loopback demo's offset.
SAMP_RATE = "250e3"
MIN_KEY_PSNR_DB = 30.0      # every PDU through gives ~38 dB on chelsea; a lost tile pulls it far below


def run_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "python"), os.environ.get("PYTHONPATH")])),
            "QT_QPA_PLATFORM": "offscreen"}


def key_psnr(received: Path) -> float:
    image = load_image(PHOTO)
    key_mask = SemanticEncoder().encode(image).key_mask
    return quality_report(image, load_image(received), key_mask)["key_psnr_db"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> str:
    """Kill one process we started and return what it printed."""
    if process.poll() is None:
        process.kill()
    out, _ = process.communicate(timeout=30)
    return out[-3000:]


@pytest.mark.slow
def test_file_tx_then_file_rx_gets_the_image_back(tmp_path):
    iq = tmp_path / "ota.cf32"
    started = time.monotonic()
    tx = subprocess.run([sys.executable, str(EXAMPLES / "ota_tx_file.py"), "--image", str(PHOTO), "--output-file", str(iq),
                         "--samp-rate", SAMP_RATE, "--duration-s", "4", "--snr-db", "20", "--freq-offset-hz", "50",
                         "--clock-ppm", "100"], env=run_env(), capture_output=True, text=True, timeout=120)
    assert tx.returncode == 0, tx.stdout[-2000:] + tx.stderr[-2000:]
    assert iq.stat().st_size == 4 * 250_000 * 8        # complex64, duration x rate, then the TX stopped
    tx_s = time.monotonic() - started

    rx = subprocess.run([sys.executable, str(EXAMPLES / "ota_rx_file.py"), "--input-file", str(iq),
                         "--output", str(tmp_path / "rx_{image_id}.png")],
                        env=run_env(), capture_output=True, text=True, timeout=120)
    assert rx.returncode == 0, rx.stdout[-2000:] + rx.stderr[-2000:]
    received = tmp_path / "rx_0.png"
    assert received.exists(), rx.stdout[-2000:] + rx.stderr[-2000:]
    psnr = key_psnr(received)
    print(f"file TX {tx_s:.1f} s, RX {time.monotonic() - started - tx_s:.1f} s, key PSNR {psnr:.2f} dB")
    assert psnr > MIN_KEY_PSNR_DB


@pytest.mark.slow
def test_zmq_tx_and_rx_in_separate_processes(tmp_path):
    # Two radios always differ in sample clock (20 ppm is a TCXO's). Without it every burst sits on the
    # sample grid, where the receiver loses 1-3 PDUs in 100 (README, receiver section): a key tile lost
    # that way once took this test below its bound under CI load.
    address = f"tcp://127.0.0.1:{free_port()}"
    output = tmp_path / "zmq_rx_{image_id}.png"
    common = ["--samp-rate", SAMP_RATE, "--modulation", "qpsk", "--fec", "cc"]
    processes = []
    try:
        processes.append(subprocess.Popen(
            [sys.executable, str(EXAMPLES / "zmq_rx.py"), "--address", address, "--output", str(output),
             "--snr-db", "20", "--freq-offset-hz", "50", "--clock-ppm", "20", *common],
            env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True))
        processes.append(subprocess.Popen(
            [sys.executable, str(EXAMPLES / "zmq_tx.py"), "--address", address, "--image", str(PHOTO), *common],
            env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True))
        received = tmp_path / "zmq_rx_0.png"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not received.exists():
            assert all(p.poll() is None for p in processes), "a flowgraph exited early"
            time.sleep(0.2)
        time.sleep(0.5)     # the PNG is written in one call; let it finish
        assert received.exists(), "no image over ZeroMQ within 90 s"
        psnr = key_psnr(received)
        print(f"ZeroMQ key PSNR {psnr:.2f} dB")
        assert psnr > MIN_KEY_PSNR_DB
    finally:
        logs = [stop(p) for p in processes]
    assert all(p.returncode is not None for p in processes), logs
