"""semantic_tx: image in (file path or message) -> semcom PDUs out."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pmt
from gnuradio import gr

from semcom.codec import registry
from semcom.codec.imageio import load_image
from semcom.codec.pipeline import Encoded, PipelineConfig, SemanticEncoder
from semcom.radio.pdu import from_pdu, to_pdu
from semcom.worker import DEFAULT_TIMEOUT_S as DEFAULT_WORKER_TIMEOUT_S
from semcom.worker import WorkerClient, WorkerError, WorkerTimeout


def load_config(config: PipelineConfig | str | Path | None) -> PipelineConfig:
    """A PipelineConfig from an object, a JSON/YAML file path, or '' / None for the defaults."""
    if isinstance(config, PipelineConfig):
        return config
    return PipelineConfig.from_file(config) if config else PipelineConfig()


class semantic_tx(gr.basic_block):
    """Encodes images into semcom PDUs.

    Message input ``in`` takes a file path (PMT symbol/string), a PDU whose metadata has ``path``, or a
    PDU whose payload is an encoded image file (PNG/JPEG/...). With ``image_path`` set, that image is
    sent once when the flowgraph starts. Output ``pdus`` carries one PDU per wire-format packet;
    ``info`` carries a dict per image (image_id, frame_bytes, n_pdus, description) or an ``error``.

    Encoding runs on a worker thread, so a slow model never stalls the scheduler. With ``endpoint``
    set (e.g. ``tcp://127.0.0.1:5555``), that thread asks a ``semcom worker`` instead of running the
    model here; no reply within ``worker_timeout_s`` is a counted failure (``errors``,
    ``worker_timeouts``, an ``error`` on ``info``), never a hang.
    """

    def __init__(self, image_path: str = "", config: PipelineConfig | str | None = None,
                 key_mask_path: str = "", first_image_id: int = 0, endpoint: str = "",
                 worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S, worker_keys: str = ""):
        gr.basic_block.__init__(self, name="semantic_tx", in_sig=None, out_sig=None)
        self.log = gr.logger("semcom.semantic_tx")
        self.image_path = image_path
        self.mask_splitter = registry.create("regions", "mask", mask=key_mask_path) if key_mask_path else None
        self.config = load_config(config)
        self.endpoint = endpoint
        self.worker_timeout_s = worker_timeout_s
        self.worker_keys = worker_keys          # client keys directory for a worker run with --keys (docs/ota.md)
        # Remote: the client is built on the worker thread that uses it (a ZeroMQ socket stays in one thread).
        self.encoder = None if endpoint else SemanticEncoder(self.config)
        self.worker_timeouts = 0
        self.next_image_id = first_image_id & 0xFFFF
        self.images_sent = 0
        self.errors = 0
        self.last_error = ""
        self.last_encoded: Encoded | None = None
        self.idle = threading.Event()
        self.idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("pdus"))
        self.message_port_register_out(pmt.intern("info"))
        self.set_msg_handler(pmt.intern("in"), self._handle_message)

    def start(self):
        if self.image_path:
            self.send(self.image_path)
        return True

    def send(self, source: str | bytes | np.ndarray, key_mask: np.ndarray | None = None) -> None:
        """Queue one image (path, encoded file bytes or (H, W, 3) uint8 array) for transmission.

        ``key_mask`` (H, W) bool overrides the block's mask file and region splitter for this image.
        """
        with self._lock:
            self._pending += 1
            self.idle.clear()
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semantic_tx")
            self._worker.submit(self._encode_and_publish, source, key_mask)

    def _handle_message(self, msg):
        if pmt.is_symbol(msg):
            self.send(pmt.symbol_to_string(msg))
            return
        try:
            meta, payload = from_pdu(msg)
        except ValueError as exc:
            self._report_error(f"ignored message on 'in': {exc}")
            return
        self.send(str(meta["path"]) if "path" in meta else payload)

    def _encode_and_publish(self, source: str | bytes | np.ndarray, key_mask: np.ndarray | None) -> None:
        try:
            image = source if isinstance(source, np.ndarray) else load_image(source)
            if key_mask is None and self.mask_splitter is not None:
                key_mask = self.mask_splitter.split(image)
            image_id = self.next_image_id
            if self.encoder is None:
                self.encoder = WorkerClient(self.endpoint, self.worker_timeout_s, self.config, keys=self.worker_keys)
            encoded = self.encoder.encode(image, image_id=image_id, key_mask=key_mask)
            pdus = encoded.to_pdus(self.config.pdu_bytes)
        except WorkerTimeout as exc:
            self.worker_timeouts += 1
            self._report_error(str(exc))
        except (ValueError, WorkerError) as exc:
            self._report_error(str(exc))
        except Exception as exc:    # noqa: BLE001  a worker exception would otherwise vanish with its future
            self._report_error(f"encoding failed: {exc!r}")
        else:
            self.next_image_id = (image_id + 1) & 0xFFFF
            self.last_encoded = encoded
            for pdu in pdus:
                self.message_port_pub(pmt.intern("pdus"), to_pdu(pdu, {"image_id": image_id}))
            self.images_sent += 1
            self.message_port_pub(pmt.intern("info"), pmt.to_pmt({
                "image_id": image_id, "n_pdus": len(pdus), "frame_bytes": sum(map(len, pdus)),
                "description": encoded.description}))
        finally:
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self.idle.set()

    def _report_error(self, text: str) -> None:
        self.errors += 1
        self.last_error = text
        self.log.error(text)
        self.message_port_pub(pmt.intern("info"), pmt.to_pmt({"error": text}))

    def stop(self):
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.shutdown(wait=True, cancel_futures=True)
        if isinstance(self.encoder, WorkerClient):
            self.encoder.close()
            self.encoder = None
        with self._lock:
            self._pending = 0
            self.idle.set()
        return True
