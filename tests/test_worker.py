"""The inference worker (semcom.worker) and semantic_tx / semantic_rx using it through ``endpoint``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import pytest
import zmq
from gnuradio import blocks, gr

from semcom.codec.frame import SemanticFrame
from semcom.codec.imageio import load_image, save_png
from semcom.codec.pipeline import SemanticDecoder, SemanticEncoder
from semcom.paths import data_path
from semcom.radio.semantic_rx import semantic_rx
from semcom.radio.semantic_tx import semantic_tx
from semcom.worker import (PROTOCOL_VERSION, InferenceWorker, WorkerClient, WorkerError, WorkerLimits,
                           WorkerTimeout, is_loopback_endpoint)

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


def test_non_loopback_bind_needs_curve_keys(tmp_path):
    with pytest.raises(ValueError, match="--keys"):
        InferenceWorker("tcp://0.0.0.0:5555")
    from semcom.cli import main
    assert main(["worker", "--bind", "tcp://*:5555"]) == 2      # refused before binding anything
    server_keys, _ = make_keys(tmp_path)
    InferenceWorker("tcp://0.0.0.0:5555", keys=server_keys)      # with keys it may (not bound here)


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
    # two frames under the 2 MiB limit each, above it together: refused while reading, with a reply
    reply = raw_request(worker_process, [header, b"\0" * (1536 * 1024), b"\0" * (1536 * 1024)])
    assert reply["ok"] is False and "exceeds the limit" in reply["error"]
    reply = raw_request(worker_process, [header] + [b"x"] * 40)
    assert reply["ok"] is False and "frames" in reply["error"]
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
    with running_worker(threads=1, limits=WorkerLimits(max_request_bytes=1000)) as worker:
        client = WorkerClient(worker.bound_endpoint, timeout_s=5)
        with pytest.raises(WorkerError, match="exceeds the limit"):
            client.request("encode", [b"x" * 600, b"y" * 600])      # each frame under the limit, not both
        with pytest.raises(WorkerError, match="not a readable image"):
            client.request("encode", [b"x" * 500])
        stats = worker.stats.as_dict()
        assert (stats["requests"], stats["replies_ok"], stats["rejected"], stats["failed"]) == (2, 0, 1, 1)
        client.close()
    with pytest.raises(WorkerError, match="exceeds the limit"):       # the client refuses what the worker would drop
        WorkerClient(free_endpoint(), max_request_bytes=1000).request("encode", [b"x" * 1500])


# --- hostile peers ---------------------------------------------------------------------------------------
@contextmanager
def running_worker(**kwargs):
    """An InferenceWorker on a free 127.0.0.1 port in a thread of this process (kwargs to its constructor)."""
    worker = InferenceWorker("tcp://127.0.0.1:0", **kwargs)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        assert worker.ready.wait(10)
        yield worker
    finally:
        worker.stop()
        thread.join(10)


def ping_ok(endpoint: str, **client_kwargs) -> bool:
    client = WorkerClient(endpoint, timeout_s=5, **client_kwargs)
    try:
        return client.ping()
    finally:
        client.close()


# The payloads that ended the worker process before it treated every request as hostile.
CRASHING_PAYLOADS = {
    "op is a list": b'{"v":1,"op":[],"id":1}',
    "op is an object": b'{"v":1,"op":{}}',
    "deep nesting": b"[" * 30_000 + b"]" * 30_000,              # RecursionError in json, under MAX_HEADER_BYTES
    "5000-digit id": b'{"v":1,"op":"ping","id":' + b"9" * 5000 + b"}",
}


@pytest.mark.slow
def test_crashing_payloads_get_error_replies_and_the_worker_keeps_serving(worker_process):
    for name, payload in CRASHING_PAYLOADS.items():
        reply = raw_request(worker_process, [payload])
        assert reply["ok"] is False and reply["error"], name
        assert ping_ok(worker_process), f"worker stopped serving after {name}"


def zmtp_connect(port: int) -> socket.socket:
    """A raw TCP peer that does a ZMTP 3.0 NULL handshake as a DEALER: it can then stall mid-frame."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31)
    greeting = b""
    while len(greeting) < 64:
        chunk = sock.recv(64 - len(greeting))
        assert chunk, "worker closed the connection during the greeting"
        greeting += chunk
    ready = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    sock.sendall(b"\x04" + bytes([len(ready)]) + ready)
    return sock


def announce_frame(sock: socket.socket, size: int) -> None:
    """A long message frame header announcing ``size`` bytes (its body is then sent, or not)."""
    sock.sendall(b"\x02" + struct.pack(">Q", size))


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        while sock.recv(1 << 16):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_stalled_connections_hold_little_memory_and_are_dropped_at_the_idle_timeout():
    process = psutil.Process()
    idle_s = 2.0
    with running_worker(threads=1, limits=WorkerLimits(idle_timeout_s=idle_s)) as worker:
        port = int(worker.bound_endpoint.rsplit(":", 1)[1])
        assert ping_ok(worker.bound_endpoint)
        rest = process.memory_info().rss
        # 8 peers announcing 127 MiB frames (under the old 4x hard cap): refused from the length field
        big = [zmtp_connect(port) for _ in range(8)]
        for sock in big:
            announce_frame(sock, 127 * 2**20)
        assert all(closed_by_peer(sock, within_s=idle_s) for sock in big)
        # 8 peers announcing frames under the 32 MiB limit, sending 4 MB of each and stalling
        started = time.monotonic()
        stalled = [zmtp_connect(port) for _ in range(8)]
        for sock in stalled:
            announce_frame(sock, 20 * 2**20)
            sock.sendall(b"\0" * 4_000_000)
        time.sleep(0.3)
        held_mb = (process.memory_info().rss - rest) / 1e6
        print(f"8 stalled peers: {held_mb:.1f} MB held beyond rest, {worker.peers} connections")
        assert held_mb < 100
        assert all(closed_by_peer(sock, within_s=idle_s + 8) for sock in stalled)
        dropped_after_s = time.monotonic() - started
        print(f"dropped after {dropped_after_s:.2f} s (idle timeout {idle_s} s)")
        assert idle_s * 0.5 <= dropped_after_s < idle_s + 8         # margin for a loaded machine
        assert ping_ok(worker.bound_endpoint)
        for sock in big + stalled:
            sock.close()


def test_peers_beyond_max_peers_are_refused():
    with running_worker(threads=1, limits=WorkerLimits(max_peers=2)) as worker:
        clients = [WorkerClient(worker.bound_endpoint, timeout_s=5) for _ in range(3)]
        try:
            assert clients[0].ping() and clients[1].ping()
            with pytest.raises(WorkerError, match="refused this client's handshake"):
                clients[2].ping()
            assert worker.stats.as_dict()["peers_refused"] >= 1
            clients[0].close()
            deadline = time.monotonic() + 5
            while worker.peers > 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert clients[2].ping()                    # a slot came free
        finally:
            for client in clients:
                client.close()


def make_keys(tmp_path: Path) -> tuple[Path, Path]:
    """`semcom keys` for a worker and one client, the client admitted: (worker dir, client dir)."""
    from semcom.cli import main

    server, client = tmp_path / "worker-keys", tmp_path / "radio-keys"
    assert main(["keys", str(server)]) == 0
    assert main(["keys", str(client), "--name", "client"]) == 0
    (server / "clients").mkdir()
    shutil.copy(client / "client.key", server / "clients" / "radio1.key")
    shutil.copy(server / "server.key", client / "server.key")
    return server, client


def test_curve_admits_keyed_clients_and_refuses_others(tmp_path):
    server_keys, client_keys = make_keys(tmp_path)
    stranger = tmp_path / "stranger"
    from semcom.cli import main
    assert main(["keys", str(stranger), "--name", "client"]) == 0
    shutil.copy(server_keys / "server.key", stranger / "server.key")
    with running_worker(threads=1, keys=server_keys) as worker:
        assert ping_ok(worker.bound_endpoint, keys=client_keys)
        with pytest.raises(WorkerError, match="refused"):
            ping_ok(worker.bound_endpoint, keys=stranger)           # a key pair the worker does not know
        with pytest.raises(WorkerTimeout):
            WorkerClient(worker.bound_endpoint, timeout_s=1).ping()  # no CURVE at all: no handshake
        assert worker.stats.as_dict()["peers_refused"] == 1
        assert ping_ok(worker.bound_endpoint, keys=client_keys)


def forged_frame_bytes(width: int, height: int) -> bytes:
    """A tiny frame (header only, no key tiles) claiming a big image: 72 bytes of wire."""
    grid = (-(-height // 64), -(-width // 64))
    return SemanticFrame(1, width, height, 64, 64, 1, 1, np.zeros(grid, bool)).to_bytes()


def test_pixel_budget_time_limit_and_busy():
    photo = save_png(load_image(PHOTO))
    limits = WorkerLimits(max_pixels=512 * 512, job_time_limit_s=30)
    with running_worker(threads=1, limits=limits) as worker:
        client = WorkerClient(worker.bound_endpoint, timeout_s=10)
        started = time.monotonic()
        with pytest.raises(WorkerError, match="exceeds the budget of 262144 pixels"):
            client.request("decode", [forged_frame_bytes(3840, 2160)])
        assert time.monotonic() - started < 2          # refused from the header, not decoded
        # a burst of jobs beyond the queue (1 thread x 4): the rest are answered "busy" at once
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(worker.bound_endpoint)
        for i in range(12):
            sock.send_multipart([json.dumps({"v": 1, "op": "encode", "id": i}).encode(), photo])
        errors = []
        for _ in range(12):
            assert sock.poll(60_000)
            errors.append(json.loads(sock.recv_multipart()[0]).get("error"))
        sock.close()
        assert errors.count("busy") >= 12 - 1 - 4 - 1 and worker.stats.as_dict()["busy"] == errors.count("busy")
        client.close()
    with running_worker(threads=1, limits=WorkerLimits(job_time_limit_s=0.05)) as worker:
        client = WorkerClient(worker.bound_endpoint, timeout_s=30)
        with pytest.raises(WorkerError, match="time limit of 0.05 s"):
            client.request("encode", [photo])
        assert worker.stats.as_dict()["timed_out"] == 1
        assert client.ping()                            # the late result was discarded, the socket still works
        client.close()


def test_bind_and_address_errors_are_one_line(capsys):
    from semcom.cli import main

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    for endpoint, message in [(f"tcp://127.0.0.1:{taken.getsockname()[1]}", "Address already in use"),
                              ("tcp://localhost:5555", "e.g. tcp://127.0.0.1:5555")]:
        assert main(["worker", "--bind", endpoint]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and f"cannot bind {endpoint}" in err, err
    taken.close()
    with pytest.raises(ValueError, match="cannot resolve 'no-such-host.invalid'"):
        WorkerClient("tcp://no-such-host.invalid:5555")
