"""semantic_tx: image in (file path or message) -> semcom PDUs out."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pmt
from gnuradio import gr

from semcom.codec import registry
from semcom.codec.imageio import load_image
from semcom.codec.frame import Segment, parse_pdu
from semcom.codec.pipeline import Encoded, PipelineConfig, SemanticEncoder
from semcom.radio.mcs import Mcs, mcs_by_name
from semcom.radio.packet import MCS_KEY, SNR_KEY
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

    Unequal protection: ``protected_mcs`` and ``key_mcs`` (MCS names of ``semcom.radio.mcs``; empty = no
    ``mcs`` metadata, so packet_tx's configured MCS) put the header, text and sketch PDUs on one MCS and the
    key tiles on another, in the PDU metadata that packet_tx reads; one packet_rx decodes both. With
    ``adapt`` on, every new image takes the pair ``link_adaptation.segment_mcs_for_snr`` picks for the median
    of the last ``SNR_WINDOW`` estimates on message port ``snr`` (a number in dB, or a PDU whose metadata
    has ``snr_db``: connect a receiver's PDU output); until an estimate arrives, the configured pair.
    """

    SNR_WINDOW = 16     # estimates kept; their median steers the next image (one PDU's estimate is +-1.5 dB)
    RECENT_IMAGES = 16  # images whose MCS choice is kept in ``recent_mcs``

    def __init__(self, image_path: str = "", config: PipelineConfig | str | None = None,
                 key_mask_path: str = "", first_image_id: int = 0, endpoint: str = "",
                 worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S, worker_keys: str = "",
                 protected_mcs: str = "", key_mcs: str = "", adapt: bool = False):
        gr.basic_block.__init__(self, name="semantic_tx", in_sig=None, out_sig=None)
        self.protected_mcs: Mcs | None = mcs_by_name(protected_mcs) if protected_mcs else None
        self.key_mcs: Mcs | None = mcs_by_name(key_mcs) if key_mcs else None
        self.adapt = adapt
        self._per_table = None
        if adapt:
            from semcom.eval.channel import shipped_per_table   # the PER table the rule reads (fails if stale)

            self._per_table = shipped_per_table()
        self.snr_estimates: list[float] = []
        self.snr_messages_ignored = 0
        # the last RECENT_IMAGES images sent (bounded: a flowgraph may run for days): (image_id, protected
        # MCS, key MCS, the SNR estimate they were chosen for or None)
        self.recent_mcs: deque[tuple[int, str, str, float | None]] = deque(maxlen=self.RECENT_IMAGES)
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
        self.pdus_sent = 0
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
        self.message_port_register_in(pmt.intern("snr"))
        self.set_msg_handler(pmt.intern("in"), self._handle_message)
        self.set_msg_handler(pmt.intern("snr"), self._handle_snr)

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

    def _handle_snr(self, msg):
        """An SNR estimate: a number (dB), or a PDU whose metadata has ``snr_db``; anything else is counted."""
        value = None
        if pmt.is_number(msg):
            value = pmt.to_double(msg)
        elif pmt.is_pair(msg) and pmt.is_dict(pmt.car(msg)):
            value = pmt.to_python(pmt.dict_ref(pmt.car(msg), pmt.intern(SNR_KEY), pmt.PMT_NIL))
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not -50.0 <= value <= 100.0:
            self.snr_messages_ignored += 1
            return
        with self._lock:
            self.snr_estimates = (self.snr_estimates + [float(value)])[-self.SNR_WINDOW:]

    def snr_estimate_db(self) -> float | None:
        """The median of the kept estimates, None before the first."""
        with self._lock:
            return float(np.median(self.snr_estimates)) if self.snr_estimates else None

    def segment_mcs(self) -> tuple[Mcs | None, Mcs | None, float | None]:
        """(protected, key) MCS for the next image and the estimate they follow: the adaptive pick, else the
        configured pair (and None)."""
        estimate = self.snr_estimate_db() if self.adapt else None
        if estimate is None:
            return self.protected_mcs, self.key_mcs, None
        from semcom.radio.link_adaptation import segment_mcs_for_snr

        return (*segment_mcs_for_snr(estimate, self._per_table), estimate)

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
            protected, key, estimate = self.segment_mcs()
            self.recent_mcs.append((image_id, protected.name if protected else "", key.name if key else "", estimate))
            for pdu in pdus:
                meta = {"image_id": image_id}
                mcs = key if parse_pdu(pdu).segment == Segment.KEY else protected
                if mcs is not None:
                    meta[MCS_KEY] = mcs.name
                self.message_port_pub(pmt.intern("pdus"), to_pdu(pdu, meta))
                self.pdus_sent += 1
            self.images_sent += 1
            self.message_port_pub(pmt.intern("info"), pmt.to_pmt({
                "image_id": image_id, "n_pdus": len(pdus), "frame_bytes": sum(map(len, pdus)),
                "description": encoded.description,
                "protected_mcs": protected.name if protected else "", "key_mcs": key.name if key else ""}))
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
