"""Wire format: round trips, and every kind of damage gives a WireError or a counted drop."""

from __future__ import annotations

import random
import zlib

import numpy as np
import pytest

from semcom.codec.frame import (
    FRAME_CRC,
    FRAME_PREFIX,
    PDU_HEADER,
    PDU_LENGTH,
    FrameAssembler,
    SemanticFrame,
    Segment,
    TileTooLarge,
    WireError,
    parse_pdu,
)
from semcom.constants import HEADER_REPEATS, MAX_IMAGE_SIDE_PX, MAX_SKETCH_BYTES, SKETCH_REPEATS


def make_frame(image_id=7, width=200, height=120, tile_px=32, with_text=True) -> SemanticFrame:
    blocks = np.zeros((-(-height // 8), -(-width // 8)), bool)
    blocks[4:10, 6:18] = True
    frame = SemanticFrame(image_id, width, height, tile_px, 8, 1, 1, blocks,
                          text=b"compressed description" if with_text else None)
    rng = np.random.default_rng(image_id)
    for index in frame.key_tile_indices():
        frame.key_tiles[index] = rng.integers(0, 256, rng.integers(50, 250), dtype=np.uint8).tobytes()
    return frame


def assert_same(a: SemanticFrame, b: SemanticFrame):
    for name in ("image_id", "width", "height", "tile_px", "mask_block_px", "key_codec_id", "text_codec_id", "text",
                 "sketch"):
        assert getattr(a, name) == getattr(b, name), name
    np.testing.assert_array_equal(a.mask_blocks, b.mask_blocks)
    assert a.key_tiles == b.key_tiles


def assemble(pdus, **kwargs):
    assembler = FrameAssembler(**kwargs)
    frames = []
    for pdu in pdus:
        frames += assembler.push(pdu)
    return assembler, frames


def test_bytes_round_trip():
    frame = make_frame()
    assert_same(SemanticFrame.from_bytes(frame.to_bytes()), frame)


def test_pdu_round_trip_and_sizes():
    frame = make_frame()
    pdus = frame.to_pdus(pdu_bytes=300)
    assert all(len(p) <= 300 for p in pdus)
    assembler, frames = assemble(pdus)
    assert len(frames) == 1
    assert_same(frames[0], frame)
    assert assembler.stats.frames_complete == 1
    assert assembler.stats.pdus_duplicate == HEADER_REPEATS - 1


def test_out_of_order_and_duplicates():
    frame = make_frame()
    pdus = frame.to_pdus(pdu_bytes=300) * 2
    random.Random(1).shuffle(pdus)
    _, frames = assemble(pdus)
    assert len(frames) == 1
    assert_same(frames[0], frame)


def test_interleaved_images():
    a, b = make_frame(image_id=1), make_frame(image_id=2, width=90, height=64)
    pa, pb = a.to_pdus(300), b.to_pdus(300)
    mixed = [p for pair in zip(pa, pb) for p in pair] + pa[len(pb):] + pb[len(pa):]
    _, frames = assemble(mixed)
    by_id = {f.image_id: f for f in frames}
    assert_same(by_id[1], a)
    assert_same(by_id[2], b)


def test_lost_key_pdu_gives_partial_frame_after_timeout():
    frame = make_frame()
    pdus = frame.to_pdus(pdu_bytes=300)
    key_pdus = [p for p in pdus if parse_pdu(p).segment == Segment.KEY]
    lost = key_pdus[1]
    now = [0.0]
    assembler, frames = assemble([p for p in pdus if p != lost], timeout_s=1.0, clock=lambda: now[0])
    assert frames == [] and assembler.open_frames == 1
    now[0] = 2.0
    (partial,) = assembler.flush_expired()
    assert assembler.open_frames == 0
    assert partial.missing_tiles, "the tiles of the lost PDU must be reported missing"
    assert set(partial.key_tiles) | set(partial.missing_tiles) == set(frame.key_tile_indices())
    for index, data in partial.key_tiles.items():
        assert data == frame.key_tiles[index]
    assert assembler.stats.frames_partial == 1


def test_frame_without_header_is_counted_and_dropped():
    frame = make_frame()
    pdus = [p for p in frame.to_pdus(300) if parse_pdu(p).segment != Segment.HEADER]
    assembler, frames = assemble(pdus)
    assert frames == [] and assembler.flush_all() == []
    assert assembler.stats.frames_without_header == 1


def test_late_duplicates_of_a_finished_frame_are_ignored():
    pdus = make_frame().to_pdus(300)
    assembler, frames = assemble(pdus + pdus[:3])
    assert len(frames) == 1 and assembler.open_frames == 0


def test_every_truncation_of_frame_bytes_is_refused():
    data = make_frame().to_bytes()
    for cut in range(len(data)):
        with pytest.raises(WireError):
            SemanticFrame.from_bytes(data[:cut])


def test_bit_flips_in_frame_bytes_are_refused():
    data = bytearray(make_frame().to_bytes())
    rng = random.Random(3)
    for _ in range(300):
        flipped = bytearray(data)
        position = rng.randrange(len(flipped) * 8)
        flipped[position // 8] ^= 1 << (position % 8)
        with pytest.raises(WireError):
            SemanticFrame.from_bytes(bytes(flipped))


def test_random_pdus_are_dropped_not_raised():
    rng = np.random.default_rng(5)
    assembler = FrameAssembler()
    for _ in range(2000):
        junk = rng.integers(0, 256, rng.integers(0, 64), dtype=np.uint8).tobytes()
        assert assembler.push(junk) == []
    assert assembler.stats.pdus_dropped == 2000


def test_corrupt_fields_behind_a_valid_pdu_header_are_dropped():
    frame = make_frame()
    header_pdu = frame.to_pdus(300)[0]
    fixed = header_pdu[: PDU_HEADER.size]
    # Huge image size, wrong mask length, and a mask that inflates far past its grid.
    huge = fixed + (MAX_IMAGE_SIDE_PX + 1).to_bytes(2, "big") + header_pdu[PDU_HEADER.size + 2:]
    short_mask = header_pdu[:-3]
    bomb_mask = zlib.compress(bytes(10_000_000))
    bomb = fixed + header_pdu[PDU_HEADER.size: PDU_HEADER.size + 9] + len(bomb_mask).to_bytes(2, "big") + bomb_mask
    for bad in (huge, short_mask, bomb):
        assembler = FrameAssembler()
        assert assembler.push(bad) == []
        assert assembler.stats.pdus_dropped == 1, assembler.last_error


def test_key_record_overrunning_its_pdu_is_dropped():
    frame = make_frame()
    key_pdu = next(p for p in frame.to_pdus(300) if parse_pdu(p).segment == Segment.KEY)
    assembler = FrameAssembler()
    assert assembler.push(key_pdu[:-5]) == []
    assert assembler.stats.pdus_dropped == 1


def test_pdu_header_range_checks():
    good = make_frame().to_pdus(300)[0]
    with pytest.raises(WireError, match="magic"):
        parse_pdu(b"XX" + good[2:])
    with pytest.raises(WireError, match="version"):
        parse_pdu(good[:2] + bytes([99]) + good[3:])
    with pytest.raises(WireError, match="out of range"):
        parse_pdu(good[:7] + (5).to_bytes(2, "big") + (5).to_bytes(2, "big") + good[11:])


def test_oversized_tile_raises_tile_too_large():
    frame = make_frame()
    frame.key_tiles[frame.key_tile_indices()[0]] = bytes(2000)
    with pytest.raises(TileTooLarge):
        frame.to_pdus(pdu_bytes=1000)


def test_geometry_is_validated():
    with pytest.raises(WireError):
        SemanticFrame(1, 0, 10, 32, 8, 1, 1, np.zeros((2, 0), bool))
    with pytest.raises(WireError, match="tile size"):
        SemanticFrame(1, 16, 16, 48, 8, 1, 1, np.zeros((2, 2), bool))
    with pytest.raises(WireError, match="mask grid"):
        SemanticFrame(1, 16, 16, 32, 8, 1, 1, np.zeros((3, 2), bool))


def test_tiles_cover_the_coded_mask():
    frame = make_frame()
    covered = np.zeros((frame.height, frame.width), bool)
    for index in frame.key_tile_indices():
        y0, x0, y1, x1 = frame.tile_box(index)
        covered[y0:y1, x0:x1] = True
    coded = frame.coded_mask()
    assert coded[frame.key_mask()].all(), "the coded mask contains the key mask"
    assert covered[coded].all(), "every coded pixel lies in a sent tile"
    assert coded.sum() > frame.key_mask().sum()


def test_header_beyond_the_pixel_budget_is_dropped():
    frame = make_frame()
    header_pdu = frame.to_pdus(300)[0]
    side = (8000).to_bytes(2, "big")      # each side within the limit, the product far beyond it
    forged = header_pdu[: PDU_HEADER.size] + side + side + header_pdu[PDU_HEADER.size + 4:]
    assembler = FrameAssembler()
    assert assembler.push(forged) == []
    assert assembler.stats.pdus_dropped == 1 and "exceeds the limit" in assembler.last_error


# --- SKETCH segment (wire version 2) ------------------------------------------------------------------
def sketched(frame: SemanticFrame, sketch: bytes = b"\x01\x00\x08\x00\x05" + bytes(range(40))) -> SemanticFrame:
    frame.sketch = sketch
    return frame


def as_version_1(pdu: bytes) -> bytes:
    return pdu[:2] + bytes([1]) + pdu[3:]


def test_sketch_round_trips_through_bytes_and_pdus():
    frame = sketched(make_frame())
    again = SemanticFrame.from_bytes(frame.to_bytes())
    assert again.sketch == frame.sketch and not again.sketch_lost
    pdus = frame.to_pdus(pdu_bytes=300)
    sketch_pdus = [p for p in pdus if parse_pdu(p).segment == Segment.SKETCH]
    assert len(sketch_pdus) == SKETCH_REPEATS, "the sketch is protected like the header: sent twice"
    assembler, (received,) = assemble(pdus)
    assert_same(received, frame)
    assert received.sketch == frame.sketch and assembler.stats.frames_complete == 1


def test_lost_sketch_is_reported_and_the_rest_still_arrives():
    frame = sketched(make_frame())
    kept = [p for p in frame.to_pdus(300) if parse_pdu(p).segment != Segment.SKETCH]
    now = [0.0]
    assembler, frames = assemble(kept, timeout_s=1.0, clock=lambda: now[0])
    assert frames == [], "a frame whose header announced a sketch waits for it"
    now[0] = 2.0
    (partial,) = assembler.flush_expired()
    assert partial.sketch is None and partial.sketch_lost
    assert partial.text == frame.text and partial.key_tiles == frame.key_tiles
    assert assembler.stats.frames_partial == 1


def test_one_sketch_copy_is_enough():
    frame = sketched(make_frame())
    pdus = frame.to_pdus(300)
    first = next(i for i, p in enumerate(pdus) if parse_pdu(p).segment == Segment.SKETCH)
    _, (received,) = assemble(pdus[:first] + pdus[first + 1:])
    assert received.sketch == frame.sketch and not received.sketch_lost


def test_version_1_pdus_and_frames_without_a_sketch_still_decode():
    frame = make_frame()
    _, (received,) = assemble([as_version_1(p) for p in frame.to_pdus(300)])
    assert_same(received, frame)
    assert received.sketch is None and not received.sketch_lost
    body = frame.to_bytes()[: -FRAME_CRC.size]
    prefix, pdu_list = body[: FRAME_PREFIX.size], bytearray(body[FRAME_PREFIX.size:])
    offset = 0
    while offset < len(pdu_list):      # rewrite each PDU's version byte, then the frame's, then its CRC
        (length,) = PDU_LENGTH.unpack_from(pdu_list, offset)
        pdu_list[offset + PDU_LENGTH.size + 2] = 1
        offset += PDU_LENGTH.size + length
    old = prefix[:4] + bytes([1]) + prefix[5:] + bytes(pdu_list)
    assert_same(SemanticFrame.from_bytes(old + FRAME_CRC.pack(zlib.crc32(old))), frame)


def test_a_version_1_pdu_cannot_carry_a_sketch():
    sketch_pdu = next(p for p in sketched(make_frame()).to_pdus(300) if parse_pdu(p).segment == Segment.SKETCH)
    with pytest.raises(WireError, match="unknown segment"):
        parse_pdu(as_version_1(sketch_pdu))


def test_oversized_sketch_is_refused_both_ways():
    with pytest.raises(WireError, match="sketch"):
        sketched(make_frame(), bytes(400)).to_pdus(pdu_bytes=300)
    forged = PDU_HEADER.pack(b"SM", 2, 0, 1, Segment.SKETCH, 0, 1) + bytes(MAX_SKETCH_BYTES + 1)
    assembler = FrameAssembler()
    assert assembler.push(forged) == [] and assembler.stats.pdus_dropped == 1
