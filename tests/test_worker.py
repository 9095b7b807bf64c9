"""The inference worker (semcom.worker) and semantic_tx / semantic_rx using it through ``endpoint``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
from gnuradio import blocks, gr

from semcom.codec.imageio import load_image
from semcom.codec.pipeline import SemanticDecoder, SemanticEncoder
from semcom.paths import data_path
from semcom.radio.semantic_rx import semantic_rx
from semcom.radio.semantic_tx import semantic_tx
from semcom.worker import (PROTOCOL_VERSION, InferenceWorker, WorkerClient, WorkerError, WorkerTimeout,
                           is_loopback_endpoint)

REPO = Path(__file__).resolve().parents[1]
PHOTO = str(data_path("photos", "chelsea.png"))


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(scope="module")
def worker_process():
    """`semcom worker` in its own process, with a small request limit to test rejection."""
    endpoint = free_endpoint()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "python"), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-m", "semcom.cli", "worker", "--bind", endpoint, "--threads", "2",
                                "--max-request-bytes", str(2 * 1024 * 1024)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = WorkerClient(endpoint, timeout_s=2.0)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ping()
                break
            except WorkerTimeout:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "worker did not answer a ping within 60 s"
        client.close()
        yield endpoint
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        process.communicate()


def test_loopback_detection():
    assert is_loopback_endpoint("tcp://127.0.0.1:5555")
    assert is_loopback_endpoint("tcp://localhost:5555")
    assert is_loopback_endpoint("tcp://[::1]:5555")
    assert is_loopback_endpoint("ipc:///tmp/semcom")
    assert not is_loopback_endpoint("tcp://0.0.0.0:5555")
    assert not is_loopback_endpoint("tcp://*:5555")
    assert not is_loopback_endpoint("tcp://eth0:5555")


def test_non_loopback_bind_refused_by_default():
    with pytest.raises(ValueError, match="allow_remote"):
        InferenceWorker("tcp://0.0.0.0:5555")
    from semcom.cli import main
    assert main(["worker", "--bind", "tcp://*:5555"]) == 2      # refused before binding anything


@pytest.mark.slow
def test_remote_encode_decode_matches_local(worker_process):
    image = load_image(PHOTO)
    client = WorkerClient(worker_process, timeout_s=60)
    try:
        remote = client.encode(image, image_id=7)
        local = SemanticEncoder().encode(image, image_id=7)
        assert remote.frame.to_bytes() == local.frame.to_bytes()
        assert remote.description == local.description
        recon = client.decode(remote.frame)
        expected = SemanticDecoder().decode(local.frame)
        assert (recon.image == expected.image).all()
        assert recon.tiles_received == expected.tiles_received and recon.generated_share == expected.generated_share
    finally:
        client.close()


def raw_request(endpoint: str, frames: list[bytes]) -> dict:
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        assert sock.poll(20_000), "no reply"
        return json.loads(sock.recv_multipart()[0])
    finally:
        sock.close()


@pytest.mark.slow
def test_oversized_and_malformed_requests_get_error_replies(worker_process):
    header = json.dumps({"v": PROTOCOL_VERSION, "op": "encode", "id": 1}).encode()
    reply = raw_request(worker_process, [header, b"\0" * (3 * 1024 * 1024)])      # above the 2 MiB limit
    assert reply["ok"] is False and "exceeds the limit" in reply["error"]
    for frames, message in [([b"not json"], "JSON"),
                            ([json.dumps({"v": 99, "op": "ping", "id": 2}).encode()], "version"),
                            ([json.dumps({"v": PROTOCOL_VERSION, "op": "pickle", "id": 3}).encode()], "unknown op"),
                            ([json.dumps({"v": PROTOCOL_VERSION, "op": "decode", "id": 4}).encode()], "data frames"),
                            ([json.dumps({"v": PROTOCOL_VERSION, "op": "decode", "id": 5}).encode(), b"garbage"], "frame")]:
        reply = raw_request(worker_process, frames)
        assert reply["ok"] is False and message in reply["error"], (message, reply)
    # still serving after all that
    client = WorkerClient(worker_process, timeout_s=10)
    assert client.ping()
    client.close()


class RemoteLink:
    """semantic_tx -> semantic_rx (no PHY), both using the worker."""

    def __init__(self, endpoint: str, tmp_path: Path, tag: str):
        self.tb = gr.top_block()
        self.tx = semantic_tx(image_path=PHOTO, endpoint=endpoint, worker_timeout_s=120)
        self.rx = semantic_rx(output_path=str(tmp_path / f"{tag}_{{image_id}}.png"), timeout_s=0.5,
                              endpoint=endpoint, worker_timeout_s=120)
        self.tb.msg_connect((self.tx, "pdus"), (self.rx, "pdus"))


@pytest.mark.slow
def test_two_flowgraphs_share_one_worker(worker_process, tmp_path):
    links = [RemoteLink(worker_process, tmp_path, tag) for tag in ("a", "b")]
    for link in links:
        link.tb.start()
    try:
        for link in links:
            assert link.rx.wait_for_images(1, timeout_s=120), (link.tx.last_error, link.rx.stats)
    finally:
        for link in links:
            link.tb.stop()
            link.tb.wait()
    for link in links:
        assert link.tx.errors == 0 and link.rx.decode_errors == 0
        assert link.rx.reconstructions[0][1].tiles_received == link.rx.reconstructions[0][1].tiles_expected
    assert (tmp_path / "a_0.png").exists() and (tmp_path / "b_0.png").exists()


def test_timeout_when_worker_is_down_is_counted_not_a_hang(tmp_path):
    endpoint = free_endpoint()         # nothing listens here
    tb = gr.top_block()
    tx = semantic_tx(image_path=PHOTO, endpoint=endpoint, worker_timeout_s=0.5)
    info = blocks.message_debug()
    sink = blocks.message_debug()
    tb.msg_connect((tx, "info"), (info, "store"))
    tb.msg_connect((tx, "pdus"), (sink, "store"))
    started = time.monotonic()
    tb.start()
    try:
        assert tx.idle.wait(10)
        deadline = time.monotonic() + 5       # the info message travels to its sink asynchronously
        while info.num_messages() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        tb.stop()
        tb.wait()
    assert time.monotonic() - started < 10
    assert tx.errors == 1 and tx.worker_timeouts == 1 and sink.num_messages() == 0
    assert "no reply" in str(info.get_message(0))

    # the receiver: a frame to decode, the worker down -> a counted decode error and worker timeout
    rx = semantic_rx(endpoint=endpoint, worker_timeout_s=0.5)
    for pdu in SemanticEncoder().encode(load_image(PHOTO)).to_pdus():
        rx.push_pdu(pdu)
    assert rx.stats["decode_errors"] == 1 and rx.stats["worker_timeouts"] == 1 and rx.images_out == 0


def test_client_raises_worker_error_for_error_replies():
    endpoint = free_endpoint()
    worker = InferenceWorker(endpoint, threads=1, max_request_bytes=1000)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert worker.ready.wait(10)
        client = WorkerClient(endpoint, timeout_s=5)
        with pytest.raises(WorkerError, match="exceeds the limit"):
            client.request("encode", [b"x" * 1500])       # over the limit, under ZeroMQ's hard cap (4x)
        with pytest.raises(WorkerError, match="not a readable image"):
            client.request("encode", [b"x" * 500])
        assert worker.stats.as_dict() == {"requests": 2, "replies_ok": 0, "rejected": 1, "failed": 1, "busy": 0}
        client.close()
    finally:
        worker.stop()
        thread.join(10)
