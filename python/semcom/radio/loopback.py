"""The end-to-end loopback: semantic_tx -> packet_tx -> channel_model -> packet_rx -> semantic_rx."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
from gnuradio import gr

from semcom.codec.pipeline import Encoded, PipelineConfig, Reconstruction
from semcom.radio import packet
from semcom.radio.flowgraph import release
from semcom.radio.pdu_link import PhyConfig, phy_chain
from semcom.radio.semantic_rx import semantic_rx
from semcom.radio.semantic_tx import semantic_tx

# After the transmitter went idle, the run ends once no PDU has reached the receiver for this long
# (covers frames whose header was lost: nothing will ever be decoded for them).
DRAIN_S = 3.0


@dataclass
class LinkConfig(PhyConfig):
    """The loopback's PHY (the same fields as the evaluation's ``PhyConfig``, so a PER table measured
    for one describes the other) plus the channel: ``snr_db`` is Es/N0 per channel symbol
    (see packet.noise_voltage_for_snr)."""

    snr_db: float = 20.0
    noise_seed: int = 42

    def to_dict(self) -> dict:
        return asdict(self)


class loopback_flowgraph(gr.top_block):
    """A whole link in one flowgraph, the channel model in place of the radios."""

    def __init__(self, link: LinkConfig, config: PipelineConfig, output_path: str = "", rx_timeout_s: float = 1.0):
        gr.top_block.__init__(self, "semcom loopback")
        if config.pdu_bytes > link.mtu_bytes:
            raise ValueError(f"pipeline PDUs of {config.pdu_bytes} bytes exceed the link's {link.mtu_bytes}-byte MTU")
        self.link = link
        self.tx = semantic_tx(config=config)
        self.modulator, self.channel, self.demodulator = phy_chain(link, link.snr_db, link.noise_seed)
        self.rx = semantic_rx(output_path=output_path, config=config, timeout_s=rx_timeout_s)
        self.msg_connect((self.tx, "pdus"), (self.modulator, "in"))
        self.connect(self.modulator, self.channel, self.demodulator)
        self.msg_connect((self.demodulator, "out"), (self.rx, "pdus"))


@dataclass
class LoopbackResult:
    encoded: Encoded | None
    reconstruction: Reconstruction | None
    pdus_sent: int
    bytes_sent: int
    channel_symbols: int
    rx_stats: dict = field(default_factory=dict)
    elapsed_s: float = 0.0


def run_loopback(image: np.ndarray, link: LinkConfig | None = None, config: PipelineConfig | None = None,
                 key_mask: np.ndarray | None = None, output_path: str = "", timeout_s: float = 120.0) -> LoopbackResult:
    """Send one image through the flowgraph; returns what came out (reconstruction None if nothing did).

    Raises ValueError when the transmitter refused the image (its message names the problem).
    """
    link = link or LinkConfig()
    config = config or PipelineConfig()
    tb = loopback_flowgraph(link, config, output_path)
    started = time.monotonic()
    tb.start()
    try:
        tb.tx.send(image, key_mask=key_mask)
        deadline = started + timeout_s
        idle_since = None   # when the TX had published every PDU (the drain is timed from then, not from
        #                     the start: encoding alone can take longer than DRAIN_S on a loaded machine)
        while time.monotonic() < deadline and tb.rx.images_out == 0:
            if tb.tx.errors:
                break
            idle_since = (idle_since or time.monotonic()) if tb.tx.idle.is_set() else None
            if idle_since is not None and tb.rx.assembler.open_frames == 0 \
                    and time.monotonic() - max(tb.rx.last_pdu_s, idle_since) > DRAIN_S:
                break
            tb.rx.wait_for_images(1, timeout_s=0.1)
    finally:
        tb.stop()
        tb.wait()
        release(tb)
    encoded = tb.tx.last_encoded
    if encoded is None and tb.tx.errors:
        raise ValueError(tb.tx.last_error)
    pdus = encoded.to_pdus(config.pdu_bytes) if encoded else []
    recon = tb.rx.reconstructions[0][1] if tb.rx.reconstructions else None
    symbols = sum(packet.channel_symbols_for(len(p), link.modulation, link.fec_code) for p in pdus)
    return LoopbackResult(encoded, recon, len(pdus), sum(map(len, pdus)), symbols, tb.rx.stats,
                          time.monotonic() - started)
