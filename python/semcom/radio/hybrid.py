"""Hybrid digital-analog: the frame's header, text and sketch as packets on the most robust MCS, its key
tiles as DeepJSCC analog symbols, both through one channel in one flowgraph.

    image -> SemanticEncoder (no key tiles) -> PDUs -> packet_tx (protected MCS) --+
    key tiles -> DeepJSCC encoder -> symbol frames (x copies) -> analog_tx ---------+-> bursts_to_stream
        -> channel_model -> packet_rx -> FrameAssembler ---------------------------+
                         -> analog_rx -> copies combined -> DeepJSCC decoder -------+-> SemanticDecoder

Below the digital threshold no MCS carries the key tiles: every key PDU is lost with a large probability
and the receiver generates the object. DeepJSCC degrades gracefully instead (no cliff), so the key tiles go
as analog symbols while header and text, which must arrive whole, stay digital. The switch point is read
off the PER table (``digital_key_floor_db``): the SNR from which the most robust MCS carries a 1000-byte
key PDU at ``KEY_TARGET_PER`` or better.

Spare symbols of a budget buy copies of the analog frames. The receiver combines the copies of a frame
by maximum-ratio combining (weights are the per-frame pilot SNR estimates; the combined SNR is their
sum), and the encoder is told the SNR of the combination, so a frame sent twice reads about 3 dB
better. A sketch is sent only when it fits the budget beside one copy of the key tiles: at the budgets
where the hybrid mode is used it would cost about as much as the whole key region.

Each analog frame carries ``TILES_PER_FRAME`` tiles in ``key_tile_indices`` order, so the receiver
places them from the frame header's mask. Without a header copy nothing is drawn.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
from gnuradio import blocks, channels, gr

from semcom.codec import jscc
from semcom.codec.frame import FrameAssembler, SemanticFrame
from semcom.codec.pipeline import PipelineConfig, Reconstruction, SemanticDecoder, SemanticEncoder, key_tile_pixels
from semcom.constants import LOOPBACK_FREQUENCY_OFFSET, LOOPBACK_TIMING_OFFSET
from semcom.radio import analog, packet
from semcom.radio.analog_loopback import TILES_PER_FRAME
from semcom.radio.flowgraph import release
from semcom.radio.link_adaptation import KEY_PDU_BYTES, KEY_TARGET_PER, channel_symbols
from semcom.radio.mcs import MCS_TABLE, mcs_by_name
from semcom.radio.pdu import from_pdu, pdu_list_source
from semcom.radio.stream import bursts_to_stream

MAX_COPIES = 8          # analog copies per frame: beyond this a budget is left unspent (the 8-bit gain is
#                         about 9 dB, past the SNR range the DeepJSCC model was trained on)
DRAIN_S = 1.0           # the run ends once nothing new reached either receiver for this long
TIMEOUT_S = 120.0


@dataclass
class HybridLinkConfig:
    """The channel (as ``loopback.LinkConfig``: Es/N0 per channel symbol) and the hybrid frame's choices."""

    snr_db: float = 0.0
    protected_mcs: str = MCS_TABLE[0].name   # header, text and sketch PDUs
    samples_per_symbol: int = 2
    frequency_offset: float = LOOPBACK_FREQUENCY_OFFSET
    timing_offset: float = LOOPBACK_TIMING_OFFSET
    noise_seed: int = 42
    mtu_bytes: int = 1500
    budget_symbols: int = 0     # channel symbols per image (0: no budget, ``copies`` copies)
    copies: int = 1             # analog copies of each key frame without a budget
    # Header and text copies: at 0 dB a short bpsk-r14 PDU is lost about once in five (the shipped PER
    # table), so three header copies leave about 1% of images undrawn, two text copies 4% without text.
    header_copies: int = 3
    text_copies: int = 2
    # The key mask in the header, in blocks of this many pixels (the pipeline's default is 8): each header
    # copy costs about 32 symbols a byte on bpsk-r14, and 16 px blocks halve the header (117 -> 68 bytes
    # on chelsea), which buys key frames that would otherwise be left out of a budget.
    mask_block_px: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HybridPlan:
    """What goes on air for one image."""

    frame: SemanticFrame               # header, text and (if it fits) sketch; no key tiles
    description: str                   # the non-key text before compression
    protected_mcs: str
    pdus: list[bytes]
    tile_indices: list[int]            # key tiles in the order the analog frames carry them
    symbol_frames: list[np.ndarray]    # the analog frames (TILES_PER_FRAME tiles each)
    copies: list[int]                  # copies of each analog frame on air (0: left out of the budget)
    digital_symbols: int
    analog_symbols: int                # all copies, framing included
    sketch_dropped: bool               # the configured sketch did not fit the budget

    @property
    def channel_symbols(self) -> int:
        return self.digital_symbols + self.analog_symbols

    def bursts(self) -> list[tuple[int, np.ndarray]]:
        """(frame index, symbols) in air order: every frame sent once before any is repeated."""
        return [(i, f) for round_ in range(max(self.copies, default=0))
                for i, f in enumerate(self.symbol_frames) if self.copies[i] > round_]


@dataclass
class HybridResult:
    reconstruction: Reconstruction | None     # None: no header copy arrived, nothing is drawn
    plan: HybridPlan
    pdus_received: int
    analog_frames_received: int               # copies included
    rx_counts: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    def report(self) -> dict:
        """The plan and the receive counts, for metrics.json."""
        p = self.plan
        return {"protected_mcs": p.protected_mcs, "copies": p.copies, "key_tiles": len(p.tile_indices),
                "digital_symbols": p.digital_symbols, "analog_symbols": p.analog_symbols,
                "channel_symbols": p.channel_symbols, "sketch_sent": p.frame.sketch is not None,
                "sketch_dropped": p.sketch_dropped, "pdus_sent": len(p.pdus), "pdus_received": self.pdus_received,
                "analog_frames_sent": sum(p.copies), "analog_frames_received": self.analog_frames_received,
                "header_received": self.reconstruction is not None}


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


def plan_hybrid(image: np.ndarray, link: HybridLinkConfig, config: PipelineConfig | None = None,
                key_mask: np.ndarray | None = None, image_id: int = 0,
                model: jscc.DeepJSCC | None = None) -> HybridPlan:
    """The PDUs and analog frames for ``image``.

    With ``link.budget_symbols``: the sketch goes only if it leaves room for every analog frame once;
    frames that do not fit are left out, those with the least key area first (the receiver generates
    their tiles, as if lost); spare symbols buy copies. ValueError when header and text alone exceed
    the budget, or the config's tiles are not DeepJSCC's.
    """
    config = replace(config or PipelineConfig(), mask_block_px=link.mask_block_px)
    if config.tile_px != jscc.TILE_PX:
        raise ValueError(f"the hybrid mode codes {jscc.TILE_PX} px tiles, config has tile_px {config.tile_px}")
    if min(link.copies, link.header_copies, link.text_copies) < 1 or link.budget_symbols < 0:
        raise ValueError(f"copies {link.copies}, header_copies {link.header_copies}, text_copies "
                         f"{link.text_copies}, budget_symbols {link.budget_symbols}: copies at least 1, budget >= 0")
    encoder = SemanticEncoder(config)
    model = model or jscc.load_model()
    protected = mcs_by_name(link.protected_mcs)
    encoded = encoder.encode(image, image_id, key_mask, code_key_tiles=False)
    frame = encoded.frame
    indices = frame.key_tile_indices()
    tiles = [np.pad(t, ((0, jscc.TILE_PX - t.shape[0]), (0, jscc.TILE_PX - t.shape[1]), (0, 0)), mode="edge")
             for t in key_tile_pixels(image, frame)]
    k = jscc.symbols_for(jscc.TILE_PX, jscc.TILE_PX, model.config)
    groups = _analog_groups(len(tiles))
    sizes = [analog.channel_symbols_for(k * len(g)) for g in groups]

    def digital(f: SemanticFrame) -> tuple[list[bytes], int]:
        pdus = f.to_pdus(config.pdu_bytes, header_repeats=link.header_copies, text_repeats=link.text_copies)
        return pdus, channel_symbols(pdus, [protected] * len(pdus))

    pdus, digital_symbols = digital(frame)
    sketch_dropped = False
    copies = [link.copies] * len(groups)
    if link.budget_symbols:
        if frame.sketch is not None and digital_symbols + sum(sizes) > link.budget_symbols:
            frame.sketch, sketch_dropped = None, True
            pdus, digital_symbols = digital(frame)
        if digital_symbols > link.budget_symbols:
            raise ValueError(f"budget of {link.budget_symbols} symbols: header and text alone take "
                             f"{digital_symbols} on {protected.name}")
        key = frame.key_mask()
        area = [sum(_key_pixels(frame, key, indices[t]) for t in g) for g in groups]
        copies = _copies_within(link.budget_symbols - digital_symbols, sizes, area)
    frames = []
    for g, n in zip(groups, copies):
        # the encoder is told the SNR the receiver will see after combining the copies
        snr = link.snr_db + 10 * math.log10(max(n, 1))
        frames.append(jscc.encode_tiles([tiles[t] for t in g], snr, model).ravel())
    return HybridPlan(frame, encoded.description, protected.name, pdus, indices, frames, copies,
                      digital_symbols, sum(n * size for n, size in zip(copies, sizes)), sketch_dropped)


class hybrid_flowgraph(gr.top_block):
    """packet_tx and analog_tx into one channel_model; packet_rx and analog_rx on its output."""

    def __init__(self, plan: HybridPlan, link: HybridLinkConfig):
        gr.top_block.__init__(self, "semcom hybrid loopback")
        sps = link.samples_per_symbol
        protected = mcs_by_name(link.protected_mcs)
        analog_id = plan.frame.image_id & 0xFF
        self.digital_source = pdu_list_source(plan.pdus)
        self.analog_source = pdu_list_source([analog.symbols_pdu(f, {"image_id": analog_id, "frame_index": i})
                                              for i, f in plan.bursts()])
        self.packet_tx = packet.packet_tx(modulation=protected.modulation, fec_code=protected.fec_code,
                                          samples_per_symbol=sps, mtu_bytes=link.mtu_bytes)
        self.analog_tx = analog.analog_tx(sps)
        self.to_stream = bursts_to_stream(n_inputs=2, zero_fill=False)
        self.channel = channels.channel_model(
            noise_voltage=packet.noise_voltage_for_snr(link.snr_db, protected.modulation, sps),
            frequency_offset=link.frequency_offset, epsilon=link.timing_offset, taps=[1.0 + 0j],
            noise_seed=link.noise_seed, block_tags=False)
        self.packet_rx = packet.packet_rx(modulation=protected.modulation, fec_code=protected.fec_code,
                                          samples_per_symbol=sps, mtu_bytes=link.mtu_bytes)
        self.analog_rx = analog.analog_rx(sps)
        self.digital_sink = blocks.message_debug()
        self.analog_sink = blocks.message_debug()
        self.msg_connect(self.digital_source, "out", self.packet_tx, "in")
        self.msg_connect(self.analog_source, "out", self.analog_tx, "in")
        self.connect(self.packet_tx, (self.to_stream, 0))
        self.connect(self.analog_tx, (self.to_stream, 1))
        self.connect(self.to_stream, self.channel)
        self.connect(self.channel, self.packet_rx)
        self.connect(self.channel, self.analog_rx)
        self.msg_connect(self.packet_rx, "out", self.digital_sink, "store")
        self.msg_connect(self.analog_rx, "out", self.analog_sink, "store")

    def progress(self) -> tuple:
        return (self.to_stream.bursts_out, self.digital_sink.num_messages(), self.analog_sink.num_messages(),
                tuple(self.analog_rx.counts.values()), self.packet_rx.headers_detected())


def combine_copies(copies: list[tuple[np.ndarray, dict]]) -> tuple[np.ndarray, float]:
    """Maximum-ratio combining of equalised copies (unit gain, noise 1/SNR each): the SNR-weighted mean,
    and the combined SNR in dB (the sum of the linear estimates)."""
    weights = np.array([10 ** (meta["snr_db_est"] / 10) for _, meta in copies])
    weights = np.maximum(weights, 1e-3)
    stacked = np.stack([symbols for symbols, _ in copies])
    combined = (weights[:, None] * stacked).sum(axis=0) / weights.sum()
    return combined.astype(np.complex64), float(10 * math.log10(weights.sum()))


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
        combined, snr_db = combine_copies(copies)
        group = groups[index]
        for pos, tile in zip(group, jscc.decode_tiles(combined.reshape(len(group), k), snr_db,
                                                      jscc.TILE_PX, jscc.TILE_PX, model)):
            pixels[indices[pos]] = tile
    return pixels, refused


def run_hybrid_loopback(image: np.ndarray, link: HybridLinkConfig | None = None,
                        config: PipelineConfig | None = None, key_mask: np.ndarray | None = None,
                        image_id: int = 0, timeout_s: float = TIMEOUT_S) -> HybridResult:
    """One image through the hybrid flowgraph; see the module docstring."""
    link = link or HybridLinkConfig()
    config = config or PipelineConfig()
    model = jscc.load_model()
    plan = plan_hybrid(image, link, config, key_mask, image_id, model=model)
    tb = hybrid_flowgraph(plan, link)
    started = time.monotonic()
    bursts = len(plan.pdus) + sum(plan.copies)
    tb.start()
    try:
        last, last_change = None, time.monotonic()
        while time.monotonic() - started < timeout_s:
            state = tb.progress()
            now = time.monotonic()
            if state != last:
                last, last_change = state, now
            elif state[0] >= bursts and now - last_change > DRAIN_S:
                break
            if state[1] >= len(plan.pdus) and state[2] >= bursts - len(plan.pdus):
                break
            time.sleep(0.02)
    finally:
        tb.stop()
        tb.wait()
    digital = [from_pdu(tb.digital_sink.get_message(i))[1] for i in range(tb.digital_sink.num_messages())]
    received = []
    for i in range(tb.analog_sink.num_messages()):
        meta, symbols = analog.symbols_from_pdu(tb.analog_sink.get_message(i))
        received.append((symbols, meta))
    counts = {"packet_headers_detected": tb.packet_rx.headers_detected(),
              "packet_failed_crc": tb.packet_rx.packets_failed_crc(), "analog": tb.analog_rx.counts}
    release(tb)

    assembler = FrameAssembler(max_pdu_bytes=link.mtu_bytes)
    frames = [f for pdu in digital for f in assembler.push(pdu)] + assembler.flush_all()
    frame = next((f for f in frames if f.image_id == image_id), None)
    recon = None
    if frame is not None:
        pixels, refused = decode_analog_tiles(received, frame, image_id, model)
        counts["analog_refused"] = refused
        recon = SemanticDecoder(config).decode(frame, key_pixels=pixels)
    return HybridResult(recon, plan, len(digital), len(received), counts, time.monotonic() - started)
