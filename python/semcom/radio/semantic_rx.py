"""semantic_rx: semcom PDUs in -> reconstructed images out (file and message)."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

import pmt
from gnuradio import gr

from semcom.codec.frame import FrameAssembler, SemanticFrame
from semcom.codec.imageio import save_png
from semcom.codec.pipeline import PipelineConfig, Reconstruction, SemanticDecoder
from semcom.constants import DEFAULT_MAX_PIXELS
from semcom.radio.pdu import from_pdu, to_pdu
from semcom.radio.semantic_tx import load_config
from semcom.worker import DEFAULT_TIMEOUT_S as DEFAULT_WORKER_TIMEOUT_S
from semcom.worker import WorkerClient, WorkerTimeout

# How often the reassembly timer looks for frames that stopped receiving PDUs.
_TIMER_PERIOD_S = 0.05
_KEPT_RECONSTRUCTIONS = 16
DEFAULT_MAX_QUEUED_FRAMES = 2


class semantic_rx(gr.basic_block):
    """Reassembles PDUs into frames, decodes them and publishes the images.

    A frame is decoded when all its PDUs arrived, or ``timeout_s`` after its last PDU (lost parts are
    generated). Malformed PDUs and frames whose header never came are counted and dropped.
    ``output_path`` may contain ``{image_id}``; empty = no file. Output ``image`` carries
    pmt.cons(report dict, PNG bytes); ``info`` carries the running counters after each image (and
    after each failed decode, with ``error``).

    With ``endpoint`` set (e.g. ``tcp://127.0.0.1:5555``) frames are decoded by a ``semcom worker``;
    no reply within ``worker_timeout_s`` counts as a decode error and a worker timeout; ``worker_keys``
    is the client keys directory for a worker started with ``--keys`` (docs/ota.md). When the
    flowgraph stops (e.g. the end of a recording), frames still open are decoded with what arrived.

    Anyone in radio range can send PDUs, so each is treated as hostile (``FrameAssembler``): a PDU
    longer than the preset's ``pdu_bytes`` is dropped, a header claiming more than ``max_pixels`` is
    dropped with its image (``frames_too_large``). Decoding runs on one thread fed by a queue of at
    most ``max_queued_frames`` frames; when a frame arrives and the queue is full, the OLDEST waiting
    frame is dropped and counted (``frames_dropped_overload``): on a live link the newest image
    matters most, and a burst of forged frames ahead of a genuine one is shed first (one behind it
    pushes it out: nothing tells a well-formed forged frame from a real one). Memory is bounded by the
    assembler's limits, ``max_queued_frames`` waiting frames (their PDU payloads) and one decode of at
    most ``max_pixels`` (about 156 MB at 1920x1080, ``benchmarks/flood.py``).
    """

    def __init__(self, output_path: str = "", config: PipelineConfig | str | None = None,
                 timeout_s: float = 1.0, max_open_frames: int = 8, endpoint: str = "",
                 worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_queued_frames: int = DEFAULT_MAX_QUEUED_FRAMES, worker_keys: str = ""):
        gr.basic_block.__init__(self, name="semantic_rx", in_sig=None, out_sig=None)
        self.log = gr.logger("semcom.semantic_rx")
        self.output_path = output_path
        self.config = load_config(config)
        self.endpoint = endpoint
        self.worker_timeout_s = worker_timeout_s
        self.worker_keys = worker_keys
        if max_queued_frames < 1:
            raise ValueError("max_queued_frames must be >= 1")
        self.max_queued_frames = max_queued_frames
        # Remote: the client is built on the decode thread that uses it (a ZeroMQ socket stays in one thread).
        self.decoder = None if endpoint else SemanticDecoder(self.config)
        self.worker_timeouts = 0
        self.last_error = ""
        self.assembler = FrameAssembler(timeout_s=timeout_s, max_open_frames=max_open_frames,
                                        max_pdu_bytes=self.config.pdu_bytes, max_pixels=max_pixels)
        self.reconstructions: deque[tuple[int, Reconstruction]] = deque(maxlen=_KEPT_RECONSTRUCTIONS)
        self.images_out = 0
        self.decode_errors = 0
        self.frames_dropped_overload = 0
        self.last_pdu_s = 0.0                   # time.monotonic() of the last PDU in
        self.image_ready = threading.Condition()
        self._lock = threading.Lock()          # the assembler is fed by the handler and the timer
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._decode_thread: threading.Thread | None = None
        self._queue: deque[SemanticFrame] = deque()
        self._queue_ready = threading.Condition()
        self._draining = False                  # stop(): finish what is queued, then end the thread
        self.message_port_register_in(pmt.intern("pdus"))
        self.message_port_register_out(pmt.intern("image"))
        self.message_port_register_out(pmt.intern("info"))
        self.set_msg_handler(pmt.intern("pdus"), self._handle_pdu)

    @property
    def stats(self) -> dict:
        s = self.assembler.stats
        return {"pdus_accepted": s.pdus_accepted, "pdus_duplicate": s.pdus_duplicate,
                "pdus_dropped": s.pdus_dropped, "frames_complete": s.frames_complete,
                "frames_partial": s.frames_partial, "frames_without_header": s.frames_without_header,
                "frames_too_large": s.frames_too_large, "frames_dropped_overload": self.frames_dropped_overload,
                "images_out": self.images_out, "decode_errors": self.decode_errors,
                "worker_timeouts": self.worker_timeouts}

    def start(self):
        self._stop.clear()
        self._draining = False
        self._decode_thread = threading.Thread(target=self._decode_loop, name="semantic_rx", daemon=True)
        self._decode_thread.start()
        self._timer = threading.Thread(target=self._expire_loop, name="semantic_rx_timer", daemon=True)
        self._timer.start()
        return True

    def stop(self):
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        # The end of a recording: what arrived of the last frames is still an image, and is not overload.
        with self._lock:
            frames = self.assembler.flush_all()
        with self._queue_ready:
            self._queue.extend(frames)
            self._draining = True
            self._queue_ready.notify_all()
        if self._decode_thread is not None:
            self._decode_thread.join()
            self._decode_thread = None
        if isinstance(self.decoder, WorkerClient):
            self.decoder.close()
            self.decoder = None
        return True

    def push_pdu(self, payload: bytes) -> None:
        """Feed one raw PDU (also used by the message handler)."""
        self.last_pdu_s = time.monotonic()
        with self._lock:
            frames = self.assembler.push(payload)
        self._decode_later(frames)

    def flush(self) -> None:
        """Decode every pending frame now (end of a stream)."""
        with self._lock:
            frames = self.assembler.flush_all()
        self._decode_later(frames)

    def _handle_pdu(self, msg):
        try:
            _meta, payload = from_pdu(msg)
        except ValueError:
            with self._lock:
                self.assembler.stats.pdus_dropped += 1
            return
        self.push_pdu(payload)

    def _expire_loop(self):
        while not self._stop.wait(_TIMER_PERIOD_S):
            with self._lock:
                frames = self.assembler.flush_expired()
            self._decode_later(frames)

    def _decode_later(self, frames: list[SemanticFrame]) -> None:
        if self._decode_thread is None:     # not started (direct use from Python): decode inline
            for frame in frames:
                self._decode_and_publish(frame)
            return
        with self._queue_ready:
            for frame in frames:
                if len(self._queue) >= self.max_queued_frames:
                    dropped = self._queue.popleft()
                    self.frames_dropped_overload += 1
                    self.last_error = f"image {dropped.image_id}: dropped, decode queue full (overload)"
                self._queue.append(frame)
            self._queue_ready.notify()

    def _decode_loop(self) -> None:
        while True:
            with self._queue_ready:
                self._queue_ready.wait_for(lambda: self._queue or self._draining)
                if not self._queue:
                    return
                frame = self._queue.popleft()
            self._decode_and_publish(frame)

    def _decode_and_publish(self, frame: SemanticFrame) -> None:
        try:
            if self.decoder is None:
                self.decoder = WorkerClient(self.endpoint, self.worker_timeout_s, self.config, keys=self.worker_keys)
            recon = self.decoder.decode(frame)
            png = save_png(recon.image)
        except Exception as exc:    # a generator backend failing must not take the flowgraph down
            self.decode_errors += 1
            if isinstance(exc, WorkerTimeout):
                self.worker_timeouts += 1
            self.last_error = f"image {frame.image_id}: decoding failed: {exc}"
            self.log.error(self.last_error)
            self.message_port_pub(pmt.intern("info"), pmt.to_pmt({**self.stats, "error": self.last_error}))
            return
        report = {"image_id": frame.image_id, "width": frame.width, "height": frame.height,
                  "tiles_expected": recon.tiles_expected, "tiles_received": recon.tiles_received,
                  "tiles_corrupt": recon.tiles_corrupt, "text_lost": recon.text_lost,
                  "generated_share": round(recon.generated_share, 4), "description": recon.description}
        if self.output_path:
            path = Path(self.output_path.format(image_id=frame.image_id))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            report["path"] = str(path)
        with self.image_ready:
            self.reconstructions.append((frame.image_id, recon))
            self.images_out += 1
            self.image_ready.notify_all()
        self.message_port_pub(pmt.intern("image"), to_pdu(png, report))
        self.message_port_pub(pmt.intern("info"), pmt.to_pmt(self.stats))

    def wait_for_images(self, count: int, timeout_s: float) -> bool:
        """Block the caller (not the scheduler) until ``count`` images came out; False on timeout."""
        with self.image_ready:
            return self.image_ready.wait_for(lambda: self.images_out >= count, timeout=timeout_s)
