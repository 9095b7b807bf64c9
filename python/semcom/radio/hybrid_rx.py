"""hybrid_rx: analog_rx frames in (the hybrid mode's protected and key frames) -> reconstructed images out."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

import pmt
from gnuradio import gr

from semcom.codec import jscc
from semcom.codec.imageio import save_png
from semcom.codec.pipeline import PipelineConfig, Reconstruction, SemanticDecoder
from semcom.radio import analog
from semcom.radio.hybrid import decode_received
from semcom.radio.pdu import to_pdu
from semcom.radio.semantic_tx import load_config

_TIMER_PERIOD_S = 0.05
_KEPT_RECONSTRUCTIONS = 16
DEFAULT_MAX_OPEN_IMAGES = 4
# Copies included: 48 key frames (192 tiles) with MAX_COPIES copies and the protected frames fit.
DEFAULT_MAX_FRAMES_PER_IMAGE = 512


class hybrid_rx(gr.basic_block):
    """Collects analog_rx's frames per image and decodes an image ``timeout_s`` after its last frame.

    Input ``frames``: analog_rx's output. The frames of an image (its analog header's 8-bit image id) are
    kept until none arrived for ``timeout_s``; then the protected frames are combined and decoded, the
    header's mask places the DeepJSCC key tiles, and the background is generated
    (``hybrid.decode_received``). Output ``image`` carries pmt.cons(report dict, PNG bytes), as
    semantic_rx's; ``info`` the counters after each image. An image whose header did not arrive is
    counted (``images_without_header``), not drawn. When the flowgraph stops, open images are decoded.

    Anyone in radio range can send frames: a message that is not a symbol PDU is counted
    (``frames_dropped``), and memory is bounded by ``max_open_images`` images (a new one evicts the
    oldest, decoded with what it has: ``images_evicted``) of at most ``max_frames_per_image`` frames
    (more are counted in ``frames_dropped``), each at most ``analog.MAX_FRAME_SYMBOLS`` symbols:
    64 KiB a frame, 128 MiB at the defaults. Decoding runs on the block's timer thread, never on the
    scheduler's.
    """

    def __init__(self, output_path: str = "", config: PipelineConfig | str | None = None, timeout_s: float = 1.0,
                 max_open_images: int = DEFAULT_MAX_OPEN_IMAGES,
                 max_frames_per_image: int = DEFAULT_MAX_FRAMES_PER_IMAGE):
        gr.basic_block.__init__(self, name="hybrid_rx", in_sig=None, out_sig=None)
        if timeout_s <= 0 or max_open_images < 1 or max_frames_per_image < 1:
            raise ValueError("timeout_s > 0, max_open_images >= 1 and max_frames_per_image >= 1")
        self.log = gr.logger("semcom.hybrid_rx")
        self.output_path = output_path
        self.config = load_config(config)
        self.timeout_s = timeout_s
        self.max_open_images = max_open_images
        self.max_frames_per_image = max_frames_per_image
        self.decoder = SemanticDecoder(self.config)
        self._model: jscc.DeepJSCC | None = None
        self._open: OrderedDict[int, tuple[float, list]] = OrderedDict()    # id -> (last frame time, frames)
        self._ready: list[tuple[int, list]] = []                            # evicted, to decode
        self.reconstructions: deque[tuple[int, Reconstruction]] = deque(maxlen=_KEPT_RECONSTRUCTIONS)
        self.counts = {"frames_in": 0, "frames_dropped": 0, "images_out": 0, "images_without_header": 0,
                       "images_evicted": 0, "decode_errors": 0}
        self.last_error = ""
        self.image_ready = threading.Condition()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self.message_port_register_in(pmt.intern("frames"))
        self.message_port_register_out(pmt.intern("image"))
        self.message_port_register_out(pmt.intern("info"))
        self.set_msg_handler(pmt.intern("frames"), self._handle_frame)

    def start(self):
        self._stop.clear()
        self._timer = threading.Thread(target=self._timer_loop, name="hybrid_rx", daemon=True)
        self._timer.start()
        return True

    def stop(self):
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
            self._timer = None
        with self._lock:
            pending = self._ready + [(i, frames) for i, (_, frames) in self._open.items()]
            self._ready, self._open = [], OrderedDict()
        for image_id, frames in pending:
            self._decode_and_publish(image_id, frames)
        return True

    def _handle_frame(self, msg):
        try:
            meta, symbols = analog.symbols_from_pdu(msg)
            image_id = int(meta["image_id"])
            int(meta["frame_index"])
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.counts["frames_dropped"] += 1
            return
        self.push_frame(image_id, symbols, meta)

    def push_frame(self, image_id: int, symbols, meta: dict) -> None:
        """Keep one received frame (also used by the message handler)."""
        with self._lock:
            self.counts["frames_in"] += 1
            if image_id not in self._open and len(self._open) >= self.max_open_images:
                oldest, (_, frames) = self._open.popitem(last=False)
                self._ready.append((oldest, frames))
                self.counts["images_evicted"] += 1
            _, frames = self._open.pop(image_id, (0.0, []))
            if len(frames) < self.max_frames_per_image:
                frames.append((symbols, meta))
            else:
                self.counts["frames_dropped"] += 1
            self._open[image_id] = (time.monotonic(), frames)

    def _timer_loop(self):
        while not self._stop.wait(_TIMER_PERIOD_S):
            now = time.monotonic()
            with self._lock:
                due = self._ready + [(i, f) for i, (t, f) in self._open.items() if now - t >= self.timeout_s]
                self._ready = []
                for image_id, _ in due:
                    self._open.pop(image_id, None)
            for image_id, frames in due:
                self._decode_and_publish(image_id, frames)

    def _decode_and_publish(self, image_id: int, frames: list) -> None:
        try:
            if self._model is None:
                self._model = jscc.load_model()
            recon, counts = decode_received(frames, image_id, self.decoder, self._model)
            if recon is None:
                with self._lock:
                    self.counts["images_without_header"] += 1
                self.message_port_pub(pmt.intern("info"), pmt.to_pmt(dict(self.counts)))
                return
            png = save_png(recon.image)
        except Exception as exc:    # noqa: BLE001  a generator failing must not take the flowgraph down
            with self._lock:
                self.counts["decode_errors"] += 1
            self.last_error = f"image {image_id}: decoding failed: {exc}"
            self.log.error(self.last_error)
            self.message_port_pub(pmt.intern("info"), pmt.to_pmt({**self.counts, "error": self.last_error}))
            return
        report = {"image_id": image_id, "width": recon.image.shape[1], "height": recon.image.shape[0],
                  "tiles_expected": recon.tiles_expected, "tiles_received": recon.tiles_received,
                  "text_lost": recon.text_lost, "generated_share": round(recon.generated_share, 4),
                  "description": recon.description, "frames": len(frames),
                  "protected_failed": counts["protected"]["failed"]}
        if self.output_path:
            path = Path(self.output_path.format(image_id=image_id))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            report["path"] = str(path)
        self.message_port_pub(pmt.intern("image"), to_pdu(png, report))     # before waiters are woken
        with self.image_ready:
            self.reconstructions.append((image_id, recon))
            self.counts["images_out"] += 1
            self.image_ready.notify_all()
        self.message_port_pub(pmt.intern("info"), pmt.to_pmt(dict(self.counts)))

    def wait_for_images(self, count: int, timeout_s: float) -> bool:
        """Block the caller (not the scheduler) until ``count`` images came out; False on timeout."""
        with self.image_ready:
            return self.image_ready.wait_for(lambda: self.counts["images_out"] >= count, timeout=timeout_s)
