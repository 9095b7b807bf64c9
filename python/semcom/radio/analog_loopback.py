"""Analog key-region mode end to end: key tiles -> DeepJSCC symbols -> analog_tx -> channel_model -> analog_rx
-> DeepJSCC decoder, composed with the generated background.

Only the key region crosses the GNU Radio channel, as analog symbols. The frame's geometry (image size,
coarse key mask) and the compressed background text are the digital part of the semantic frame; in this
loopback they are handed to the receiver directly (taken as received), so the reported quality isolates
the analog key path. In a deployment they travel as PDUs through ``semcom.radio.packet``.

Decoder SNR: by default the DeepJSCC decoder is told the receiver's pilot-based estimate of each frame's
Es/N0 (``decode_snr="estimate"``); ``decode_snr="nominal"`` tells it the channel's nominal SNR instead.
The encoder is told the nominal SNR (the transmitter is assumed to know the link's operating SNR).

``jscc_transmit`` is the small API the evaluation uses: the same model through the torch AWGN channel
(``via="torch"``, fast) or through this flowgraph (``via="flowgraph"``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
from gnuradio import blocks, channels, gr

from semcom.codec import jscc
from semcom.codec.frame import SemanticFrame
from semcom.codec.pipeline import (
    PipelineConfig,
    Reconstruction,
    SemanticEncoder,
    blend_alpha,
    check_image,
    coarse_mask,
    extend_edges,
)
from semcom.codec.registry import create
from semcom.constants import LOOPBACK_FREQUENCY_OFFSET, LOOPBACK_TIMING_OFFSET, SEAM_FEATHER_PX
from semcom.radio import analog, packet
from semcom.radio.flowgraph import release, run_until_delivered
from semcom.radio.pdu import pdu_list_source

TILES_PER_FRAME = 4                # 4 x 768 data symbols per burst: ~16% preamble/header/pilot overhead
DRAIN_S = 1.0                      # stop once nothing new reached the receiver for this long


@dataclass
class AnalogLinkConfig:
    """``snr_db`` is Es/N0 per channel symbol (packet.noise_voltage_for_snr; analog symbols have unit energy)."""

    snr_db: float = 10.0
    samples_per_symbol: int = 2
    frequency_offset: float = LOOPBACK_FREQUENCY_OFFSET   # cycles per sample
    timing_offset: float = LOOPBACK_TIMING_OFFSET         # sample-clock ratio (channel_model epsilon)
    noise_seed: int = 42
    tiles_per_frame: int = TILES_PER_FRAME
    decode_snr: str = "estimate"       # or "nominal"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AnalogTransfer:
    """What came out of the flowgraph: per frame index, (equalised symbols, meta)."""

    frames: dict[int, tuple[np.ndarray, dict]]
    frames_sent: int
    channel_symbols: int
    rx_counts: dict = field(default_factory=dict)
    elapsed_s: float = 0.0


def send_symbol_frames(frames: list[np.ndarray], link: AnalogLinkConfig, image_id: int = 0,
                       timeout_s: float = 60.0) -> AnalogTransfer:
    """(n_i,) complex symbol frames -> analog_tx -> channel_model -> analog_rx; returns what arrived."""
    if len(frames) > 256:
        raise ValueError(f"{len(frames)} frames: at most 256 per image (8-bit frame index)")
    sps = link.samples_per_symbol
    tb = gr.top_block("semcom analog loopback")
    source = pdu_list_source([analog.symbols_pdu(f, {"image_id": image_id & 0xFF, "frame_index": i})
                          for i, f in enumerate(frames)])
    tx = analog.analog_tx(sps)
    channel = channels.channel_model(noise_voltage=packet.noise_voltage_for_snr(link.snr_db, "bpsk", sps),
                                     frequency_offset=link.frequency_offset, epsilon=link.timing_offset,
                                     taps=[1.0 + 0j], noise_seed=link.noise_seed, block_tags=False)
    rx = analog.analog_rx(sps)
    sink = blocks.message_debug()
    tb.msg_connect(source, "out", tx, "in")
    tb.connect(tx, channel, rx)
    tb.msg_connect(rx, "out", sink, "store")
    started = time.monotonic()
    try:
        run_until_delivered(tb, sink.num_messages, len(frames),
                            lambda: (sink.num_messages(), tuple(rx.counts.values())), timeout_s, DRAIN_S)
    finally:
        release(tb, tx, rx)
    received = {}
    for i in range(sink.num_messages()):
        meta, symbols = analog.symbols_from_pdu(sink.get_message(i))
        if meta.get("image_id") == image_id & 0xFF and meta.get("frame_index", -1) < len(frames):
            received.setdefault(int(meta["frame_index"]), (symbols, meta))
    return AnalogTransfer(received, len(frames), sum(analog.channel_symbols_for(len(f)) for f in frames),
                          rx.counts, time.monotonic() - started)


def transmit_tiles(tiles: list[np.ndarray], link: AnalogLinkConfig, image_id: int = 0,
                   model: jscc.DeepJSCC | None = None) -> tuple[dict[int, np.ndarray], AnalogTransfer]:
    """64x64 (h, w, 3) uint8 tiles through the flowgraph -> {tile position: decoded tile} for the tiles
    whose frame arrived (a lost or malformed frame loses its tiles), and the transfer record."""
    model = model or jscc.load_model()
    k = jscc.symbols_for(jscc.TILE_PX, jscc.TILE_PX, model.config)
    symbols = jscc.encode_tiles(tiles, link.snr_db, model)
    per = max(1, int(link.tiles_per_frame))
    groups = [list(range(i, min(i + per, len(tiles)))) for i in range(0, len(tiles), per)]
    transfer = send_symbol_frames([symbols[g].ravel() for g in groups], link, image_id)
    decoded: dict[int, np.ndarray] = {}
    transfer.rx_counts["malformed"] = 0
    for index, (received, meta) in transfer.frames.items():
        group = groups[index]
        if len(received) != k * len(group):           # e.g. a header CRC collision: never trust the length
            transfer.rx_counts["malformed"] += 1
            continue
        snr = meta["snr_db_est"] if link.decode_snr == "estimate" else link.snr_db
        for pos, tile in zip(group, jscc.decode_tiles(received.reshape(len(group), k), snr,
                                                      jscc.TILE_PX, jscc.TILE_PX, model)):
            decoded[pos] = tile
    return decoded, transfer


def jscc_transmit(image: np.ndarray, snr_db: float, channel: str = "awgn", via: str = "torch", seed: int = 0,
                  link: AnalogLinkConfig | None = None) -> np.ndarray:
    """DeepJSCC of a whole (H, W, 3) uint8 image or tile (64 px tiles), returns the (H, W, 3) uint8 reconstruction.

    ``via="torch"``: simulated ``channel`` (``awgn`` or ``rayleigh``) in torch, decoder told ``snr_db``.
    ``via="flowgraph"``: through analog_tx -> channel_model (AWGN + ``link``'s offsets) -> analog_rx; tiles
    whose frame was lost come back mid-grey. Channel use: ``jscc.symbols_for(64, 64)`` symbols per tile
    (plus ``analog.channel_symbols_for`` framing on the flowgraph path).
    """
    if via == "torch":
        return jscc.transmit_torch(image, snr_db, channel, seed)
    if via != "flowgraph":
        raise ValueError(f"unknown via {via!r}; choose torch or flowgraph")
    if channel != "awgn":
        raise ValueError("the flowgraph path models AWGN with frequency and timing offsets only")
    link = AnalogLinkConfig(**{**(link.to_dict() if link else {}), "snr_db": snr_db, "noise_seed": seed + 1})
    tiles, corners = jscc.split_tiles(image)
    decoded, _ = transmit_tiles(tiles, link)
    grey = np.full_like(tiles[0], 128)
    return jscc.join_tiles([decoded.get(i, grey) for i in range(len(tiles))], corners, image.shape[0], image.shape[1])


@dataclass
class AnalogLoopbackResult:
    reconstruction: Reconstruction
    frame: SemanticFrame                 # geometry + text; key_tiles empty (the key went as analog symbols)
    description: str
    tiles_sent: int
    channel_symbols: int                 # analog symbols on air for the key region
    rx_counts: dict
    elapsed_s: float


def run_analog_loopback(image: np.ndarray, snr_db: float, link: AnalogLinkConfig | None = None,
                        config: PipelineConfig | None = None, key_mask: np.ndarray | None = None,
                        image_id: int = 0) -> AnalogLoopbackResult:
    """Key region through the analog flowgraph, background from the text; see the module docstring."""
    image = check_image(image)
    link = AnalogLinkConfig(**{**(link.to_dict() if link else {}), "snr_db": snr_db})
    config = config or PipelineConfig()
    if config.tile_px != jscc.TILE_PX:
        raise ValueError(f"the analog mode codes {jscc.TILE_PX} px tiles, config has tile_px {config.tile_px}")
    encoder = SemanticEncoder(config)
    if key_mask is None:
        key_mask = encoder.splitter.split(image)
    key_mask = np.asarray(key_mask, bool)
    if key_mask.shape != image.shape[:2]:
        raise ValueError(f"key mask is {key_mask.shape[::-1]}, image is {image.shape[1::-1]}")
    h, w = key_mask.shape
    description = encoder.describer.describe(image, key_mask)
    frame = SemanticFrame(image_id, w, h, config.tile_px, config.mask_block_px, encoder.key_codec.codec_id,
                          encoder.text_codec.codec_id, coarse_mask(key_mask, config.mask_block_px),
                          text=encoder.text_codec.compress(description))
    coded = frame.coded_mask()
    indices = frame.key_tile_indices()
    tiles = []
    for index in indices:
        y0, x0, y1, x1 = frame.tile_box(index)
        tile = extend_edges(image[y0:y1, x0:x1], coded[y0:y1, x0:x1])
        pad = ((0, config.tile_px - (y1 - y0)), (0, config.tile_px - (x1 - x0)), (0, 0))
        tiles.append(np.pad(tile, pad, mode="edge"))
    started = time.monotonic()
    decoded, transfer = transmit_tiles(tiles, link, image_id) if tiles else ({}, None)

    known = np.zeros((h, w, 3), np.uint8)
    received_area = np.zeros((h, w), bool)
    for pos, index in enumerate(indices):
        if pos in decoded:
            y0, x0, y1, x1 = frame.tile_box(index)
            known[y0:y1, x0:x1] = decoded[pos][:y1 - y0, :x1 - x0]
            received_area[y0:y1, x0:x1] = True
    received_text = create("text", config.text, **config.text_options).decompress(frame.text)
    generator = create("generate", config.generate, **config.generate_options)
    frame_key_mask = frame.key_mask()
    alpha = blend_alpha(frame_key_mask, received_area & coded, min(SEAM_FEATHER_PX, frame.mask_block_px))
    composed = generator.generate(received_text, known, alpha, seed=image_id)
    recon = Reconstruction(composed, frame_key_mask, received_area & frame_key_mask, len(indices), len(decoded), 0,
                           received_text, False)
    return AnalogLoopbackResult(recon, frame, description, len(tiles),
                                transfer.channel_symbols if transfer else 0,
                                transfer.rx_counts if transfer else {}, time.monotonic() - started)
