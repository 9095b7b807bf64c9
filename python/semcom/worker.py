"""Inference worker over ZeroMQ: SemanticEncoder.encode / SemanticDecoder.decode for remote clients.

A GPU box runs ``semcom worker --bind tcp://127.0.0.1:5555``; radios (``semantic_tx`` /
``semantic_rx`` with ``endpoint`` set) send it their images and frames, so the flowgraph host needs no
model and the GNU Radio scheduler never waits for one.

Protocol (version ``PROTOCOL_VERSION``), one ZeroMQ multipart message each way, no pickle::

    request:  [JSON header {"v": 1, "op": ..., "id": n, ...}, blob, ...]
    reply:    [JSON header {"v": 1, "id": n, "ok": true, ...}, blob, ...]
              [JSON header {"v": 1, "id": n, "ok": false, "error": text}]

    op "ping"    blobs: none                          reply: {"ok": true}   (answered at once, never queued)
    op "encode"  blobs: image file (PNG/JPEG) [, key mask PNG (non-zero = key)]; header "image_id"
                 reply: {"description": text}, blobs: SemanticFrame.to_bytes()
    op "decode"  blobs: SemanticFrame.to_bytes() (a partial frame is fine)
                 reply: {"report": {...}}, blobs: reconstruction PNG, received-key-mask PNG

Every request is treated as hostile. Whatever it holds, it gets one reply (``ok`` or an error) and the
worker keeps serving; nothing a peer sends raises out of the main loop. Limits (``WorkerLimits``):

- per message, enforced while reading: libzmq refuses a frame above ``max_request_bytes`` from its
  length field, before allocating it, and drops that connection (no reply is possible); the worker
  then reads a message frame by frame and stops copying once the header (``MAX_HEADER_BYTES``), the
  frame count (``MAX_REQUEST_FRAMES``) or the total (``max_request_bytes``) is exceeded, answering
  with an error. What libzmq cannot bound: it hands a multipart message over only when its last frame
  arrived, so a peer can make it hold one message of many frames (each below the limit) until then.
  ``--keys`` (CURVE) shuts out every peer without a key; use it on any host you share.
- per peer: a connection that completes no frame for between half and all of ``idle_timeout_s``
  (ZeroMQ heartbeats: only a complete frame counts, so a request frame must arrive within that time;
  raise it for big requests over slow links) or does not finish its handshake in ``idle_timeout_s``
  is dropped; at most ``max_peers`` connections are admitted (the ZAP handler refuses the handshake
  of any beyond).
- per job: ``max_pixels`` (images and frames claiming more are refused before decoding, as are
  images below the codec's minimum), and ``job_time_limit_s`` from acceptance to reply: a job still
  running then is answered with an error and its late result discarded (a Python thread cannot be
  interrupted, so the thread stays busy until the job ends; ``max_pixels`` bounds how long that is).
- queue: ``threads`` x ``QUEUE_PER_THREAD`` waiting jobs; beyond that the reply is ``busy``.

Authentication: binding anything but loopback requires CURVE (``--keys DIR``, made with ``semcom
keys``): ``DIR/server.key_secret`` is the worker's key pair and ``DIR/clients/*.key`` the public keys
of the clients it admits; a client (``keys=`` directory holding ``server.key``, the worker's public
key, and its own ``client.key_secret``) without an admitted key fails the handshake and never reaches
the protocol. See docs/ota.md.

Server layout: one ROUTER socket owned by the main loop, which reads and checks requests, answers
pings, runs the ZAP handler and the connection monitor, enforces job deadlines, and hands jobs to a
bounded queue served by ``threads`` worker threads (each with its own encoder and decoder, as backends
are not assumed thread-safe); results come back to the main loop over an inproc PUSH/PULL pair, since a
ZeroMQ socket must stay in one thread. Several clients are served concurrently.
"""

from __future__ import annotations

import errno
import io
import ipaddress
import itertools
import json
import logging
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import zmq
import zmq.auth
from zmq.auth.base import Authenticator
from zmq.utils.monitor import recv_monitor_message

from semcom.codec.frame import SemanticFrame
from semcom.codec.imageio import load_image, open_image, save_png
from semcom.codec.pipeline import Encoded, PipelineConfig, Reconstruction, SemanticDecoder, SemanticEncoder
from semcom.constants import DEFAULT_MAX_PIXELS

PROTOCOL_VERSION = 1
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_THREADS = 2
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024     # a 4K PNG is well below this
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_IDLE_TIMEOUT_S = 30.0
DEFAULT_MAX_PEERS = 32
DEFAULT_JOB_TIME_LIMIT_S = 60.0
QUEUE_PER_THREAD = 4            # waiting requests per worker thread before "busy" replies
REPLY_QUEUE_PER_PEER = 8        # replies ZeroMQ holds for a peer that does not read them (then dropped)
_POLL_MS = 100
OPS = {"ping": (0, 0), "encode": (1, 2), "decode": (1, 1)}     # op -> (min blobs, max blobs)
MAX_REQUEST_FRAMES = 1 + max(high for _, high in OPS.values())  # header + blobs (a REQ delimiter is extra)
SERVER_KEY_NAME, CLIENT_KEY_NAME, AUTHORIZED_CLIENTS_DIR = "server", "client", "clients"
ZAP_DOMAIN = b"semcom"

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


@dataclass
class WorkerLimits:
    """What one peer, one message and one job may cost the worker (see the module docstring)."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_peers: int = DEFAULT_MAX_PEERS
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    job_time_limit_s: float = DEFAULT_JOB_TIME_LIMIT_S

    def __post_init__(self):
        for name in ("max_request_bytes", "max_pixels", "max_peers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.idle_timeout_s <= 0 or self.job_time_limit_s <= 0:
            raise ValueError("idle_timeout_s and job_time_limit_s must be > 0")


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


def _error_reply(request_id, text: str) -> bytes:
    return _header({"id": request_id, "ok": False, "error": text})


def _mask_png(mask: np.ndarray) -> bytes:
    return save_png(np.asarray(mask, bool).astype(np.uint8) * 255)


def _mask_from_png(data: bytes, what: str) -> np.ndarray:
    return np.asarray(open_image(data, what=what).convert("L")) > 0


def _plain_id(value):
    """The request id, echoed in replies, if it is a short plain value (else None)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    if isinstance(value, str) and len(value) > 64 or isinstance(value, int) and abs(value) >= 2**63:
        return None
    return value


def parse_request(frames: list[bytes], max_request_bytes: int) -> tuple[dict, list[bytes]]:
    """Validate a request's frames -> (header dict, blobs). Raises RequestRejected for anything else."""
    if not frames:
        raise RequestRejected("empty request")
    if len(frames) > MAX_REQUEST_FRAMES:
        raise RequestRejected(f"request of {len(frames)} frames exceeds {MAX_REQUEST_FRAMES}")
    if len(frames[0]) > MAX_HEADER_BYTES:
        raise RequestRejected(f"header of {len(frames[0])} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(frames[0].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):     # ValueError: bad JSON, an int of >4300 digits
        raise RequestRejected("header is not UTF-8 JSON (or nests too deeply)") from None
    if not isinstance(header, dict):
        raise RequestRejected("header is not a JSON object")
    request_id = _plain_id(header.get("id"))
    total = sum(len(f) for f in frames)
    if total > max_request_bytes:
        raise RequestRejected(f"request of {total} bytes exceeds the limit of {max_request_bytes}", request_id)
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise RequestRejected(f"protocol version {str(version)[:20]!r} is not supported (this is {PROTOCOL_VERSION})",
                              request_id)
    op = header.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise RequestRejected(f"unknown op {str(op)[:40]!r}; ops: {sorted(OPS)}", request_id)
    blobs = frames[1:]
    low, high = OPS[op]
    if not low <= len(blobs) <= high:
        raise RequestRejected(f"op {op!r} takes {low}..{high} data frames, got {len(blobs)}", request_id)
    image_id = header.get("image_id", 0)
    if op == "encode" and (type(image_id) is not int or not 0 <= image_id <= 0xFFFF):
        raise RequestRejected("image_id must be an integer 0..65535", request_id)
    return header, blobs


def check_pixel_budget(width: int, height: int, max_pixels: int, what: str) -> None:
    """Refuse an image or frame above the configured budget before decoding it."""
    if width * height > max_pixels:
        raise ValueError(f"{what} of {width}x{height} pixels exceeds the budget of {max_pixels} pixels (--max-pixels)")


@dataclass
class WorkerStats:
    requests: int = 0
    replies_ok: int = 0
    rejected: int = 0           # malformed / oversized / unknown: refused before any work
    failed: int = 0             # valid requests whose encode/decode raised (bad image, over the pixel budget)
    busy: int = 0               # refused because the queue was full
    timed_out: int = 0          # answered with an error at the job time limit; the late result is discarded
    peers_refused: int = 0      # handshakes refused: over max_peers or (CURVE) an unknown key
    replies_dropped: int = 0    # a peer that does not read its replies: ZeroMQ's queue for it was full
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    _FIELDS = ("requests", "replies_ok", "rejected", "failed", "busy", "timed_out", "peers_refused",
               "replies_dropped")

    def add(self, name: str) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict:
        with self.lock:
            return {k: getattr(self, k) for k in self._FIELDS}


# --- CURVE keys ------------------------------------------------------------------------------------------
def make_key_pair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``DIR/NAME.key`` (public, to hand out) and ``DIR/NAME.key_secret`` (keep private)."""
    directory = Path(directory)
    secret = directory / f"{name}.key_secret"
    if secret.exists():
        raise ValueError(f"{secret} exists; refusing to overwrite a key pair")
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(directory, name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


def _load_key(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise ValueError(f"{path}: no such key file (make one with `semcom keys`)")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a ZeroMQ key file ({exc})") from None
    if secret and not secret_key:
        raise ValueError(f"{path}: holds no secret key")
    return public, secret_key


def _server_keys(keys_dir: str | Path) -> tuple[bytes, bytes, Path]:
    """(public, secret, authorized-clients dir) of a worker's ``--keys DIR``."""
    keys_dir = Path(keys_dir)
    public, secret = _load_key(keys_dir / f"{SERVER_KEY_NAME}.key_secret", secret=True)
    clients = keys_dir / AUTHORIZED_CLIENTS_DIR
    if not clients.is_dir() or not any(clients.glob("*.key")):
        raise ValueError(f"no client keys in {clients}: copy each client's {CLIENT_KEY_NAME}.key there "
                         "(under any name ending in .key)")
    return public, secret, clients


def _client_keys(keys_dir: str | Path) -> tuple[bytes, bytes, bytes]:
    """(client public, client secret, server public) of a client's keys directory."""
    keys_dir = Path(keys_dir)
    public, secret = _load_key(keys_dir / f"{CLIENT_KEY_NAME}.key_secret", secret=True)
    server_public, _ = _load_key(keys_dir / f"{SERVER_KEY_NAME}.key", secret=False)
    return public, secret, server_public


def _zmq_error_text(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass
class _Job:
    envelope: list[bytes]
    request_id: object
    deadline_s: float


class InferenceWorker:
    """ROUTER server running the codec for clients. ``run()`` blocks until ``stop()``."""

    def __init__(self, bind: str = DEFAULT_ENDPOINT, config: PipelineConfig | None = None,
                 threads: int = DEFAULT_THREADS, limits: WorkerLimits | None = None, keys: str | Path = ""):
        if not keys and not is_loopback_endpoint(bind):
            raise ValueError(f"refusing to bind {bind}: not a loopback address, and no --keys DIR given. "
                             "Any host could use the worker; make CURVE keys with `semcom keys` (docs/ota.md)")
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.bind = bind
        self.config = config or PipelineConfig()
        self.threads = threads
        self.limits = limits or WorkerLimits()
        self.curve = _server_keys(keys) if keys else None
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._jobs: queue.Queue = queue.Queue(maxsize=threads * QUEUE_PER_THREAD)
        self._running: dict[int, _Job] = {}        # job number -> where its reply goes; main loop only
        self._job_numbers = itertools.count()
        self._connections: set[int] = set()        # file descriptors of accepted connections
        self._results_address = f"inproc://semcom-worker-results-{uuid.uuid4().hex}"
        self.ready = threading.Event()
        self.bound_endpoint = ""

    @property
    def max_request_bytes(self) -> int:
        return self.limits.max_request_bytes

    def stop(self) -> None:
        self._stop.set()

    def _front_socket(self, context):
        front = context.socket(zmq.ROUTER)
        idle_ms = int(self.limits.idle_timeout_s * 1000)
        front.setsockopt(zmq.LINGER, 0)
        front.setsockopt(zmq.MAXMSGSIZE, self.limits.max_request_bytes)      # per frame, checked before allocation
        front.setsockopt(zmq.RCVHWM, 2)                                       # complete messages waiting per peer
        front.setsockopt(zmq.SNDHWM, REPLY_QUEUE_PER_PEER)
        # A peer that stalls (mid-frame or silent) answers no PING: dropped idle_timeout_s after its last frame.
        front.setsockopt(zmq.HEARTBEAT_IVL, max(1, idle_ms // 2))
        front.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(1, idle_ms // 2))
        front.setsockopt(zmq.HANDSHAKE_IVL, max(1, idle_ms))
        front.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)    # every handshake, NULL too, goes through the ZAP handler
        if self.curve:
            public, secret, _ = self.curve
            front.curve_server = True
            front.curve_publickey, front.curve_secretkey = public, secret
        return front

    def run(self, context: zmq.Context | None = None) -> None:
        """Serve until ``stop()``. ``context``: share the caller's (for an inproc:// bind), else a private one."""
        own_context = context is None
        context = context or zmq.Context()
        auth = _PeerGate(self, context)
        auth.start()
        if self.curve:
            auth.configure_curve(domain=ZAP_DOMAIN.decode(), location=str(self.curve[2]))
        front = self._front_socket(context)
        monitor = front.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        results = context.socket(zmq.PULL)
        results.bind(self._results_address)
        threads = [threading.Thread(target=self._serve, args=(context,), name=f"semcom-worker-{i}", daemon=True)
                   for i in range(self.threads)]
        try:
            try:
                front.bind(self.bind)
            except zmq.ZMQError as exc:
                hint = " (bind takes an IP address or interface, e.g. tcp://127.0.0.1:5555)" \
                    if exc.errno == errno.ENODEV else ""
                raise ValueError(f"cannot bind {self.bind}: {_zmq_error_text(exc)}{hint}") from None
            self.bound_endpoint = front.getsockopt_string(zmq.LAST_ENDPOINT)
            for thread in threads:
                thread.start()
            log.info("semcom worker on %s, %d threads, %s", self.bound_endpoint, self.threads,
                     "CURVE" if self.curve else "no authentication (loopback)")
            self.ready.set()
            poller = zmq.Poller()
            for sock in (front, results, monitor, auth.zap_socket):
                poller.register(sock, zmq.POLLIN)
            while not self._stop.is_set():
                events = dict(poller.poll(_POLL_MS))
                # Connection events before ZAP requests, so that the peer count includes the newcomer.
                while monitor in events and monitor.poll(0):
                    event = recv_monitor_message(monitor)
                    if event["event"] == zmq.EVENT_ACCEPTED:
                        self._connections.add(event["value"])
                    else:
                        self._connections.discard(event["value"])
                while auth.zap_socket.poll(0):
                    auth.handle_zap_message(auth.zap_socket.recv_multipart())
                while results.poll(0):
                    self._reply_result(front, results.recv_multipart())
                while front.poll(0):
                    self._accept(front)
                self._expire_jobs(front)
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
            front.disable_monitor()
            for sock in (monitor, front, results):
                sock.close(linger=0)
            auth.stop()
            if own_context:
                context.term()

    @property
    def peers(self) -> int:
        """Connections accepted and not yet closed (those still in their handshake included)."""
        return len(self._connections)

    def _send(self, front, frames: list[bytes]) -> None:
        try:
            front.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError:        # the peer's reply queue is full (it does not read) or it is gone
            self.stats.add("replies_dropped")

    def _read_message(self, front) -> tuple[list[bytes], list[bytes], str]:
        """Receive one message frame by frame -> (envelope, body, error). Frames past a limit are not kept."""
        envelope = [front.recv(zmq.NOBLOCK)]         # the ROUTER's peer identity
        body: list[bytes] = []
        total, count, error = 0, 0, ""
        while front.getsockopt(zmq.RCVMORE):
            frame = front.recv(copy=False)
            if error:
                continue                            # drained and released, never copied
            size = len(frame.buffer)
            if count == 0 and not body and size == 0 and len(envelope) == 1:
                envelope.append(b"")                # REQ clients put an empty delimiter first
                continue
            count += 1
            total += size
            if count == 1 and size > MAX_HEADER_BYTES:
                error = f"header of {size} bytes exceeds {MAX_HEADER_BYTES}"
            elif count > MAX_REQUEST_FRAMES:
                error = f"request of more than {MAX_REQUEST_FRAMES} frames"
            elif total > self.limits.max_request_bytes:
                error = f"request of more than {self.limits.max_request_bytes} bytes exceeds the limit"
            else:
                body.append(frame.bytes)
        return envelope, body, error

    def _accept(self, front) -> None:
        envelope, body, error = self._read_message(front)
        self.stats.add("requests")
        request_id = None
        try:
            if error:
                raise RequestRejected(error, _plain_id(_peek_id(body)))
            header, blobs = parse_request(body, self.limits.max_request_bytes)
            request_id = _plain_id(header.get("id"))
            if header["op"] == "ping":
                self.stats.add("replies_ok")
                self._send(front, envelope + [_header({"id": request_id, "ok": True})])
                return
            number = next(self._job_numbers)
            deadline_s = time.monotonic() + self.limits.job_time_limit_s
            self._jobs.put_nowait((number, deadline_s, header, blobs))
            self._running[number] = _Job(envelope, request_id, deadline_s)
        except RequestRejected as exc:
            self.stats.add("rejected")
            log.warning("rejected request: %s", exc)
            self._send(front, envelope + [_error_reply(exc.request_id, str(exc))])
        except queue.Full:
            self.stats.add("busy")
            self._send(front, envelope + [_error_reply(request_id, "busy")])
        except Exception as exc:    # noqa: BLE001  nothing a peer sends may end the main loop
            self.stats.add("rejected")
            log.exception("request handling failed")
            self._send(front, envelope + [_error_reply(request_id, f"request failed: {type(exc).__name__}")])

    def _reply_result(self, front, message: list[bytes]) -> None:
        number = int(message[0])
        job = self._running.pop(number, None)
        if job is not None:         # None: already answered at the time limit
            self._send(front, job.envelope + message[1:])

    def _expire_jobs(self, front) -> None:
        now = time.monotonic()
        for number in [n for n, job in self._running.items() if job.deadline_s <= now]:
            job = self._running.pop(number)
            self.stats.add("timed_out")
            self._send(front, job.envelope + [_error_reply(
                job.request_id, f"job exceeded the time limit of {self.limits.job_time_limit_s:g} s")])

    def _serve(self, context) -> None:
        out = context.socket(zmq.PUSH)
        out.setsockopt(zmq.LINGER, 0)
        out.connect(self._results_address)
        runner = _JobRunner(self.config, self.limits.max_pixels)
        try:
            while True:
                job = self._jobs.get()
                if job is None or self._stop.is_set():
                    return
                number, deadline_s, header, blobs = job
                if time.monotonic() >= deadline_s:
                    continue                # waited past its time limit: already answered by the main loop
                request_id = _plain_id(header.get("id"))
                try:
                    reply, reply_blobs = runner.run(header, blobs)
                    reply = {"id": request_id, "ok": True, **reply}
                    self.stats.add("replies_ok")
                except ValueError as exc:          # WireError is one: bad input, named
                    self.stats.add("failed")
                    reply, reply_blobs = {"id": request_id, "ok": False, "error": str(exc)}, []
                except Exception as exc:    # noqa: BLE001  a backend failure must not kill the thread
                    self.stats.add("failed")
                    log.exception("op %s failed", header["op"])
                    reply, reply_blobs = {"id": request_id, "ok": False, "error": f"{header['op']} failed: {exc!r}"}, []
                out.send_multipart([str(number).encode(), _header(reply)] + reply_blobs)
        finally:
            out.close()


def _peek_id(body: list[bytes]):
    """The id of a request refused while reading, if its header is small JSON (for the error reply)."""
    if not body or len(body[0]) > MAX_HEADER_BYTES:
        return None
    try:
        header = json.loads(body[0])
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return header.get("id") if isinstance(header, dict) else None


class _JobRunner:
    """One thread's encoder and decoder (built on first use), with the pixel budget."""

    def __init__(self, config: PipelineConfig, max_pixels: int):
        self.config = config
        self.max_pixels = max_pixels
        self.encoder: SemanticEncoder | None = None
        self.decoder: SemanticDecoder | None = None

    def run(self, header: dict, blobs: list[bytes]) -> tuple[dict, list[bytes]]:
        if header["op"] == "encode":
            check_pixel_budget(*_image_size(blobs[0]), self.max_pixels, "image")
            image = load_image(blobs[0])
            mask = _mask_from_png(blobs[1], "key mask") if len(blobs) > 1 else None
            self.encoder = self.encoder or SemanticEncoder(self.config)
            encoded = self.encoder.encode(image, image_id=header.get("image_id", 0), key_mask=mask)
            return {"description": encoded.description}, [encoded.frame.to_bytes()]
        frame = SemanticFrame.from_bytes(blobs[0])
        check_pixel_budget(frame.width, frame.height, self.max_pixels, "frame")
        self.decoder = self.decoder or SemanticDecoder(self.config)
        recon = self.decoder.decode(frame)
        report = {"tiles_expected": recon.tiles_expected, "tiles_received": recon.tiles_received,
                  "tiles_corrupt": recon.tiles_corrupt, "text_lost": recon.text_lost,
                  "description": recon.description}
        return {"report": report}, [save_png(recon.image), _mask_png(recon.received_mask)]


def _image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an image file's header, without decoding its pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise ValueError("image bytes: not a readable image") from None


class _PeerGate(Authenticator):
    """zmq.auth's ZAP handler (CURVE keys) that also refuses handshakes beyond ``max_peers``; counts refusals."""

    def __init__(self, worker: InferenceWorker, context):
        super().__init__(context, log=logging.getLogger("semcom.worker.auth"))
        self.worker = worker

    def handle_zap_message(self, msg: list[bytes]) -> None:
        if len(msg) >= 2 and self.worker.peers > self.worker.limits.max_peers:
            self._send_zap_reply(msg[1], b"400", b"too many peers")
            return
        super().handle_zap_message(msg)

    def _send_zap_reply(self, request_id, status_code, status_text, user_id="anonymous"):
        if status_code != b"200":
            self.worker.stats.add("peers_refused")
            log.warning("refused a peer: %s", status_text.decode(errors="replace"))
        super()._send_zap_reply(request_id, status_code, status_text, user_id)


def _check_connect_endpoint(endpoint: str) -> None:
    """One-line errors for an endpoint a client cannot use (ZeroMQ would retry it silently forever)."""
    parsed = urlparse(endpoint)
    if parsed.scheme != "tcp":
        return
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or port is None:
        raise ValueError(f"worker endpoint {endpoint!r} is not tcp://HOST:PORT")
    try:
        socket.getaddrinfo(parsed.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"worker endpoint {endpoint}: cannot resolve {parsed.hostname!r} ({exc.strerror})") from None


class WorkerClient:
    """Blocking client for one thread (a block's worker thread), with a per-request timeout.

    Uses a DEALER socket: a timeout never leaves the socket stuck as REQ would. After a timeout the
    socket is recreated, which drops the unanswered request so that a worker coming back later does
    not serve stale work; replies to older requests are recognised by id and skipped.
    ``keys``: a directory with the worker's public key (``server.key``) and this client's key pair
    (``client.key_secret``), for a worker started with ``--keys``. Requests above ``max_request_bytes``
    (the worker's limit) are refused here, as the worker would drop the connection without a reply.
    Exposes ``encode`` / ``decode`` with the signatures of SemanticEncoder / SemanticDecoder.
    """

    def __init__(self, endpoint: str, timeout_s: float = DEFAULT_TIMEOUT_S, config: PipelineConfig | None = None,
                 keys: str | Path = "", max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        _check_connect_endpoint(endpoint)
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.config = config or PipelineConfig()
        self.max_request_bytes = max_request_bytes
        self.curve = _client_keys(keys) if keys else None
        self._context = zmq.Context.instance()
        self._socket = None
        self._monitor = None         # handshake failures: a refused key or peer fails fast, not by timeout
        self._ids = itertools.count(1)

    def _connect(self):
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self.curve:
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = self.curve
        self._monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        try:
            sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            self._socket = sock
            self.close()
            raise ValueError(f"worker endpoint {self.endpoint}: {_zmq_error_text(exc)}") from None
        return sock

    def close(self) -> None:
        if self._socket is not None:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._socket.close(linger=0)
            self._socket = self._monitor = None

    def request(self, op: str, blobs: list[bytes] = (), **fields) -> tuple[dict, list[bytes]]:
        """Send one request and wait for its reply; WorkerTimeout / WorkerError on failure."""
        size = sum(len(b) for b in blobs)
        if size > self.max_request_bytes:
            raise WorkerError(f"request of {size} bytes exceeds the limit of {self.max_request_bytes}")
        if self._socket is None:
            self._socket = self._connect()
        request_id = next(self._ids)
        self._socket.send_multipart([_header({"op": op, "id": request_id, **fields}), *blobs])
        remaining_ms = int(self.timeout_s * 1000)
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        deadline = time.monotonic() + self.timeout_s
        while remaining_ms > 0:
            events = dict(poller.poll(remaining_ms))
            if self._monitor in events:
                recv_monitor_message(self._monitor)
                self.close()
                raise WorkerError(f"{self.endpoint} refused this client's handshake (with --keys: is this "
                                  "client's key in the worker's clients/ directory? else: too many peers)")
            if self._socket in events:
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
    config = PipelineConfig.from_file(args.config) if args.config else PipelineConfig()
    limits = WorkerLimits(max_request_bytes=args.max_request_bytes, max_pixels=args.max_pixels,
                          max_peers=args.max_peers, idle_timeout_s=args.idle_timeout_s,
                          job_time_limit_s=args.job_time_limit_s)
    worker = InferenceWorker(args.bind, config, threads=args.threads, limits=limits, keys=args.keys or "")
    import signal

    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        worker.run()
    except KeyboardInterrupt:
        pass
    print(json.dumps(worker.stats.as_dict()))
    return 0


def cmd_keys(args) -> int:
    public, secret = make_key_pair(args.dir, args.name)
    print(f"wrote {public} (public: hand it out) and {secret} (secret: keep it on this host)")
    return 0


def add_worker_parser(commands) -> None:
    """Register ``semcom worker`` and ``semcom keys`` on the CLI's subparsers."""
    p = commands.add_parser("worker", help="serve encode/decode to semantic_tx/semantic_rx blocks over ZeroMQ")
    p.add_argument("--bind", default=DEFAULT_ENDPOINT, help=f"ZeroMQ endpoint to bind (default {DEFAULT_ENDPOINT})")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="concurrent encode/decode jobs")
    p.add_argument("--config", help="pipeline preset (JSON/YAML); must match the radios' presets")
    p.add_argument("--keys", help=f"CURVE keys directory ({SERVER_KEY_NAME}.key_secret and {AUTHORIZED_CLIENTS_DIR}/"
                   "*.key, see `semcom keys`); required to bind a non-loopback address")
    p.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                   help="per request (all frames); a larger frame drops the connection, a larger total gets an error")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"largest image or frame a job may take (default {DEFAULT_MAX_PIXELS})")
    p.add_argument("--max-peers", type=int, default=DEFAULT_MAX_PEERS, help="concurrent connections admitted")
    p.add_argument("--idle-timeout-s", type=float, default=DEFAULT_IDLE_TIMEOUT_S,
                   help="drop a connection that delivers no complete frame for this long")
    p.add_argument("--job-time-limit-s", type=float, default=DEFAULT_JOB_TIME_LIMIT_S,
                   help="answer a job with an error if it has not finished this long after it arrived")
    p.set_defaults(run=cmd_worker)
    k = commands.add_parser("keys", help="make a CURVE key pair for `semcom worker --keys` and its clients")
    k.add_argument("dir", help="directory to write NAME.key and NAME.key_secret into")
    k.add_argument("--name", default=SERVER_KEY_NAME,
                   help=f"{SERVER_KEY_NAME!r} for a worker (default), {CLIENT_KEY_NAME!r} for a client")
    k.set_defaults(run=cmd_keys)
