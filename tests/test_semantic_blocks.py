"""semantic_tx / semantic_rx as GNU Radio blocks, wired message-to-message (no PHY)."""

from __future__ import annotations

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr
from helpers import wait_until
from semcom.codec.imageio import load_image
from semcom.paths import data_path
from semcom.radio.pdu import from_pdu, to_pdu
from semcom.radio.semantic_rx import semantic_rx
from semcom.radio.semantic_tx import semantic_tx

PHOTO = str(data_path("photos", "chelsea.png"))


class Link:
    """tx -> (optional PDU filter) -> rx, with message_debug sinks on the outputs."""

    def __init__(self, tmp_path, drop=None, **tx_kwargs):
        self.tb = gr.top_block()
        self.tx = semantic_tx(**tx_kwargs)
        self.rx = semantic_rx(output_path=str(tmp_path / "rx_{image_id}.png"), timeout_s=0.3)
        self.images = blocks.message_debug()
        self.info = blocks.message_debug()
        if drop is None:
            self.tb.msg_connect((self.tx, "pdus"), (self.rx, "pdus"))
        else:
            self.filter = PduFilter(drop)
            self.tb.msg_connect((self.tx, "pdus"), (self.filter, "in"))
            self.tb.msg_connect((self.filter, "out"), (self.rx, "pdus"))
        self.tb.msg_connect((self.rx, "image"), (self.images, "store"))
        self.tb.msg_connect((self.tx, "info"), (self.info, "store"))

    def __enter__(self):
        self.tb.start()
        return self

    def __exit__(self, *exc):
        self.tb.stop()
        self.tb.wait()


class PduFilter(gr.basic_block):
    """Drops the PDUs whose running index (0, 1, ...) ``drop`` says to: a lossy link."""

    def __init__(self, drop):
        gr.basic_block.__init__(self, "pdu_filter", None, None)
        self.drop, self.count = drop, 0
        self.message_port_register_in(pmt.intern("in"))
        self.message_port_register_out(pmt.intern("out"))
        self.set_msg_handler(pmt.intern("in"), self.handle)

    def handle(self, msg):
        if not self.drop(self.count):
            self.message_port_pub(pmt.intern("out"), msg)
        self.count += 1


def test_image_path_parameter_round_trip(tmp_path):
    with Link(tmp_path, image_path=PHOTO) as link:
        assert link.rx.wait_for_images(1, timeout_s=10)
        assert wait_until(lambda: link.images.num_messages() == 1)
    meta, png = from_pdu(link.images.get_message(0))
    assert meta["image_id"] == 0 and meta["tiles_received"] == meta["tiles_expected"] > 0
    written = load_image(tmp_path / "rx_0.png")
    assert written.shape == load_image(PHOTO).shape
    np.testing.assert_array_equal(load_image(png), written)
    assert link.rx.stats["frames_complete"] == 1


def test_message_inputs_path_symbol_and_file_bytes(tmp_path):
    with Link(tmp_path) as link:
        link.tx._post(pmt.intern("in"), pmt.intern(PHOTO))
        link.tx._post(pmt.intern("in"), to_pdu(open(PHOTO, "rb").read()))
        link.tx._post(pmt.intern("in"), to_pdu(b"", {"path": PHOTO}))
        assert link.rx.wait_for_images(3, timeout_s=20)
    assert sorted(i for i, _ in link.rx.reconstructions) == [0, 1, 2]


def test_corrupt_pdus_are_counted_and_dropped(tmp_path):
    with Link(tmp_path) as link:
        for bad in (pmt.intern("not a pdu"), pmt.PMT_NIL, to_pdu(b"\x01\x02\x03"), to_pdu(bytes(500))):
            link.rx._post(pmt.intern("pdus"), bad)
        link.tx.send(PHOTO)
        assert link.rx.wait_for_images(1, timeout_s=10)
    assert link.rx.stats["pdus_dropped"] == 4
    assert link.rx.stats["frames_complete"] == 1


def test_bad_image_is_reported_and_the_flowgraph_goes_on(tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(PHOTO, "rb").read()[:2000])
    with Link(tmp_path) as link:
        link.tx.send(str(tmp_path / "missing.png"))
        link.tx.send(str(truncated))
        link.tx.send(PHOTO)
        assert link.rx.wait_for_images(1, timeout_s=10)
        assert wait_until(lambda: link.info.num_messages() == 3)
    assert link.tx.errors == 2
    errors = [pmt.to_python(link.info.get_message(i)).get("error", "") for i in range(3)]
    assert any("no such file" in e for e in errors)
    assert any("not a readable image" in e for e in errors)


def test_lost_pdus_still_give_an_image_with_generated_parts(tmp_path):
    # PDU 0 and 1 are the two header copies; drop every third PDU after them.
    with Link(tmp_path, drop=lambda i: i >= 2 and i % 3 == 0, image_path=PHOTO) as link:
        assert link.rx.wait_for_images(1, timeout_s=10)
    recon = link.rx.reconstructions[0][1]
    assert 0 < recon.generated_share < 1
    assert link.rx.stats["frames_partial"] == 1


def test_lost_header_drops_the_frame_counted(tmp_path):
    with Link(tmp_path, drop=lambda i: i < 2, image_path=PHOTO) as link:
        assert wait_until(lambda: link.rx.stats["frames_without_header"] == 1)
    assert link.rx.images_out == 0


@pytest.mark.parametrize("image_id", [0xFFFF])
def test_image_ids_wrap(tmp_path, image_id):
    with Link(tmp_path, first_image_id=image_id) as link:
        link.tx.send(PHOTO)
        link.tx.send(PHOTO)
        assert link.rx.wait_for_images(2, timeout_s=20)
    assert sorted(i for i, _ in link.rx.reconstructions) == [0, 0xFFFF]
