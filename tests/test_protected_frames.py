"""Protected PDUs (header, text, sketch) as coded BPSK in analog frames: coding, combining, fragments, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semcom.radio import analog, protected_frames as pf


def _received(symbols: np.ndarray, slot: int, snr_db: float, rng, image_id: int = 0) -> tuple[np.ndarray, dict]:
    """What analog_rx delivers for one frame: equalised symbols with complex noise of variance 1/SNR."""
    sigma = math.sqrt(0.5 / 10 ** (snr_db / 10))
    noise = (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)) * sigma
    return (symbols + noise).astype(np.complex64), {"image_id": image_id, "frame_index": pf.PROTECTED_FRAME_BASE + slot,
                                                     "snr_db_est": snr_db}


def _send(pdus: list[bytes], snr_db: float, rng, copies: int = 1) -> list[tuple[np.ndarray, dict]]:
    return [_received(symbols, slot, snr_db, rng) for slot, (_, symbols) in enumerate(pf.encode_pdus(pdus))
            for _ in range(copies)]


@pytest.mark.parametrize("length", [1, 68, pf.MAX_BLOCK_BYTES - 1, pf.MAX_BLOCK_BYTES, 600, pf.MAX_PDU_BYTES])
def test_pdus_of_every_length_round_trip_in_fragments(length):
    rng = np.random.default_rng(length)
    pdu = bytes(rng.integers(0, 256, length, dtype=np.uint8))
    fragments = pf.fragments(pdu)
    assert len(fragments) == math.ceil(length / (pf.MAX_BLOCK_BYTES - 1))
    assert all(len(f) <= pf.MAX_BLOCK_BYTES for f in fragments)
    frames = pf.encode_pdus([pdu, b"second"])
    assert all(len(s) <= analog.MAX_FRAME_SYMBOLS and np.allclose(np.abs(s), 1) for _, s in frames)
    assert pf.channel_symbols(pdu) == sum(analog.channel_symbols_for(len(s)) for p, s in frames if p == 0)
    assert pf.decode_all(_send([pdu, b"second"], 10.0, rng), 0) == ([pdu, b"second"], {"failed": 0, "incomplete": 0})


def test_two_copies_combined_decode_where_one_does_not():
    rng = np.random.default_rng(5)
    pdu = bytes(rng.integers(0, 256, 68, dtype=np.uint8))
    one = sum(pf.decode_all(_send([pdu], -5.0, rng), 0)[0] == [pdu] for _ in range(20))
    two = sum(pf.decode_all(_send([pdu], -5.0, rng, copies=2), 0)[0] == [pdu] for _ in range(20))
    assert one <= 4 and two >= 18, (one, two)
    # and one copy reads at -2 dB (the code alone: rate 1/4 at Eb/N0 4 dB)
    assert sum(pf.decode_all(_send([pdu], -2.0, rng), 0)[0] == [pdu] for _ in range(20)) >= 19


def test_noise_wrong_lengths_and_forged_fragments_are_counted_not_delivered():
    rng = np.random.default_rng(1)
    pdu = bytes(range(200))
    symbols = pf.encode_block(pf.fragments(pdu)[0])
    noise = (rng.standard_normal(symbols.size) + 1j * rng.standard_normal(symbols.size)).astype(np.complex64)
    meta = {"image_id": 0, "frame_index": pf.PROTECTED_FRAME_BASE, "snr_db_est": 10.0}
    assert pf.decode_block([(noise, meta)]) is None
    assert pf.decode_block([(symbols[:-1], meta)]) is None                     # no block codes to this length
    assert pf.decode_block([(symbols, meta), (symbols[:-32], meta)]) is None   # copies of different lengths
    assert pf.decode_block([(symbols[:32], meta)]) is None                     # shorter than a CRC
    forged = pf.encode_block(bytes([0x01]) + b"x")                             # fragment 1 of 1
    two = pf.fragments(bytes(600))
    received = [(noise, meta), (forged, {**meta, "frame_index": pf.PROTECTED_FRAME_BASE + 1}),
                (pf.encode_block(two[0]), {**meta, "frame_index": pf.PROTECTED_FRAME_BASE + 2}),
                (pf.encode_block(two[2]), {**meta, "frame_index": pf.PROTECTED_FRAME_BASE + 4}),
                (symbols, {**meta, "image_id": 9}), (symbols, {**meta, "frame_index": 3})]
    assert pf.decode_all(received, 0) == ([], {"failed": 2, "incomplete": 1})


def test_bad_pdus_raise():
    for bad in (b"", bytes(pf.MAX_PDU_BYTES + 1)):
        with pytest.raises(ValueError, match="protected PDU holds"):
            pf.fragments(bad)
    with pytest.raises(ValueError, match="at most 64 per image"):
        pf.encode_pdus([bytes(pf.MAX_PDU_BYTES)] * 5)        # 80 fragments
    with pytest.raises(ValueError, match="block holds"):
        pf.encode_block(bytes(pf.MAX_BLOCK_BYTES + 1))


def test_equal_bytes_do_not_go_out_as_a_constant():
    symbols = pf.encode_block(bytes(200)).real
    runs = np.diff(np.flatnonzero(np.diff(symbols) != 0))
    assert runs.max() < 24 and abs(symbols.mean()) < 0.05
