"""semantic_tx: image in (file path or message) -> semcom PDUs out."""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pmt
from gnuradio import gr

from semcom.codec import registry
from semcom.codec.imageio import load_image
from semcom.codec.frame import Segment, parse_pdu
from semcom.codec.pipeline import Encoded, PipelineConfig, SemanticEncoder
from semcom.radio import analog
from semcom.radio.mcs import Mcs, mcs_by_name
from semcom.radio.packet import MCS_KEY, SNR_KEY
from semcom.radio.pdu import from_pdu, to_pdu
from semcom.worker import DEFAULT_TIMEOUT_S as DEFAULT_WORKER_TIMEOUT_S
from semcom.worker import WorkerClient, WorkerError, WorkerTimeout


HYBRID = "hybrid"


def load_config(config: PipelineConfig | str | Path | None) -> PipelineConfig:
    """A PipelineConfig from an object, a JSON/YAML file path, or '' / None for the defaults."""
    if isinstance(config, PipelineConfig):
        return config
    return PipelineConfig.from_file(config) if config else PipelineConfig()


@dataclass(frozen=True)
class SentFrame:
    """One image as semantic_tx sent it: each PDU's MCS ("" = packet_tx's configured one; ``HYBRID``: coded
    BPSK in analog frames, the key tiles "analog") and why."""

    image_id: int
    encoded: Encoded
    pdus: tuple[bytes, ...]
    pdu_mcs: tuple[str, ...]
    protected_mcs: str          # the header's MCS
    key_mcs: str                # the first key tile's ("" also when no tile was sent)
    snr_estimate_db: float | None   # the estimate the MCS followed; None: the configured pair
    plan: dict[str, Any] | None = None  # budget mode: the planner's choice (budget_plan_report)


def budget_plan_report(rate: dict[str, Any], budget_symbols: int, symbols: int, planned_snr_db: float,
                       key_mask: np.ndarray) -> dict[str, Any]:
    """What the budget planner chose for one image, and how far it shrank the key region: ``key_region`` is
    "whole", "shrunk" (to ``key_fraction`` of the pixels, from ``mask_key_fraction``), "dropped" (text only)
    or "none" (an empty mask)."""
    return {"budget_symbols": budget_symbols, "symbols": symbols, "planned_snr_db": round(planned_snr_db, 2),
            "plan": rate["mcs"], "key_quality": rate["quality"], "key_region": rate["key_region"],
            "key_fraction": rate["key_fraction"], "mask_key_fraction": round(float(key_mask.mean()), 4)}


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
    has ``snr_db`` or ``snr_db_est``: connect packet_rx's ``snr`` port, which reports every header, also
    of payloads that failed, or analog_rx's output); until an estimate arrives, the configured pair.

    A symbol budget: with ``budget_symbols`` (complex channel symbols per image) or ``cbr`` (symbols per
    3 H W, the eval's convention) set, each image is planned as ``semcom eval``'s ``ours-adapt`` plans it
    (``eval.schemes.OursAdaptScheme``): the key quality and MCS pair with the best expected key-region
    SSIM that fits, the key region shrunk or dropped (text only) when quality 1 does not fit. It plans
    for the SNR estimate with ``adapt``, else for ``plan_snr_db``. When not even header and text fit,
    the image is not sent: a counted error. ``recent_frames[-1].plan`` reports the choice.

    Hybrid digital-analog (``hybrid``, ``semcom.radio.hybrid``): each image is planned for the SNR (the
    estimate with ``adapt``, else ``plan_snr_db``) and the budget (if any) as ``semcom loopback --mode
    hybrid`` plans it, and goes out on ``symbols`` as symbol PDUs for ``analog_tx``: header, text and
    sketch as coded BPSK, key tiles as DeepJSCC symbols, copies included, in air order. ``hybrid_rx``
    behind ``analog_rx`` receives them. Nothing goes out on ``pdus`` then.
    """

    SNR_WINDOW = 16     # estimates kept; their median steers the next image (one PDU's estimate is +-1.5 dB)
    RECENT_IMAGES = 16  # images kept in ``recent_frames``

    def __init__(self, image_path: str = "", config: PipelineConfig | str | None = None,
                 key_mask_path: str = "", first_image_id: int = 0, endpoint: str = "",
                 worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S, worker_keys: str = "",
                 protected_mcs: str = "", key_mcs: str = "", adapt: bool = False,
                 budget_symbols: int = 0, cbr: float = 0.0, plan_snr_db: float | None = None,
                 hybrid: bool = False):
        gr.basic_block.__init__(self, name="semantic_tx", in_sig=None, out_sig=None)
        if budget_symbols < 0 or cbr < 0 or (budget_symbols and cbr):
            raise ValueError("give a symbol budget as budget_symbols or as cbr, not both, and not negative")
        self.budget_symbols, self.cbr = int(budget_symbols), float(cbr)
        self.plan_snr_db = plan_snr_db
        self.hybrid = hybrid
        if hybrid and (protected_mcs or key_mcs):
            raise ValueError("the hybrid mode codes header and text itself and sends key tiles analog: "
                             "not with protected_mcs or key_mcs")
        planning = bool(self.budget_symbols or self.cbr or hybrid)
        if planning and endpoint:
            raise ValueError("a symbol budget and the hybrid mode are planned in-process (they encode each "
                             "image for the link): use them without endpoint")
        if planning and plan_snr_db is None and not adapt:
            raise ValueError("a symbol budget or the hybrid mode needs plan_snr_db (or adapt) to know the SNR "
                             "it plans for")
        self.protected_mcs: Mcs | None = mcs_by_name(protected_mcs) if protected_mcs else None
        self.key_mcs: Mcs | None = mcs_by_name(key_mcs) if key_mcs else None
        self.adapt = adapt
        self._per_table = None
        if adapt or planning:
            from semcom.eval.channel import shipped_per_table   # the PER table the rule reads (fails if stale)

            self._per_table = shipped_per_table()
        self.snr_estimates: list[float] = []
        self.snr_messages_ignored = 0
        # the last RECENT_IMAGES images sent (bounded: a flowgraph may run for days)
        self.recent_frames: deque[SentFrame] = deque(maxlen=self.RECENT_IMAGES)
        self.log = gr.logger("semcom.semantic_tx")
        self.image_path = image_path
        self.mask_splitter = registry.create("regions", "mask", mask=key_mask_path) if key_mask_path else None
        self.config = load_config(config)
        self.endpoint = endpoint
        self.worker_timeout_s = worker_timeout_s
        self.worker_keys = worker_keys          # client keys directory for a worker run with --keys (docs/ota.md)
        # Remote: the client is built on the worker thread that uses it (a ZeroMQ socket stays in one thread).
        self.encoder = None if endpoint or planning else SemanticEncoder(self.config)
        self._planner = None        # eval.schemes.OursAdaptScheme, built with the first budgeted image
        self.worker_timeouts = 0
        self.next_image_id = first_image_id & 0xFFFF
        self.images_sent = 0
        self.pdus_sent = 0
        self.errors = 0
        self.last_error = ""
        self.idle = threading.Event()
        self.idle.set()
        self._pending = 0
        self._lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("pdus"))
        self.message_port_register_out(pmt.intern("symbols"))
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
        """An SNR estimate: a number (dB), or a PDU whose metadata has ``snr_db`` (packet_rx, semantic_rx) or
        ``snr_db_est`` (analog_rx, the hybrid mode's receiver); anything else is counted."""
        value = None
        if pmt.is_number(msg):
            value = pmt.to_double(msg)
        elif pmt.is_pair(msg) and pmt.is_dict(pmt.car(msg)):
            meta = pmt.car(msg)
            key = next((k for k in (SNR_KEY, analog.SNR_EST_KEY) if pmt.dict_has_key(meta, pmt.intern(k))), SNR_KEY)
            value = pmt.to_python(pmt.dict_ref(meta, pmt.intern(key), pmt.PMT_NIL))
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
            if self.hybrid:
                sent, bursts = self._hybrid_frame(image, image_id, key_mask)
            elif self.budget_symbols or self.cbr:
                sent = self._planned_frame(image, image_id, key_mask)
            else:
                if self.encoder is None:
                    self.encoder = WorkerClient(self.endpoint, self.worker_timeout_s, self.config, keys=self.worker_keys)
                sent = self._frame_on_segment_mcs(image_id, self.encoder.encode(image, image_id=image_id, key_mask=key_mask))
        except WorkerTimeout as exc:
            self.worker_timeouts += 1
            self._report_error(str(exc))
        except (ValueError, WorkerError) as exc:
            self._report_error(str(exc))
        except Exception as exc:    # noqa: BLE001  a worker exception would otherwise vanish with its future
            self._report_error(f"encoding failed: {exc!r}")
        else:
            self.next_image_id = (image_id + 1) & 0xFFFF
            self.recent_frames.append(sent)
            if self.hybrid:
                for index, symbols in bursts:
                    self.message_port_pub(pmt.intern("symbols"), analog.symbols_pdu(
                        symbols, {"image_id": image_id & 0xFF, "frame_index": index}))
                    self.pdus_sent += 1
            else:
                for pdu, mcs in zip(sent.pdus, sent.pdu_mcs):
                    meta = {"image_id": image_id, **({MCS_KEY: mcs} if mcs else {})}
                    self.message_port_pub(pmt.intern("pdus"), to_pdu(pdu, meta))
                    self.pdus_sent += 1
            self.images_sent += 1
            self.message_port_pub(pmt.intern("info"), pmt.to_pmt({
                "image_id": image_id, "n_pdus": len(sent.pdus), "frame_bytes": sum(map(len, sent.pdus)),
                "description": sent.encoded.description,
                "protected_mcs": sent.protected_mcs, "key_mcs": sent.key_mcs, **(sent.plan or {})}))
        finally:
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self.idle.set()

    def _frame_on_segment_mcs(self, image_id: int, encoded: Encoded) -> SentFrame:
        """The whole frame, each PDU on its segment's MCS (adaptive or configured)."""
        protected, key, estimate = self.segment_mcs()
        protected_name, key_name = (protected.name if protected else ""), (key.name if key else "")
        pdus = encoded.to_pdus(self.config.pdu_bytes)
        pdu_mcs = [key_name if parse_pdu(p).segment == Segment.KEY else protected_name for p in pdus]
        return SentFrame(image_id, encoded, tuple(pdus), tuple(pdu_mcs), protected_name, key_name, estimate)

    def _planned_frame(self, image: np.ndarray, image_id: int, key_mask: np.ndarray | None) -> SentFrame:
        """The frame the budget planner picks for ``image`` (ValueError when nothing fits the budget)."""
        from semcom.eval.schemes import NOTHING_FITS, OursAdaptScheme
        from semcom.eval.sweep import budget_symbols as symbols_for_cbr

        if self._planner is None:
            self._planner = OursAdaptScheme(self.config, hybrid_below_floor=False)
        if key_mask is None:
            key_mask = self._planner.encoder.splitter.split(image)
        estimate = self.snr_estimate_db() if self.adapt else None
        snr_db = estimate if estimate is not None else self.plan_snr_db
        if snr_db is None:
            raise ValueError("no SNR estimate yet and no plan_snr_db to plan the budget for")
        budget = self.budget_symbols or symbols_for_cbr(self.cbr, *image.shape[:2])
        payload = self._planner.prepare_at_snr(image, key_mask, budget, snr_db, self._per_table)
        if payload.rate["mcs"] == NOTHING_FITS:
            raise ValueError(f"image {image_id} not sent: not even its header and text fit {budget} symbols "
                             f"at {snr_db:.1f} dB")
        encoded = replace(payload.encoded, frame=replace(payload.encoded.frame, image_id=image_id))
        pdus = encoded.to_pdus(self.config.pdu_bytes)
        if list(map(len, pdus)) != list(map(len, payload.pdus)):
            raise RuntimeError("the planned frame changed size when given its image id")
        segments = [parse_pdu(p).segment for p in pdus]
        key_name = next((m for m, seg in zip(payload.pdu_mcs, segments) if seg == Segment.KEY), "")
        plan = budget_plan_report(payload.rate, budget, payload.channel_symbols, snr_db, key_mask)
        return SentFrame(image_id, encoded, tuple(pdus), tuple(payload.pdu_mcs), payload.pdu_mcs[0], key_name,
                         estimate, plan)

    def _hybrid_frame(self, image: np.ndarray, image_id: int, key_mask: np.ndarray | None) -> tuple[SentFrame, list]:
        """The hybrid plan of ``image`` for the SNR and budget, and its bursts (ValueError when header and
        text alone exceed the budget)."""
        from semcom.eval.sweep import budget_symbols as symbols_for_cbr
        from semcom.radio.hybrid import HybridLinkConfig, plan_hybrid

        estimate = self.snr_estimate_db() if self.adapt else None
        snr_db = estimate if estimate is not None else self.plan_snr_db
        if snr_db is None:
            raise ValueError("no SNR estimate yet and no plan_snr_db to plan the hybrid frame for")
        budget = self.budget_symbols or (symbols_for_cbr(self.cbr, *image.shape[:2]) if self.cbr else 0)
        plan = plan_hybrid(image, HybridLinkConfig(snr_db=snr_db, budget_symbols=budget), self.config, key_mask,
                           image_id)
        report = {"budget_symbols": budget, "symbols": plan.channel_symbols, "planned_snr_db": round(snr_db, 2),
                  "plan": "hybrid", "copies": list(plan.copies), "pdu_copies": list(plan.pdu_copies),
                  "digital_symbols": plan.digital_symbols, "analog_symbols": plan.analog_symbols,
                  "sketch_dropped": plan.sketch_dropped, "analog_frames": len(plan.bursts())}
        sent = SentFrame(image_id, plan.encoded, tuple(plan.pdus), (HYBRID,) * len(plan.pdus), HYBRID, "analog",
                         estimate, report)
        return sent, plan.bursts()

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
