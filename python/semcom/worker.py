"""Inference worker over ZeroMQ: SemanticEncoder.encode / SemanticDecoder.decode for remote clients.

A GPU box runs ``semcom worker --bind tcp://127.0.0.1:5555``; radios (``semantic_tx`` /
``semantic_rx`` with ``endpoint`` set) send it their images and frames, so the flowgraph host needs no
model and the GNU Radio scheduler never waits for one.

Protocol (version ``PROTOCOL_VERSION``), one ZeroMQ multipart message each way, no pickle::

    request:  [JSON header {"v": 1, "op": ..., "id": n, ...}, blob, ...]
    reply:    [JSON header {"v": 1, "id": n, "ok": true, ...}, blob, ...]
              [JSON header {"v": 1, "id": n, "ok": false, "error": text}]

    op "ping"    blobs: none                          reply: {"ok": true}
    op "encode"  blobs: image file (PNG/JPEG) [, key mask PNG (non-zero = key)]; header "image_id"
                 reply: {"description": text}, blobs: SemanticFrame.to_bytes()
    op "decode"  blobs: SemanticFrame.to_bytes() (a partial frame is fine)
                 reply: {"report": {...}}, blobs: reconstruction PNG, received-key-mask PNG

Every request is bounded (header bytes, blob count, total bytes) and checked before any decoding;
a malformed or oversized request gets an error reply and is counted. Requests above
``HARD_LIMIT_FACTOR`` x the size limit are dropped by ZeroMQ itself (the peer is disconnected) so
that they are never buffered. The server binds to loopback unless ``allow_remote`` is set: it has no
authentication, so exposing it is a deliberate choice (use an SSH tunnel or a private network).

Server layout: one ROUTER socket owned by the main loop, which validates requests and hands them to
a bounded queue served by ``threads`` worker threads (each with its own encoder and decoder, as
backends are not assumed thread-safe); results come back to the main loop over an inproc PUSH/PULL
pair, since a ZeroMQ socket must stay in one thread. Several clients are served concurrently.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

from semcom.codec.frame import SemanticFrame, WireError
from semcom.codec.imageio import load_image, open_image, save_png
from semcom.codec.pipeline import Encoded, PipelineConfig, Reconstruction, SemanticDecoder, SemanticEncoder

PROTOCOL_VERSION = 1
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_THREADS = 2
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024     # a 4K PNG is well below this
MAX_HEADER_BYTES = 64 * 1024
HARD_LIMIT_FACTOR = 4
DEFAULT_TIMEOUT_S = 30.0
QUEUE_PER_THREAD = 4            # waiting requests per worker thread before "busy" replies
_POLL_MS = 100
OPS = {"ping": (0, 0), "encode": (1, 2), "decode": (1, 1)}     # op -> (min blobs, max blobs)

log = logging.getLogger("semcom.worker")


class WorkerError(RuntimeError):
    """The worker answered with an error, or no answer came in time."""


class WorkerTimeout(WorkerError):
    """No reply within the client's timeout (worker down, overloaded or unreachable)."""


class RequestRejected(ValueError):
    """A request that breaks the protocol or its bounds; the text goes back to the client."""

    def __init__(self, message: str, request_id=None):
        super().__init__(message)
        self.request_id = request_id


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for tcp://127.x.x.x / [::1] / localhost, and for ipc:// and inproc:// (never leave the host)."""
    parsed = urlparse(endpoint)
    if parsed.scheme in ("ipc", "inproc"):
        return True
    if parsed.scheme != "tcp" or not parsed.hostname:
        return False
    if parsed.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parsed.hostname).is_loopback
    except ValueError:
        return False        # an interface name or host name: not provably local


def _header(data: dict) -> bytes:
    return json.dumps({"v": PROTOCOL_VERSION, **data}, separators=(",", ":")).encode()


def _mask_png(mask: np.ndarray) -> bytes:
    return save_png(np.asarray(mask, bool).astype(np.uint8) * 255)


def _mask_from_png(data: bytes, what: str) -> np.ndarray:
    return np.asarray(open_image(data, what=what).convert("L")) > 0


def parse_request(frames: list[bytes], max_request_bytes: int) -> tuple[dict, list[bytes]]:
    """Validate a request's frames -> (header dict, blobs). Raises RequestRejected."""
    if not frames:
        raise RequestRejected("empty request")
    if len(frames[0]) > MAX_HEADER_BYTES:
        raise RequestRejected(f"header of {len(frames[0])} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(frames[0].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestRejected("header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise RequestRejected("header is not a JSON object")
    # Echo the id in error replies so that the client can match them, if it is a plain value.
    request_id = header.get("id") if isinstance(header.get("id"), (int, str)) else None
    total = sum(len(f) for f in frames)
    if total > max_request_bytes:
        raise RequestRejected(f"request of {total} bytes exceeds the limit of {max_request_bytes}", request_id)
    if header.get("v") != PROTOCOL_VERSION:
        raise RequestRejected(f"protocol version {header.get('v')!r} is not supported (this is {PROTOCOL_VERSION})",
                              request_id)
    op = header.get("op")
    if op not in OPS:
        raise RequestRejected(f"unknown op {op!r}; ops: {sorted(OPS)}", request_id)
    blobs = frames[1:]
    low, high = OPS[op]
    if not low <= len(blobs) <= high:
        raise RequestRejected(f"op {op!r} takes {low}..{high} data frames, got {len(blobs)}", request_id)
    image_id = header.get("image_id", 0)
    if op == "encode" and (not isinstance(image_id, int) or isinstance(image_id, bool) or not 0 <= image_id <= 0xFFFF):
        raise RequestRejected("image_id must be an integer 0..65535", request_id)
    return header, blobs


@dataclass
class WorkerStats:
    requests: int = 0
    replies_ok: int = 0
    rejected: int = 0           # malformed / oversized / unknown: refused before any work
    failed: int = 0             # valid requests whose encode/decode raised
    busy: int = 0               # refused because the queue was full
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict:
        with self.lock:
            return {k: getattr(self, k) for k in ("requests", "replies_ok", "rejected", "failed", "busy")}


class InferenceWorker:
    """ROUTER server running the codec for clients. ``run()`` blocks until ``stop()``."""

    def __init__(self, bind: str = DEFAULT_ENDPOINT, config: PipelineConfig | None = None,
                 threads: int = DEFAULT_THREADS, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 allow_remote: bool = False):
        if not allow_remote and not is_loopback_endpoint(bind):
            raise ValueError(f"refusing to bind {bind}: not a loopback address. The worker has no "
                             "authentication; pass allow_remote (CLI: --allow-remote) to expose it deliberately")
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.bind = bind
        self.config = config or PipelineConfig()
        self.threads = threads
        self.max_request_bytes = max_request_bytes
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._jobs: queue.Queue = queue.Queue(maxsize=threads * QUEUE_PER_THREAD)
        self._results_address = f"inproc://semcom-worker-results-{uuid.uuid4().hex}"
        self.ready = threading.Event()
        self.bound_endpoint = ""

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        import zmq

        context = zmq.Context()
        front = context.socket(zmq.ROUTER)
        front.setsockopt(zmq.LINGER, 0)
        front.setsockopt(zmq.MAXMSGSIZE, HARD_LIMIT_FACTOR * self.max_request_bytes)
        results = context.socket(zmq.PULL)
        results.bind(self._results_address)
        threads = [threading.Thread(target=self._serve, args=(context,), name=f"semcom-worker-{i}", daemon=True)
                   for i in range(self.threads)]
        try:
            front.bind(self.bind)
            self.bound_endpoint = front.getsockopt_string(zmq.LAST_ENDPOINT)
            for thread in threads:
                thread.start()
            log.info("semcom worker on %s, %d threads", self.bound_endpoint, self.threads)
            self.ready.set()
            poller = zmq.Poller()
            poller.register(front, zmq.POLLIN)
            poller.register(results, zmq.POLLIN)
            while not self._stop.is_set():
                events = dict(poller.poll(_POLL_MS))
                if results in events:
                    while True:
                        try:
                            front.send_multipart(results.recv_multipart(zmq.NOBLOCK), zmq.NOBLOCK)
                        except zmq.Again:
                            break
                if front in events:
                    while True:
                        try:
                            frames = front.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._accept(front, frames)
        finally:
            self._stop.set()
            for _ in threads:
                try:
                    self._jobs.put_nowait(None)
                except queue.Full:
                    pass
            for thread in threads:
                if thread.is_alive():
                    thread.join(timeout=5)
            front.close()
            results.close()
            context.term()

    def _accept(self, front, frames: list[bytes]) -> None:
        import zmq

        # DEALER clients send [header, blobs...]; REQ clients add an empty delimiter frame.
        split = 2 if len(frames) > 1 and frames[1] == b"" else 1
        envelope, body = frames[:split], frames[split:]
        self.stats.add("requests")
        request_id = None
        try:
            header, blobs = parse_request(body, self.max_request_bytes)
            request_id = header.get("id")
            self._jobs.put_nowait((envelope, header, blobs))
        except RequestRejected as exc:
            request_id = exc.request_id
            self.stats.add("rejected")
            log.warning("rejected request: %s", exc)
            front.send_multipart(envelope + [_header({"id": request_id, "ok": False, "error": str(exc)})], zmq.NOBLOCK)
        except queue.Full:
            self.stats.add("busy")
            front.send_multipart(envelope + [_header({"id": request_id, "ok": False, "error": "busy"})], zmq.NOBLOCK)

    def _serve(self, context) -> None:
        import zmq

        out = context.socket(zmq.PUSH)
        out.setsockopt(zmq.LINGER, 0)
        out.connect(self._results_address)
        encoder: SemanticEncoder | None = None
        decoder: SemanticDecoder | None = None
        try:
            while True:
                job = self._jobs.get()
                if job is None or self._stop.is_set():
                    return
                envelope, header, blobs = job
                reply = {"id": header.get("id"), "ok": True}
                reply_blobs: list[bytes] = []
                try:
                    if header["op"] == "encode":
                        encoder = encoder or SemanticEncoder(self.config)
                        image = load_image(blobs[0])
                        mask = _mask_from_png(blobs[1], "key mask") if len(blobs) > 1 else None
                        encoded = encoder.encode(image, image_id=header.get("image_id", 0), key_mask=mask)
                        reply["description"] = encoded.description
                        reply_blobs = [encoded.frame.to_bytes()]
                    elif header["op"] == "decode":
                        decoder = decoder or SemanticDecoder(self.config)
                        frame = SemanticFrame.from_bytes(blobs[0])
                        recon = decoder.decode(frame)
                        reply["report"] = {"tiles_expected": recon.tiles_expected,
                                           "tiles_received": recon.tiles_received,
                                           "tiles_corrupt": recon.tiles_corrupt,
                                           "text_lost": recon.text_lost, "description": recon.description}
                        reply_blobs = [save_png(recon.image), _mask_png(recon.received_mask)]
                    self.stats.add("replies_ok")
                except (ValueError, WireError) as exc:
                    self.stats.add("failed")
                    reply, reply_blobs = {"id": header.get("id"), "ok": False, "error": str(exc)}, []
                except Exception as exc:    # noqa: BLE001  a backend failure must not kill the thread
                    self.stats.add("failed")
                    log.exception("op %s failed", header["op"])
                    reply, reply_blobs = {"id": header.get("id"), "ok": False, "error": f"{header['op']} failed: {exc!r}"}, []
                out.send_multipart(envelope + [_header(reply)] + reply_blobs)
        finally:
            out.close()


class WorkerClient:
    """Blocking client for one thread (a block's worker thread), with a per-request timeout.

    Uses a DEALER socket: a timeout never leaves the socket stuck as REQ would. After a timeout the
    socket is recreated, which drops the unanswered request so that a worker coming back later does
    not serve stale work; replies to older requests are recognised by id and skipped.
    Exposes ``encode`` / ``decode`` with the signatures of SemanticEncoder / SemanticDecoder.
    """

    def __init__(self, endpoint: str, timeout_s: float = DEFAULT_TIMEOUT_S, config: PipelineConfig | None = None):
        import zmq

        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.config = config or PipelineConfig()
        self._zmq = zmq
        self._context = zmq.Context.instance()
        self._socket = None
        self._ids = itertools.count(1)

    def _connect(self):
        zmq = self._zmq
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        return sock

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def request(self, op: str, blobs: list[bytes] = (), **fields) -> tuple[dict, list[bytes]]:
        """Send one request and wait for its reply; WorkerTimeout / WorkerError on failure."""
        zmq = self._zmq
        if self._socket is None:
            self._socket = self._connect()
        request_id = next(self._ids)
        self._socket.send_multipart([_header({"op": op, "id": request_id, **fields}), *blobs])
        remaining_ms = int(self.timeout_s * 1000)
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        deadline = time.monotonic() + self.timeout_s
        while remaining_ms > 0:
            if poller.poll(remaining_ms):
                frames = self._socket.recv_multipart()
                try:
                    header = json.loads(frames[0])
                except (ValueError, IndexError):
                    raise WorkerError("malformed reply from worker") from None
                if isinstance(header, dict) and header.get("id") == request_id:
                    if not header.get("ok"):
                        raise WorkerError(f"worker: {header.get('error', 'unknown error')}")
                    return header, frames[1:]
            remaining_ms = int((deadline - time.monotonic()) * 1000)
        self.close()        # drop the queued request with the socket
        raise WorkerTimeout(f"no reply from {self.endpoint} within {self.timeout_s:g} s")

    def ping(self) -> bool:
        self.request("ping")
        return True

    def encode(self, image: np.ndarray, image_id: int = 0, key_mask: np.ndarray | None = None) -> Encoded:
        blobs = [save_png(np.ascontiguousarray(image))]
        if key_mask is not None:
            blobs.append(_mask_png(key_mask))
        header, reply = self.request("encode", blobs, image_id=int(image_id))
        if len(reply) != 1:
            raise WorkerError("encode reply without exactly one frame")
        frame = SemanticFrame.from_bytes(reply[0])
        return Encoded(frame, frame.key_mask(), str(header.get("description", "")))

    def decode(self, frame: SemanticFrame, seed: int | None = None) -> Reconstruction:
        header, reply = self.request("decode", [frame.to_bytes()])
        if len(reply) != 2 or not isinstance(header.get("report"), dict):
            raise WorkerError("decode reply without image and mask")
        report = header["report"]
        image = load_image(reply[0])
        received = _mask_from_png(reply[1], "received mask")
        if image.shape[:2] != (frame.height, frame.width) or received.shape != image.shape[:2]:
            raise WorkerError("decode reply has the wrong image size")
        return Reconstruction(image, frame.key_mask(), received, int(report["tiles_expected"]),
                              int(report["tiles_received"]), int(report["tiles_corrupt"]),
                              str(report["description"]), bool(report["text_lost"]))


def cmd_worker(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.allow_remote and not is_loopback_endpoint(args.bind):
        log.warning("binding %s: any host that reaches it can use this worker (no authentication)", args.bind)
    config = PipelineConfig.from_file(args.config) if args.config else PipelineConfig()
    worker = InferenceWorker(args.bind, config, threads=args.threads, max_request_bytes=args.max_request_bytes,
                             allow_remote=args.allow_remote)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    print(json.dumps(worker.stats.as_dict()))
    return 0


def add_worker_parser(commands) -> None:
    """Register ``semcom worker`` on the CLI's subparsers."""
    p = commands.add_parser("worker", help="serve encode/decode to semantic_tx/semantic_rx blocks over ZeroMQ")
    p.add_argument("--bind", default=DEFAULT_ENDPOINT, help=f"ZeroMQ endpoint to bind (default {DEFAULT_ENDPOINT})")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="concurrent encode/decode jobs")
    p.add_argument("--config", help="pipeline preset (JSON/YAML); must match the radios' presets")
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                   help="larger requests get an error reply")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --bind (the worker has no authentication)")
    p.set_defaults(run=cmd_worker)
