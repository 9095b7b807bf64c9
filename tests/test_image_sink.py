"""semcom_image_sink without a flowgraph: what it shows for one image, and that the message handlers
never wait for the screen (the widget changes only when the Qt GUI thread runs its events)."""

from __future__ import annotations

import threading

import numpy as np
import pmt
import pytest
from grc_screenshot import qt_application

from semcom.codec.frame import SemanticFrame, Segment, parse_pdu
from semcom.codec.imageio import save_png
from semcom.radio.pdu import to_pdu

HEIGHT, WIDTH, MASK_BLOCK_PX = 64, 96, 8


@pytest.fixture(scope="module")
def qt_app():
    """QT GUI blocks need a QApplication, as in a generated QT GUI flowgraph (offscreen: no display)."""
    return qt_application()


def frame_with_key_block() -> SemanticFrame:
    """A 96x64 frame whose key region is the 32x24 block at (x 16, y 8), with one fake tile per key tile."""
    blocks = np.zeros((HEIGHT // MASK_BLOCK_PX, WIDTH // MASK_BLOCK_PX), bool)
    blocks[1:4, 2:6] = True
    frame = SemanticFrame(image_id=7, width=WIDTH, height=HEIGHT, tile_px=16, mask_block_px=MASK_BLOCK_PX,
                          key_codec_id=0, text_codec_id=0, mask_blocks=blocks, text=b"t" * 20)
    frame.key_tiles = {i: bytes(300) for i in frame.key_tile_indices()}
    return frame


def gradient(offset: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([x * 2 + offset, y * 3 + offset, (x + y + offset) % 256], axis=2).astype(np.uint8)


def test_one_image_shows_original_received_outline_and_figures(qt_app, tmp_path):
    from semcom.radio.image_sink import KEY_OUTLINE_RGB, image_sink

    original = tmp_path / "sent.png"
    save_png(gradient(), original)
    sink = image_sink(original_path=str(original))
    frame = frame_with_key_block()
    pdus = frame.to_pdus(pdu_bytes=700)
    key_pdus = [p for p in pdus if parse_pdu(p).segment == Segment.KEY]
    assert len(key_pdus) >= 3
    for pdu in pdus:
        if pdu is not key_pdus[1]:              # one key PDU lost on the way
            sink._handle_pdu(to_pdu(pdu))
    received = gradient(offset=4)
    report = {"image_id": 7, "tiles_expected": len(frame.key_tiles), "tiles_received": len(frame.key_tiles) - 2,
              "generated_share": 0.25, "text_lost": False, "description": "a gradient"}
    sink._handle_image(to_pdu(save_png(received), report))
    qt_app.processEvents()

    figures = dict(sink.view.figures_shown)
    assert figures["PDUs"] == f"{len(pdus) - 1} received, 1 lost"
    assert figures["key tiles received"].startswith(f"{len(frame.key_tiles) - 2} of {len(frame.key_tiles)}")
    psnr_db = 10 * np.log10(255**2 / 16)        # every pixel off by 4
    assert figures["PSNR / SSIM"].startswith(f"{psnr_db:.1f} dB")
    assert figures["key region PSNR / SSIM"].startswith(f"{psnr_db:.1f} dB")
    assert "SNR estimate" not in figures        # none came
    shown = sink.view.received.pixmap().toImage()
    assert not shown.isNull()
    update = sink.update_for(report, received)
    outline = (update.received == KEY_OUTLINE_RGB).all(axis=2)
    ys, xs = np.nonzero(outline)
    # the key block (rows 8-31, columns 16-47) ringed by a 2-pixel line centred on its border
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (7, 32, 15, 48)
    assert (update.original == KEY_OUTLINE_RGB).all(axis=2).sum() == outline.sum()


def test_handlers_return_without_the_gui_thread_and_count_bad_messages(qt_app):
    from semcom.radio.image_sink import image_sink

    sink = image_sink()
    png = save_png(gradient())
    done = threading.Event()

    def flowgraph_thread():     # as GNU Radio's message thread would call it
        sink._handle_snr(pmt.cons(pmt.intern("snr"), pmt.from_double(9.5)))       # probe_mpsk_snr_est_c's form
        sink._handle_image(to_pdu(png, {"image_id": 1}))
        sink._handle_image(pmt.intern("not a pdu"))
        sink._handle_image(to_pdu(b"not a png", {"image_id": 2}))
        done.set()

    threading.Thread(target=flowgraph_thread).start()
    assert done.wait(10), "a message handler waited for the GUI thread"
    assert sink.view.images_shown == 0          # queued: nothing drawn until the GUI thread runs
    qt_app.processEvents()
    assert sink.view.images_shown == 1 and sink.images_in == 1 and sink.bad_messages == 2
    figures = dict(sink.view.figures_shown)
    assert figures["SNR estimate"] == "9.5 dB"
    assert "PSNR / SSIM" not in figures         # no original given
