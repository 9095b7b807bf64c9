"""image_sink: a QT GUI display of the received images, for QT GUI flowgraphs (gr-qtgui conventions).

The block takes semantic_rx's ``image`` messages and shows the original next to the received
image, the key region outlined on both, and live figures: PSNR/SSIM when the original is known,
tiles received/generated, PDUs lost, SNR estimate. Like gr-qtgui's sinks it is a block plus a
widget (``qwidget()``) that GRC places with ``gui_hint``. The message handlers only decode and
measure; the widget is updated on the Qt GUI thread through a queued signal, so a slow repaint never
holds up the flowgraph and the flowgraph never touches Qt objects from its own threads.
"""

from __future__ import annotations

import html
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np
import pmt
from gnuradio import gr
from PyQt5 import QtCore, QtGui, QtWidgets

from semcom.codec.frame import FrameAssembler, Segment, WireError, parse_pdu
from semcom.codec.imageio import load_image
from semcom.eval.metrics import quality_report
from semcom.radio.pdu import from_pdu

# Images whose PDUs are remembered for the figures: bounded, whatever arrives.
_TRACKED_IMAGES = 16
KEY_OUTLINE_RGB = (255, 210, 0)
KEY_OUTLINE_PX = 2
_PANE_MIN_PX = (320, 220)
_DESCRIPTION_CHARS = 200
# Metadata key under which an SNR estimate may ride on a PDU or an image report.
SNR_KEY = "snr_db"


@dataclass
class _ImagePdus:
    """What the PDU tap saw of one image: copies received, distinct PDUs per segment, the key mask."""

    received: int = 0
    counts: dict = field(default_factory=dict)          # segment -> PDU count announced
    indices: dict = field(default_factory=dict)         # segment -> set of PDU indices received
    key_mask: np.ndarray | None = None

    def lost(self) -> int:
        """Distinct PDUs missing from the segments seen (a segment lost whole is not counted here)."""
        return sum(self.counts[s] - len(self.indices[s]) for s in self.counts)


@dataclass
class ImageUpdate:
    """One image's worth of display: built on the message thread, shown on the GUI thread."""

    original: np.ndarray | None     # (H, W, 3) uint8 with the key outline, or None
    received: np.ndarray            # (H, W, 3) uint8 with the key outline
    figures: list[tuple[str, str]]  # (label, value) rows


def outline(image: np.ndarray, key_mask: np.ndarray | None) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) with the border of ``key_mask`` (H, W) bool drawn on it."""
    shown = image.copy()
    if key_mask is not None and key_mask.shape == image.shape[:2] and key_mask.any():
        contours, _ = cv2.findContours(key_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(shown, contours, -1, KEY_OUTLINE_RGB, KEY_OUTLINE_PX)
    return shown


class ImageView(QtWidgets.QWidget):
    """Original | received, with a table of figures underneath. Fed only through ``show_update``."""

    show_update = QtCore.pyqtSignal(object)

    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        self.title = QtWidgets.QLabel(f"<b>{html.escape(name)}</b>")
        self.original = self._pane("original: not known")
        self.received = self._pane("waiting for the first image")
        self.figures = QtWidgets.QLabel()
        self.figures.setTextFormat(QtCore.Qt.RichText)
        self.figures.setAlignment(QtCore.Qt.AlignLeft | QtCore.Qt.AlignTop)
        self.figures.setWordWrap(True)
        panes = QtWidgets.QHBoxLayout()
        panes.addWidget(self.original)
        panes.addWidget(self.received)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addLayout(panes, stretch=1)
        layout.addWidget(self.figures)
        self._pixmaps: dict[QtWidgets.QLabel, QtGui.QPixmap] = {}
        self.images_shown = 0
        self.figures_shown: list[tuple[str, str]] = []
        self.show_update.connect(self._apply)      # queued when emitted from a flowgraph thread

    @staticmethod
    def _pane(text: str) -> QtWidgets.QLabel:
        pane = QtWidgets.QLabel(text)
        pane.setAlignment(QtCore.Qt.AlignCenter)
        pane.setMinimumSize(*_PANE_MIN_PX)
        pane.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Ignored)
        return pane

    def _apply(self, update: ImageUpdate) -> None:
        if update.original is not None:
            self.set_image(self.original, update.original)
        self.set_image(self.received, update.received)
        rows = "".join(f"<tr><td>{html.escape(k)}&nbsp;&nbsp;</td><td><b>{html.escape(v)}</b></td></tr>"
                       for k, v in update.figures)
        self.figures.setText(f"<table>{rows}</table>")
        self.figures_shown = update.figures
        self.images_shown += 1

    def set_image(self, pane: QtWidgets.QLabel, rgb: np.ndarray) -> None:
        rgb = np.ascontiguousarray(rgb)
        h, w, _ = rgb.shape
        image = QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format_RGB888).copy()   # own the pixels
        self._pixmaps[pane] = QtGui.QPixmap.fromImage(image)
        self._rescale(pane)

    def _rescale(self, pane: QtWidgets.QLabel) -> None:
        pixmap = self._pixmaps.get(pane)
        if pixmap is not None:
            pane.setPixmap(pixmap.scaled(pane.size(), QtCore.Qt.KeepAspectRatio, QtCore.Qt.SmoothTransformation))

    def resizeEvent(self, event):
        super().resizeEvent(event)
        for pane in self._pixmaps:
            self._rescale(pane)


class image_sink(gr.basic_block):
    """Shows each image semantic_rx puts out, with the original and live figures.

    Message inputs: ``image`` (semantic_rx's image port: pmt.cons(report dict, PNG bytes)); ``pdus``
    (optional: the same PDUs semantic_rx gets, for the key-mask outline and the PDUs lost); ``snr``
    (optional: a number in dB, e.g. from digital.probe_mpsk_snr_est_c, or a dict with ``snr_db``).
    ``original_path``: the image the transmitter sends, for PSNR/SSIM; empty = not known.
    Needs a running QApplication (a QT GUI flowgraph creates it before the blocks).
    """

    def __init__(self, original_path: str = "", name: str = "Received image"):
        gr.basic_block.__init__(self, name="semcom_image_sink", in_sig=None, out_sig=None)
        self.log = gr.logger("semcom.image_sink")
        self.original = load_image(original_path) if original_path else None
        self.view = ImageView(name)
        if self.original is not None:
            self.view.set_image(self.view.original, self.original)
        self._pdus: OrderedDict[int, _ImagePdus] = OrderedDict()
        self.snr_db: float | None = None
        self.images_in = 0
        self.bad_messages = 0
        for port, handler in (("image", self._handle_image), ("pdus", self._handle_pdu), ("snr", self._handle_snr)):
            self.message_port_register_in(pmt.intern(port))
            self.set_msg_handler(pmt.intern(port), handler)

    def qwidget(self) -> QtWidgets.QWidget:
        """The widget GRC's gui_hint places (as gr-qtgui sinks' qwidget())."""
        return self.view

    # --- message handlers (flowgraph threads): decode and measure, never touch the widgets ------
    def _handle_pdu(self, msg) -> None:
        try:
            meta, payload = from_pdu(msg)
            pdu = parse_pdu(payload)
        except (ValueError, WireError):
            return      # semantic_rx counts malformed PDUs; the display only skips them
        seen = self._pdus.get(pdu.image_id)
        if seen is None:
            seen = self._pdus[pdu.image_id] = _ImagePdus()
            while len(self._pdus) > _TRACKED_IMAGES:
                self._pdus.popitem(last=False)
        seen.received += 1
        seen.counts[pdu.segment] = pdu.count
        seen.indices.setdefault(pdu.segment, set()).add(pdu.index)
        if pdu.segment == Segment.HEADER and seen.key_mask is None:
            seen.key_mask = _key_mask_from_header(payload)
        if SNR_KEY in meta:
            self._set_snr(meta[SNR_KEY])

    def _handle_snr(self, msg) -> None:
        value = pmt.to_python(msg)
        if isinstance(value, dict):
            value = value.get(SNR_KEY)
        elif isinstance(value, tuple) and value:     # probe_mpsk_snr_est_c: pmt.cons('snr', dB)
            value = value[-1]
        self._set_snr(value)

    def _set_snr(self, value) -> None:
        try:
            snr_db = float(value)
        except (TypeError, ValueError):
            self.bad_messages += 1
            return
        if math.isfinite(snr_db):
            self.snr_db = snr_db

    def _handle_image(self, msg) -> None:
        try:
            report, png = from_pdu(msg)
            received = load_image(png)
        except ValueError as exc:
            self.bad_messages += 1
            self.log.warn(f"not an image message: {exc}")
            return
        self.images_in += 1
        self.view.show_update.emit(self.update_for(report, received))
        self.log.info(f"image {report.get('image_id')} to the display ({self.images_in} so far)")

    def update_for(self, report: dict, received: np.ndarray) -> ImageUpdate:
        """The display of one received image and its report (semantic_rx's image port)."""
        image_id = report.get("image_id")
        seen = self._pdus.get(image_id)
        key_mask = seen.key_mask if seen is not None else None
        if key_mask is not None and key_mask.shape != received.shape[:2]:
            key_mask = None
        figures = [("image", f"#{image_id}  {received.shape[1]}x{received.shape[0]} px")]
        original = self.original
        if original is not None and original.shape != received.shape:
            figures.append(("original", f"{original.shape[1]}x{original.shape[0]} px, not this image: no PSNR/SSIM"))
            original = None
        if original is not None:
            quality = quality_report(original, received, key_mask if key_mask is not None else np.zeros(
                received.shape[:2], bool))
            figures.append(("PSNR / SSIM", f"{quality['psnr_db']:.1f} dB / {quality['ssim']:.3f}"))
            if "key_psnr_db" in quality:
                figures.append(("key region PSNR / SSIM", f"{quality['key_psnr_db']:.1f} dB / {quality['key_ssim']:.3f}"))
        if "tiles_expected" in report:
            generated = report.get("generated_share", 0.0)
            figures.append(("key tiles received", f"{report.get('tiles_received', 0)} of {report['tiles_expected']}"
                            f"  ({100 * generated:.0f}% of the key region generated)"))
        if seen is not None:
            lost = seen.lost() + (1 if report.get("text_lost") else 0)
            figures.append(("PDUs", f"{seen.received} received, {lost} lost"))
        if report.get("text_lost"):
            figures.append(("description", "lost: neutral background"))
        elif report.get("description"):
            figures.append(("description", str(report["description"])[:_DESCRIPTION_CHARS]))
        snr_db = report.get(SNR_KEY, self.snr_db)
        if snr_db is not None:
            figures.append(("SNR estimate", f"{float(snr_db):.1f} dB"))
        return ImageUpdate(None if original is None else outline(original, key_mask),
                           outline(received, key_mask), figures)


def _key_mask_from_header(header_pdu: bytes) -> np.ndarray | None:
    """(H, W) bool key mask from a HEADER PDU, parsed by the receiver's own assembler."""
    assembler = FrameAssembler()
    assembler.push(header_pdu)
    frames = assembler.flush_all()
    return frames[0].key_mask() if frames else None
