"""Per-segment MCS and key quality for one frame, from the SNR, a symbol budget and the PER table.

Unequal protection: the header, text and sketch PDUs (without them nothing, or no layout or background, is
drawn) share one "protected" MCS; the key tiles get their own, no more robust than it. For every such pair
the largest key quality level whose frame fits the budget is found by bisection (bytes grow with the
level), and the pair with the largest value wins, the expected payload bytes that arrive usable:

    P(a header copy arrives) x (header bytes + sum over the other segments of P(it arrives) x its bytes)

where a PDU of ``n`` bytes on MCS ``m`` arrives with 1 - PER(m, n, snr), and the sketch when one of its
copies does. Why this value: without the header nothing is drawn, so it gates everything; a lost text or
sketch costs the background, a lost key PDU only its tiles (they are generated instead); and, over a given
region, key quality grows with the coded bytes that arrive, so expected arriving bytes rank a slow clean
MCS at a low level against a fast lossy one at a higher level. Ties go to the more robust pair. The
one-MCS frames that ``semcom eval`` scores for ``ours`` are among the candidates (pairs of equal rows). The
same value ranks a frame without key tiles (``plan_protected_only``) against the best keyed one
(``better_plan``): where every MCS that fits the keyed frame is lost at the SNR, header, text and sketch alone
on a robust MCS are worth more.

With a ``KeyQuality`` (what the receiver shows in the key region, scored at the sender, which holds the
original and can decode its own frame), the value is instead the expected key-region score:

    P(header) x (d x score(level) + (1 - d) x lost) + (1 - P(header)) x score(frame lost)
    lost = b x score(tiles lost) + (1 - b) x score(background lost)

with ``d`` the expected share of key payload bytes that arrive and ``b`` the probability that the text and the
sketch both arrive (a copy of each): tiles that do not arrive are generated from them, and without them from
the header alone. Bytes are a poor stand-in where a fast key MCS loses most tiles: a lossy frame at a high
level can then be worth less than a clean one at a low level, which the byte count cannot see. And without
``b`` a protected MCS that loses the sketch looks as good as one that keeps it (a 486-byte sketch on
16qam-r12 at 12 dB, PER 0.87: coffee's key SSIM fell from 0.57 to 0.16 on the plan that ignored it).

Symbols always come from ``semcom.radio.packet.channel_symbols_for`` per PDU at its MCS. This module
imports the radio layer, so it lives under ``semcom.radio``, not ``semcom.codec``; the level bisection is
``ours``' own (``semcom.codec.rate.largest_fitting``), so both fit a frame to a budget the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from semcom.codec.frame import Segment, parse_pdu
from semcom.codec.rate import largest_fitting
from semcom.radio.mcs import MCS_TABLE, Mcs

PROTECTED_SEGMENTS = frozenset({Segment.HEADER, Segment.TEXT, Segment.SKETCH})
NEGLIGIBLE = 1e-3           # value differences below this are ties (bytes, or a key-region score like SSIM)


@dataclass
class KeyQuality:
    """The key-region score (higher is better, e.g. SSIM) of what the receiver shows, per outcome."""

    at_level: Callable[[int], float]      # every PDU received, key quality ``level``
    tiles_lost: float                     # header, text and sketch received, no key tile
    frame_lost: float                     # no header copy received: nothing is drawn
    background_lost: float | None = None  # the header alone received; None: as tiles_lost (text and sketch
    #                                       assumed to arrive)


def channel_symbols(pdus: list[bytes], mcs_per_pdu: list[Mcs]) -> int:
    """Complex channel symbols of ``pdus[i]`` sent on ``mcs_per_pdu[i]``, every overhead included."""
    from semcom.radio.packet import channel_symbols_for

    return sum(channel_symbols_for(len(p), m.modulation, m.fec_code) for p, m in zip(pdus, mcs_per_pdu))


@dataclass
class FramePlan:
    """The chosen frame: ``pdus[i]`` goes on ``mcs[i]``; ``level`` is the key quality (0: no key tiles)."""

    pdus: list[bytes]
    mcs: list[Mcs]
    level: int
    symbols: int
    value: float                # expected usable payload bytes, or key-region score (module docstring)
    protected_mcs: Mcs
    key_mcs: Mcs | None

    def summary(self) -> str:
        """What was chosen, for a CSV column: e.g. ``hdr bpsk-r14, key qpsk-r34``."""
        key = f", key {self.key_mcs.name}" if self.key_mcs is not None else ""
        return f"hdr {self.protected_mcs.name}{key}"


def usable_bytes(pdus: list[bytes], mcs: list[Mcs], snr_db: float, per_table) -> float:
    """The value the planner maximises (module docstring): expected payload bytes that arrive usable."""
    copies_lost: dict[tuple[Segment, int], float] = {}      # per (segment, index): P(every copy lost)
    payload_bytes: dict[tuple[Segment, int], int] = {}
    for pdu, m in zip(pdus, mcs):
        parsed = parse_pdu(pdu)
        part = (parsed.segment, parsed.index)
        copies_lost[part] = copies_lost.get(part, 1.0) * float(per_table.packet_error_rate(m.name, len(pdu), snr_db))
        payload_bytes[part] = len(parsed.payload)
    header = (Segment.HEADER, 0)
    if header not in copies_lost:
        return 0.0
    arrives = sum((1.0 - copies_lost[part]) * n for part, n in payload_bytes.items() if part != header)
    return (1.0 - copies_lost[header]) * (payload_bytes[header] + arrives)


def _arrival(pdus: list[bytes], mcs: list[Mcs], snr_db: float, per_table):
    """(P(a header copy arrives), expected share of key payload bytes that arrive, P(a copy of every text and
    sketch PDU arrives)) of a planned frame."""
    header_lost, key_bytes, key_arrives = 1.0, 0, 0.0
    background_lost: dict[tuple[Segment, int], float] = {}     # per text/sketch PDU: P(every copy lost)
    for pdu, m in zip(pdus, mcs):
        parsed = parse_pdu(pdu)
        per = float(per_table.packet_error_rate(m.name, len(pdu), snr_db))
        if parsed.segment == Segment.HEADER:
            header_lost *= per
        elif parsed.segment == Segment.KEY:
            key_bytes += len(parsed.payload)
            key_arrives += (1.0 - per) * len(parsed.payload)
        elif parsed.segment in (Segment.TEXT, Segment.SKETCH):
            part = (parsed.segment, parsed.index)
            background_lost[part] = background_lost.get(part, 1.0) * per
    return 1.0 - header_lost, (key_arrives / key_bytes if key_bytes else 0.0), \
        float(np.prod([1.0 - lost for lost in background_lost.values()]))


def expected_key_quality(pdus: list[bytes], mcs: list[Mcs], level: int, snr_db: float, per_table,
                         quality: KeyQuality) -> float:
    """The value the planner maximises when given a ``KeyQuality`` (module docstring); level 0: no key tiles."""
    header, delivered, background = _arrival(pdus, mcs, snr_db, per_table)
    lost = quality.tiles_lost if quality.background_lost is None else \
        background * quality.tiles_lost + (1.0 - background) * quality.background_lost
    received = lost if level == 0 else delivered * quality.at_level(level) + (1.0 - delivered) * lost
    return header * received + (1.0 - header) * quality.frame_lost


def _value(pdus, mcs, level, snr_db, per_table, quality: KeyQuality | None) -> float:
    if quality is None:
        return usable_bytes(pdus, mcs, snr_db, per_table)
    return expected_key_quality(pdus, mcs, level, snr_db, per_table, quality)


def plan_frame(frame_at: Callable[[int], list[bytes]], max_level: int, snr_db: float, budget_symbols: int,
               per_table, mcs_table: tuple[Mcs, ...] = MCS_TABLE,
               quality: KeyQuality | None = None) -> FramePlan | None:
    """The best plan over (protected MCS, key MCS) pairs, or None when level 1 fits on no pair.

    ``frame_at(level)`` gives the frame's PDUs at key quality ``level`` (1..``max_level``, bytes growing
    with it); the caller shrinks the key region when this returns None. ``quality``: rank plans by the
    expected key-region score instead of usable bytes.
    """
    best: FramePlan | None = None
    for p_index, protected in enumerate(mcs_table):
        for key_mcs in mcs_table[p_index:]:
            def fits(level, protected=protected, key_mcs=key_mcs):
                pdus = frame_at(level)
                mcs = [protected if parse_pdu(p).segment in PROTECTED_SEGMENTS else key_mcs for p in pdus]
                symbols = channel_symbols(pdus, mcs)
                return (pdus, mcs, symbols) if symbols <= budget_symbols else None

            found = largest_fitting(1, max_level, fits)
            if found is None:
                continue
            level, (pdus, mcs, symbols) = found
            has_key = any(parse_pdu(p).segment == Segment.KEY for p in pdus)
            plan = FramePlan(pdus, mcs, level, symbols, _value(pdus, mcs, level, snr_db, per_table, quality),
                             protected, key_mcs if has_key else None)
            best = better_plan(best, plan)
    return best


def plan_protected_only(pdus: list[bytes], snr_db: float, budget_symbols: int, per_table,
                        mcs_table: tuple[Mcs, ...] = MCS_TABLE,
                        quality: KeyQuality | None = None) -> FramePlan | None:
    """A frame without key tiles (header, text, sketch): all on the one MCS of the largest value that fits
    (in practice the most robust that fits), or None when none does."""
    best: FramePlan | None = None
    for m in mcs_table:
        mcs = [m] * len(pdus)
        symbols = channel_symbols(pdus, mcs)
        if symbols <= budget_symbols:
            value = _value(pdus, mcs, 0, snr_db, per_table, quality)
            best = better_plan(best, FramePlan(pdus, mcs, 0, symbols, value, m, None))
    return best


def better_plan(best: FramePlan | None, candidate: FramePlan | None) -> FramePlan | None:
    """``candidate`` only when clearly better than ``best`` (so ties stay with the plan tried first: the more
    robust MCS, the text-only frame)."""
    if candidate is None or best is None:
        return best or candidate
    return candidate if candidate.value > best.value + NEGLIGIBLE else best


# The rule without a symbol budget (semantic_tx with adapt on, fed the receiver's SNR estimates): a faster
# MCS gains no quality there, only air time, so the key tiles take the fastest MCS whose 1000-byte PDUs
# keep a PER of at most 1%, and header, text and sketch the next more robust row of the table: without
# them nothing or no background is drawn, and they are a small part of the frame (chelsea: 1.6 of 14.8 KB),
# so the margin costs little air time. (A stricter PER target for them cannot be read off the table: 0.1%
# is one PDU in its 1000 per point, and the curves are not monotone at that level.) The estimate reads
# within about 1 dB (docs/phy_mcs_header.md, "SNR estimate"), hence the margin.
KEY_TARGET_PER = 0.01
KEY_PDU_BYTES = 1000
ESTIMATE_MARGIN_DB = 1.0


def fastest_mcs_within(snr_db: float, per_table, length: int, target_per: float,
                       mcs_table: tuple[Mcs, ...] = MCS_TABLE) -> Mcs:
    """The fastest MCS whose ``length``-byte PER stays at most ``target_per`` from ``snr_db`` up (the table's
    points above it included: a measured curve dips below a target before it stays there); the most robust
    when none does (it still gets the most through)."""
    def stays_within(m: Mcs) -> bool:
        above = [s for s in per_table.curve(m.name).snr_db if s > snr_db]
        return bool(np.all(per_table.packet_error_rate(m.name, length, np.array([snr_db, *above])) <= target_per))

    fitting = [m for m in mcs_table if stays_within(m)]
    return max(fitting, key=lambda m: m.payload_bits_per_symbol) if fitting else mcs_table[0]


def segment_mcs_for_snr(snr_db: float, per_table, margin_db: float = ESTIMATE_MARGIN_DB,
                        mcs_table: tuple[Mcs, ...] = MCS_TABLE) -> tuple[Mcs, Mcs]:
    """(MCS of header, text and sketch; MCS of the key tiles) for an estimated Es/N0 of ``snr_db``, without a
    symbol budget (the rule above; ``mcs_table`` ordered from the most robust)."""
    key = fastest_mcs_within(snr_db - margin_db, per_table, KEY_PDU_BYTES, KEY_TARGET_PER, mcs_table)
    return mcs_table[max(mcs_table.index(key) - 1, 0)], key
