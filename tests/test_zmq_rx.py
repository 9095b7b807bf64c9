"""examples/zmq_rx.py at any SNR, noiseless (its default --snr-db 100) included, and its stop on SIGTERM.

Before issue #15 it decoded nothing at its default and then ignored SIGTERM. The TX and RX run as two
processes over tcp://127.0.0.1, as a user runs them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from test_ota_examples import EXAMPLES, PHOTO, SAMP_RATE, free_port, run_env, stop

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("snr_db", ["100", "10"])
def test_zmq_rx_decodes_at_any_snr_and_stops_on_sigterm(tmp_path, snr_db):
    address = f"tcp://127.0.0.1:{free_port()}"
    output = tmp_path / "zmq_rx_{image_id}.png"
    common = ["--samp-rate", SAMP_RATE, "--modulation", "qpsk", "--fec", "cc"]
    rx = subprocess.Popen([sys.executable, str(EXAMPLES / "zmq_rx.py"), "--address", address, "--output", str(output),
                           "--snr-db", snr_db, *common],
                          env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          text=True)
    tx = subprocess.Popen([sys.executable, str(EXAMPLES / "zmq_tx.py"), "--address", address, "--image", str(PHOTO),
                           *common],
                          env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          text=True)
    try:
        received = tmp_path / "zmq_rx_0.png"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not received.exists():
            assert rx.poll() is None and tx.poll() is None, "a flowgraph exited early"
            time.sleep(0.2)
        assert received.exists(), f"no image over ZeroMQ at {snr_db} dB within 90 s"
        time.sleep(0.5)
        rx.send_signal(signal.SIGTERM)
        try:
            code = rx.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("zmq_rx ignored SIGTERM for 20 s")
        assert code == 0
    finally:
        logs = [stop(p) for p in (rx, tx)]
    assert all(p.returncode is not None for p in (rx, tx)), logs
