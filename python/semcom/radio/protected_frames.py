"""Header, text and sketch PDUs as coded BPSK inside analog frames (the hybrid mode's digital part).

    PDU + CRC-32 -> gr-fec CC (K=7, r=1/2, packet.py's polynomials, tail-biting) -> the coded block twice
    (rate 1/4, as bpsk-r14) -> BPSK, PN-scrambled -> data symbols of one analog_tx frame

Why not packet_tx: packet_rx finds its bursts by a 64-bit access code, and below about -1.5 dB Es/N0 it
acquires none (``tests/test_hybrid.py``), while analog_rx's 127-chip preamble and its 576-symbol,
Chase-decoded header still read at -4 dB (``tests/test_jscc.py``). The key tiles already travel in
analog frames there, so the PDUs that must arrive whole ride the same PHY and one receiver does all.

A PDU longer than one frame holds (``analog.MAX_FRAME_SYMBOLS`` data symbols: ``MAX_BLOCK_BYTES``) goes
as fragments, each one frame whose coded block starts with a byte (fragment count - 1) << 4 | fragment
index. Frame indices from ``PROTECTED_FRAME_BASE`` up name an image's fragments in order (``slot``); the
copies of a fragment carry the same index, so the receiver combines them (maximum-ratio, as the key frames'
copies) before one Viterbi decoder, and the CRC decides. A PDU is complete when all its fragments are.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
from gnuradio import blocks, fec, gr

from semcom.radio import analog, packet

PROTECTED_FRAME_BASE = 0xC0          # frame indices 192..255: protected fragments; 0..191: key frames
BLOCK_REPEATS = 2                    # the coded block sent twice: rate 1/4
CODE_RATE = packet.CC_RATE * BLOCK_REPEATS
CRC = struct.Struct(">I")
MAX_BLOCK_BYTES = analog.MAX_FRAME_SYMBOLS // (8 * CODE_RATE) - CRC.size     # 252, the fragment byte included
MAX_FRAGMENTS = 16
MAX_PDU_BYTES = MAX_FRAGMENTS * (MAX_BLOCK_BYTES - 1)                           # 4016
# LLRs are mapped to gr-fec's soft range [-1, 1] (positive: bit 1) by this divisor and clipped: a
# Viterbi decoder only compares sums, and at the SNRs of this mode (-4..2 dB) |LLR| rarely exceeds it.
LLR_FULL_SCALE = 20.0
# Scrambles the coded symbols, so a run of equal bits does not leave the clock recovery without
# transitions; fixed, known to both ends.
SCRAMBLE = (1 - 2 * np.random.default_rng(0xC0DE).integers(0, 2, analog.MAX_FRAME_SYMBOLS)).astype(np.float32)


def protected_frame_index(slot: int) -> int:
    """The analog frame index of an image's ``slot``-th protected fragment."""
    if not 0 <= slot <= 0xFF - PROTECTED_FRAME_BASE:
        raise ValueError(f"protected fragment {slot}: at most {0x100 - PROTECTED_FRAME_BASE} per image")
    return PROTECTED_FRAME_BASE + slot


def is_protected(frame_index: int) -> bool:
    return frame_index >= PROTECTED_FRAME_BASE


def fragments(pdu: bytes) -> list[bytes]:
    """A PDU -> its coded blocks' contents: the fragment byte, then at most MAX_BLOCK_BYTES - 1 PDU bytes."""
    if not 1 <= len(pdu) <= MAX_PDU_BYTES:
        raise ValueError(f"a protected PDU holds 1..{MAX_PDU_BYTES} bytes, got {len(pdu)}")
    chunk = MAX_BLOCK_BYTES - 1
    pieces = [pdu[i:i + chunk] for i in range(0, len(pdu), chunk)]
    return [bytes([(len(pieces) - 1) << 4 | i]) + piece for i, piece in enumerate(pieces)]


def block_symbols(block_bytes: int) -> int:
    """Data symbols of one protected frame whose block holds ``block_bytes`` (fragment byte included)."""
    return (block_bytes + CRC.size) * 8 * CODE_RATE


def channel_symbols(pdu: bytes) -> int:
    """Channel symbols one copy of ``pdu`` occupies on air (every fragment, analog framing included)."""
    return sum(analog.channel_symbols_for(block_symbols(len(f))) for f in fragments(pdu))


def _run_fec(coder, items: np.ndarray) -> np.ndarray:
    """Bytes (one bit or one quantised soft bit each) through gr-fec's stream encoder/decoder block."""
    tb = gr.top_block("semcom protected fec")
    source = blocks.vector_source_b(items.tolist())
    sink = blocks.vector_sink_b()
    block = fec.encoder(coder, gr.sizeof_char, gr.sizeof_char) if isinstance(coder, fec.generic_encoder) \
        else fec.decoder(coder, gr.sizeof_char, gr.sizeof_char)
    tb.connect(source, block, sink)
    tb.run()
    return np.array(sink.data(), np.uint8)


def encode_block(block: bytes) -> np.ndarray:
    """One block -> the data symbols of its frame, (block_symbols(len(block)),) complex64 of unit energy."""
    if not 1 <= len(block) <= MAX_BLOCK_BYTES:
        raise ValueError(f"a protected block holds 1..{MAX_BLOCK_BYTES} bytes, got {len(block)}")
    bits = np.unpackbits(np.frombuffer(block + CRC.pack(zlib.crc32(block)), np.uint8))
    encoder = fec.cc_encoder_make(len(bits), packet.CC_CONSTRAINT_LENGTH, packet.CC_RATE, packet.CC_POLYS, 0,
                                  packet.CC_MODE, False)
    coded = np.tile(_run_fec(encoder, bits), BLOCK_REPEATS)
    return ((1.0 - 2.0 * coded) * SCRAMBLE[:len(coded)]).astype(np.complex64)


def decode_block(copies: list[tuple[np.ndarray, dict]]) -> bytes | None:
    """The received copies of one protected frame (equalised symbols, analog_rx meta) -> its block, or None
    when the combined copies fail the CRC or have a length no block codes to (never trusted)."""
    lengths = {len(symbols) for symbols, _ in copies}
    if len(lengths) != 1:
        return None
    n = lengths.pop()
    n_bits, rest = divmod(n, CODE_RATE)
    if rest or n_bits % 8 or not CRC.size < n_bits // 8 <= MAX_BLOCK_BYTES + CRC.size:
        return None
    combined, snr_db = analog.combine_copies(copies)
    # Equalised BPSK with unit gain and complex noise of variance 1/SNR: LLR = 4 SNR Re(y).
    llr = 4 * 10 ** (snr_db / 10) * (combined.real * SCRAMBLE[:n])
    llr = llr.reshape(BLOCK_REPEATS, -1).sum(axis=0)
    soft = np.clip(-llr / LLR_FULL_SCALE, -1.0, 1.0)          # symbol +1 is bit 0
    decoder = fec.cc_decoder.make(n_bits, packet.CC_CONSTRAINT_LENGTH, packet.CC_RATE, packet.CC_POLYS, 0, -1,
                                  packet.CC_MODE, False)
    # gr-fec's CC decoder reads soft bits as bytes, 128 + 48 x (as fec.extended_decoder converts floats).
    bits = _run_fec(decoder, np.round(128 + 48 * soft).astype(np.uint8))
    if len(bits) != n_bits:
        return None
    data = np.packbits(bits).tobytes()
    block, (crc,) = data[:-CRC.size], CRC.unpack(data[-CRC.size:])
    return block if zlib.crc32(block) == crc else None


def encode_pdus(pdus: list[bytes]) -> list[tuple[int, np.ndarray]]:
    """PDUs -> (PDU position, data symbols) per fragment, in slot order."""
    out = [(position, encode_block(block)) for position, pdu in enumerate(pdus) for block in fragments(pdu)]
    protected_frame_index(len(out) - 1)          # raises when an image has more fragments than slots
    return out


def decode_all(received: list[tuple[np.ndarray, dict]], image_id: int) -> tuple[list[bytes], dict]:
    """Every protected frame of ``image_id`` among ``received`` -> (the complete PDUs in slot order, counts:
    ``failed`` fragments whose combined copies failed the CRC, ``incomplete`` PDUs missing a fragment)."""
    by_slot: dict[int, list] = {}
    for symbols, meta in received:
        index = int(meta.get("frame_index", -1))
        if meta.get("image_id") == image_id & 0xFF and is_protected(index):
            by_slot.setdefault(index - PROTECTED_FRAME_BASE, []).append((symbols, meta))
    pieces: dict[int, dict[int, bytes]] = {}        # first slot of a PDU -> {fragment index: bytes}
    counts: dict[int, int] = {}
    failed = 0
    for slot in sorted(by_slot):
        block = decode_block(by_slot[slot])
        if block is None or len(block) < 2:
            failed += 1
            continue
        count, index = (block[0] >> 4) + 1, block[0] & 0x0F
        if index >= count or slot < index:
            failed += 1
            continue
        first = slot - index
        if counts.setdefault(first, count) != count:
            failed += 1
            continue
        pieces.setdefault(first, {})[index] = block[1:]
    pdus = [b"".join(p[i] for i in range(counts[first])) for first, p in sorted(pieces.items())
            if len(p) == counts[first]]
    return pdus, {"failed": failed, "incomplete": len(pieces) - len(pdus)}
