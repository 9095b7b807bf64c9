"""Hybrid digital-analog: the frame's header, text and sketch as coded BPSK, its key tiles as DeepJSCC analog
symbols, all in analog_tx frames through one channel in one flowgraph.

    image -> SemanticEncoder (no key tiles) -> PDUs -> protected_frames (CRC, CC r=1/4, BPSK) ----+
    key tiles -> DeepJSCC encoder -> symbol frames ------------------------------------------------+
        -> analog_tx -> channel_model -> analog_rx -> copies combined -> Viterbi + CRC -> FrameAssembler
                                                                      -> DeepJSCC decoder ---------+-> SemanticDecoder

Below the digital threshold no MCS carries the key tiles: every key PDU is lost with a large probability
and the receiver generates the object. DeepJSCC degrades gracefully instead (no cliff), so the key tiles go
as analog symbols while header and text, which must arrive whole, stay digital: CRC-checked and coded as
bpsk-r14 is (``semcom.radio.protected_frames``), but framed by the analog PHY, whose preamble and header
are found down to -4 dB where packet_rx acquires nothing below about -1.5 dB. The switch point is read off
the PER table (``digital_key_floor_db``): the SNR from which the most robust MCS carries a 1000-byte key
PDU at ``KEY_TARGET_PER`` or better.

Every frame may go more than once; the receiver combines the copies of a frame by maximum-ratio combining
(weights are the per-frame pilot SNR estimates; the combined SNR is their sum). Header and text go
``header_copies`` / ``text_copies`` times (by default twice, the text once from -1 dB); spare symbols of a
budget buy key-frame copies, and the DeepJSCC encoder is told the SNR of the combination, so a frame sent
twice reads about 3 dB better. On air, round r
of every frame's copies follows round r - 1, so the copies of the header are apart in time. A sketch is
sent only when it fits the budget beside one copy of the key tiles: at the budgets where the hybrid mode
is used it would cost about as much as the whole key region.

Each analog key frame carries ``TILES_PER_FRAME`` tiles in ``key_tile_indices`` order, so the receiver
places them from the frame header's mask. Without the header nothing is drawn.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from gnuradio import blocks, channels, gr

from semcom.codec import jscc
from semcom.codec.frame import FrameAssembler, SemanticFrame, Segment, parse_pdu
from semcom.codec.pipeline import Encoded, PipelineConfig, Reconstruction, SemanticDecoder, SemanticEncoder, key_tile_pixels
from semcom.constants import LOOPBACK_FREQUENCY_OFFSET, LOOPBACK_TIMING_OFFSET
from semcom.radio import analog, packet, protected_frames
from semcom.radio.analog_loopback import TILES_PER_FRAME
from semcom.radio.flowgraph import release, run_until_delivered
from semcom.radio.link_adaptation import KEY_PDU_BYTES, KEY_TARGET_PER
from semcom.radio.mcs import MCS_TABLE
from semcom.radio.pdu import pdu_list_source

MAX_COPIES = 8          # analog copies per frame: beyond this a budget is left unspent (the 8-bit gain is
#                         about 9 dB, past the SNR range the DeepJSCC model was trained on)
DRAIN_S = 1.0           # the run ends once nothing new reached the receiver for this long
TIMEOUT_S = 120.0
TEXT_SINGLE_COPY_FLOOR_DB = -1.0    # 1 dB above the lowest SNR where one copy decoded every time


@dataclass
class HybridLinkConfig:
    """The channel (as ``loopback.LinkConfig``: Es/N0 per channel symbol) and the hybrid frame's choices."""

    snr_db: float = 0.0
    samples_per_symbol: int = 2
    frequency_offset: float = LOOPBACK_FREQUENCY_OFFSET
    timing_offset: float = LOOPBACK_TIMING_OFFSET
    noise_seed: int = 42
    budget_symbols: int = 0     # channel symbols per image (0: no budget, ``copies`` copies)
    copies: int = 1             # analog copies of each key frame without a budget
    # Copies of the header and the text frames, combined at the receiver. One copy of a protected frame
    # decodes in 54 of 54 tries at each of -2, -1, 0 and 1 dB and in 38 of 54 at -3 dB (chelsea's, through this flowgraph:
    # ``python benchmarks/hybrid.py --single-copies --snr-db=-3,-2,-1,0,1 --seeds 3``);
    # two combined read at -3 dB as one at 0 dB. The header, without which nothing is drawn, always goes
    # twice; the text (None) twice below TEXT_SINGLE_COPY_FLOOR_DB and once from there.
    header_copies: int = 2
    text_copies: int | None = None

    def text_copies_at_snr(self) -> int:
        if self.text_copies is not None:
            return self.text_copies
        return 1 if self.snr_db >= TEXT_SINGLE_COPY_FLOOR_DB else 2
    # The key mask in the header, in blocks of this many pixels (the pipeline's default is 8): 16 px blocks
    # halve the header (117 -> 68 bytes on chelsea), which buys key frames that would otherwise be left out.
    mask_block_px: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HybridPlan:
    """What goes on air for one image."""

    encoded: Encoded                   # its frame: header, text and (if it fits) sketch; no key tiles
    pdus: list[bytes]                  # the protected PDUs (header, sketch, text), each once
    pdu_copies: list[int]              # copies of each on air
    fragments: list[tuple[int, np.ndarray]]  # (PDU position, coded symbols) per protected frame, slot order
    tile_indices: list[int]            # key tiles in the order the analog frames carry them
    symbol_frames: list[np.ndarray]    # the analog key frames (TILES_PER_FRAME tiles each)
    copies: list[int]                  # copies of each key frame on air (0: left out of the budget)
    digital_symbols: int               # the protected frames' copies, framing included
    analog_symbols: int                # the key frames' copies, framing included
    sketch_dropped: bool               # the configured sketch did not fit the budget

    @property
    def frame(self) -> SemanticFrame:
        return self.encoded.frame

    @property
    def description(self) -> str:
        """The non-key text before compression."""
        return self.encoded.description

    @property
    def channel_symbols(self) -> int:
        return self.digital_symbols + self.analog_symbols

    def bursts(self) -> list[tuple[int, np.ndarray]]:
        """(analog frame index, symbols) in air order: round r of every frame's copies (protected frames
        first) before round r + 1, so the copies of a frame are apart in time."""
        frames = [(protected_frames.protected_frame_index(slot), f, self.pdu_copies[position])
                  for slot, (position, f) in enumerate(self.fragments)]
        frames += [(i, f, n) for i, (f, n) in enumerate(zip(self.symbol_frames, self.copies))]
        return [(index, f) for round_ in range(max((n for _, _, n in frames), default=0))
                for index, f, n in frames if n > round_]


@dataclass
class HybridResult:
    reconstruction: Reconstruction | None     # None: no header arrived, nothing is drawn
    plan: HybridPlan
    pdus_received: int                        # protected PDUs decoded (each counted once)
    analog_frames_received: int               # key frames, copies included
    rx_counts: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    def report(self) -> dict:
        """The plan and the receive counts, for metrics.json."""
        p = self.plan
        return {"protected": f"bpsk cc r1/{protected_frames.CODE_RATE} in analog frames",
                "pdu_copies": p.pdu_copies, "copies": p.copies, "key_tiles": len(p.tile_indices),
                "digital_symbols": p.digital_symbols, "analog_symbols": p.analog_symbols,
                "channel_symbols": p.channel_symbols, "sketch_sent": p.frame.sketch is not None,
                "sketch_dropped": p.sketch_dropped, "pdus_sent": sum(p.pdu_copies), "pdus_received": self.pdus_received,
                "analog_frames_sent": sum(p.copies), "analog_frames_received": self.analog_frames_received,
                "header_received": self.reconstruction is not None}


class BudgetTooSmall(ValueError):
    """Header and text alone do not fit the symbol budget: nothing of the image can be sent."""


def digital_key_floor_db(per_table, length: int = KEY_PDU_BYTES, target_per: float = KEY_TARGET_PER) -> float:
    """The lowest SNR of the PER table from which the most robust MCS keeps a ``length``-byte PDU at
    ``target_per`` or better (every point above included); below it the key tiles go analog."""
    curve = per_table.curve(MCS_TABLE[0].name)
    snrs = np.sort(np.asarray(curve.snr_db, float))
    within = per_table.packet_error_rate(MCS_TABLE[0].name, length, snrs) <= target_per
    for i in range(len(snrs)):
        if within[i:].all():
            return float(snrs[i])
    return math.inf


def use_hybrid(snr_db: float, per_table) -> bool:
    """The switch rule: analog key tiles below the digital floor."""
    return snr_db < digital_key_floor_db(per_table)


def _analog_groups(n_tiles: int) -> list[range]:
    return [range(i, min(i + TILES_PER_FRAME, n_tiles)) for i in range(0, n_tiles, TILES_PER_FRAME)]


def _copies_within(budget: int, sizes: list[int], importance: list[float]) -> list[int]:
    """Copies per analog frame within ``budget`` symbols: the most important frames first (a frame that
    does not fit is left out, a smaller one may still fit), then second and further copies round-robin
    in the same order, up to MAX_COPIES."""
    copies = [0] * len(sizes)
    order = sorted(range(len(sizes)), key=lambda i: -importance[i])
    for _ in range(MAX_COPIES):
        added = False
        for i in order:
            if sizes[i] <= budget:
                copies[i] += 1
                budget -= sizes[i]
                added = True
        if not added:
            break
    return copies


def _key_pixels(frame: SemanticFrame, key_mask: np.ndarray, index: int) -> int:
    y0, x0, y1, x1 = frame.tile_box(index)
    return int(key_mask[y0:y1, x0:x1].sum())


def _protected_pdus(frame: SemanticFrame, config: PipelineConfig, link: HybridLinkConfig) -> tuple[list[bytes], list[int]]:
    """The frame's header, sketch and text PDUs, each once, and the copies of each."""
    pdus = frame.to_pdus(config.pdu_bytes, header_repeats=1, sketch_repeats=1, text_repeats=1)
    copies = {Segment.HEADER: link.header_copies, Segment.SKETCH: 1, Segment.TEXT: link.text_copies_at_snr()}
    return pdus, [copies[parse_pdu(p).segment] for p in pdus]


def plan_hybrid(image: np.ndarray, link: HybridLinkConfig, config: PipelineConfig | None = None,
                key_mask: np.ndarray | None = None, image_id: int = 0,
                model: jscc.DeepJSCC | None = None) -> HybridPlan:
    """The protected and key frames for ``image``.

    With ``link.budget_symbols``: the sketch goes only if it leaves room for every key frame once;
    frames that do not fit are left out, those with the least key area first (the receiver generates
    their tiles, as if lost); spare symbols buy copies. BudgetTooSmall (a ValueError) when header and text
    alone exceed the budget; ValueError when the config's tiles are not DeepJSCC's.
    """
    config = replace(config or PipelineConfig(), mask_block_px=link.mask_block_px)
    if config.tile_px != jscc.TILE_PX:
        raise ValueError(f"the hybrid mode codes {jscc.TILE_PX} px tiles, config has tile_px {config.tile_px}")
    if min(link.copies, link.header_copies, link.text_copies_at_snr()) < 1 or link.budget_symbols < 0:
        raise ValueError(f"copies {link.copies}, header_copies {link.header_copies}, text_copies "
                         f"{link.text_copies}, budget_symbols {link.budget_symbols}: copies at least 1, budget >= 0")
    encoder = SemanticEncoder(config)
    model = model or jscc.load_model()
    encoded = encoder.encode(image, image_id, key_mask, code_key_tiles=False)
    frame = encoded.frame
    indices = frame.key_tile_indices()
    tiles = [np.pad(t, ((0, jscc.TILE_PX - t.shape[0]), (0, jscc.TILE_PX - t.shape[1]), (0, 0)), mode="edge")
             for t in key_tile_pixels(image, frame)]
    k = jscc.symbols_for(jscc.TILE_PX, jscc.TILE_PX, model.config)
    groups = _analog_groups(len(tiles))
    if len(groups) > protected_frames.PROTECTED_FRAME_BASE:
        raise ValueError(f"{len(tiles)} key tiles need {len(groups)} analog frames: at most "
                         f"{protected_frames.PROTECTED_FRAME_BASE} per image")
    sizes = [analog.channel_symbols_for(k * len(g)) for g in groups]

    def digital(f: SemanticFrame) -> tuple[list[bytes], list[int], int]:
        pdus, pdu_copies = _protected_pdus(f, config, link)
        return pdus, pdu_copies, sum(n * protected_frames.channel_symbols(p) for p, n in zip(pdus, pdu_copies))

    sketch_dropped = False
    pdus, pdu_copies, digital_symbols = digital(frame)
    copies = [link.copies] * len(groups)
    if link.budget_symbols:
        if frame.sketch is not None and digital_symbols + sum(sizes) > link.budget_symbols:
            frame.sketch, sketch_dropped = None, True
            pdus, pdu_copies, digital_symbols = digital(frame)
        if digital_symbols > link.budget_symbols:
            raise BudgetTooSmall(f"budget of {link.budget_symbols} symbols: header and text alone take "
                                 f"{digital_symbols} ({sum(pdu_copies)} protected frames)")
        key = frame.key_mask()
        area = [sum(_key_pixels(frame, key, indices[t]) for t in g) for g in groups]
        copies = _copies_within(link.budget_symbols - digital_symbols, sizes, area)
    frames = []
    for g, n in zip(groups, copies):
        # the encoder is told the SNR the receiver will see after combining the copies
        snr = link.snr_db + 10 * math.log10(max(n, 1))
        frames.append(jscc.encode_tiles([tiles[t] for t in g], snr, model).ravel())
    return HybridPlan(encoded, pdus, pdu_copies, protected_frames.encode_pdus(pdus), indices, frames, copies,
                      digital_symbols, sum(n * size for n, size in zip(copies, sizes)), sketch_dropped)


class hybrid_flowgraph(gr.top_block):
    """Every frame of a plan (protected and key, copies included) through analog_tx, one channel_model and
    analog_rx."""

    def __init__(self, plan: HybridPlan, link: HybridLinkConfig):
        gr.top_block.__init__(self, "semcom hybrid loopback")
        sps = link.samples_per_symbol
        analog_id = plan.frame.image_id & 0xFF
        self.source = pdu_list_source([analog.symbols_pdu(f, {"image_id": analog_id, "frame_index": i})
                                       for i, f in plan.bursts()])
        self.analog_tx = analog.analog_tx(sps)
        self.channel = channels.channel_model(
            noise_voltage=packet.noise_voltage_for_snr(link.snr_db, "bpsk", sps),
            frequency_offset=link.frequency_offset, epsilon=link.timing_offset, taps=[1.0 + 0j],
            noise_seed=link.noise_seed, block_tags=False)
        self.analog_rx = analog.analog_rx(sps)
        self.sink = blocks.message_debug()
        self.msg_connect(self.source, "out", self.analog_tx, "in")
        self.connect(self.analog_tx, self.channel, self.analog_rx)
        self.msg_connect(self.analog_rx, "out", self.sink, "store")

    def progress(self) -> tuple:
        return (self.sink.num_messages(), tuple(self.analog_rx.counts.values()))


def decode_analog_tiles(received: list[tuple[np.ndarray, dict]], frame: SemanticFrame, image_id: int,
                        model: jscc.DeepJSCC) -> tuple[dict[int, np.ndarray], int]:
    """Analog frames of ``image_id`` -> {key tile index: pixels}, placed by ``frame``'s mask, and the count of
    frames refused (wrong length: e.g. a header CRC collision; the length is never trusted)."""
    indices = frame.key_tile_indices()
    groups = _analog_groups(len(indices))
    k = jscc.symbols_for(jscc.TILE_PX, jscc.TILE_PX, model.config)
    by_index: dict[int, list] = {}
    refused = 0
    for symbols, meta in received:
        index = int(meta.get("frame_index", -1))
        if meta.get("image_id") != image_id & 0xFF or not 0 <= index < len(groups) \
                or len(symbols) != k * len(groups[index]):
            refused += 1
            continue
        by_index.setdefault(index, []).append((symbols, meta))
    pixels: dict[int, np.ndarray] = {}
    for index, copies in by_index.items():
        combined, snr_db = analog.combine_copies(copies)
        group = groups[index]
        for pos, tile in zip(group, jscc.decode_tiles(combined.reshape(len(group), k), snr_db,
                                                      jscc.TILE_PX, jscc.TILE_PX, model)):
            pixels[indices[pos]] = tile
    return pixels, refused


def send_plan(plan: HybridPlan, link: HybridLinkConfig, timeout_s: float = TIMEOUT_S) -> tuple[list, dict]:
    """Every burst of ``plan`` through the hybrid flowgraph -> (what analog_rx delivered as (symbols, meta),
    its counts)."""
    tb = hybrid_flowgraph(plan, link)
    run_until_delivered(tb, tb.sink.num_messages, len(plan.bursts()), tb.progress, timeout_s, DRAIN_S)
    received = []
    for i in range(tb.sink.num_messages()):
        meta, symbols = analog.symbols_from_pdu(tb.sink.get_message(i))
        received.append((symbols, meta))
    counts = {"analog": tb.analog_rx.counts}
    release(tb)
    return received, counts


def decode_received(received: list[tuple[np.ndarray, dict]], image_id: int, decoder: SemanticDecoder,
                    model: jscc.DeepJSCC) -> tuple[Reconstruction | None, dict]:
    """The receiver: analog frames of ``image_id`` (analog headers carry its low 8 bits, which is all that is
    compared) -> the reconstruction (None without a header) and counts
    (``protected``: protected_frames.decode_all's; ``pdus_received``; ``key_frames_received``, copies
    included; ``analog_refused``: key frames of a wrong length or index)."""
    pdus, protected = protected_frames.decode_all(received, image_id)
    key_received = [(s, m) for s, m in received if m.get("image_id") == image_id & 0xFF
                    and not protected_frames.is_protected(int(m.get("frame_index", 0)))]
    counts = {"protected": protected, "pdus_received": len(pdus), "key_frames_received": len(key_received)}
    assembler = FrameAssembler(max_pdu_bytes=protected_frames.MAX_PDU_BYTES)
    frames = [f for pdu in pdus for f in assembler.push(pdu)] + assembler.flush_all()
    frame = next((f for f in frames if f.image_id & 0xFF == image_id & 0xFF), None)
    if frame is None:
        return None, counts
    pixels, counts["analog_refused"] = decode_analog_tiles(key_received, frame, image_id, model)
    return decoder.decode(frame, key_pixels=pixels), counts


def run_hybrid_loopback(image: np.ndarray, link: HybridLinkConfig | None = None,
                        config: PipelineConfig | None = None, key_mask: np.ndarray | None = None,
                        image_id: int = 0, timeout_s: float = TIMEOUT_S) -> HybridResult:
    """One image through the hybrid flowgraph; see the module docstring."""
    link = link or HybridLinkConfig()
    config = config or PipelineConfig()
    model = jscc.load_model()
    started = time.monotonic()
    plan = plan_hybrid(image, link, config, key_mask, image_id, model=model)
    received, counts = send_plan(plan, link, timeout_s)
    recon, decoded = decode_received(received, image_id, SemanticDecoder(config), model)
    counts.update(decoded)
    return HybridResult(recon, plan, counts["pdus_received"], counts["key_frames_received"], counts,
                        time.monotonic() - started)
