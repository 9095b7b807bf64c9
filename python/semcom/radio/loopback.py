"""The end-to-end loopback: semantic_tx -> packet_tx -> channel_model -> packet_rx -> semantic_rx."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
from gnuradio import gr

from semcom.codec.pipeline import Encoded, PipelineConfig, Reconstruction
from semcom.radio import packet
from semcom.radio.flowgraph import release
from semcom.radio.link_adaptation import channel_symbols
from semcom.radio.mcs import Mcs, mcs_by_name
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
    protected_mcs: str = ""     # header, text and sketch PDUs on this MCS (semantic_tx); "": modulation/fec_code
    key_mcs: str = ""           # key-tile PDUs on this MCS; "": modulation/fec_code
    adapt: bool = False         # each image's MCS pair from the receiver's SNR estimates (semantic_tx adapt)
    budget_symbols: int = 0     # channel symbols per image, planned by semantic_tx (0: no budget)
    cbr: float = 0.0            # or the budget as symbols per 3 H W
    plan_snr_db: float | None = None    # the SNR a budget is planned for (None: snr_db; adapt: the estimates)

    def to_dict(self) -> dict:
        return asdict(self)


class loopback_flowgraph(gr.top_block):
    """A whole link in one flowgraph, the channel model in place of the radios."""

    def __init__(self, link: LinkConfig, config: PipelineConfig, output_path: str = "", rx_timeout_s: float = 1.0):
        gr.top_block.__init__(self, "semcom loopback")
        if config.pdu_bytes > link.mtu_bytes:
            raise ValueError(f"pipeline PDUs of {config.pdu_bytes} bytes exceed the link's {link.mtu_bytes}-byte MTU")
        self.link = link
        self.tx = semantic_tx(config=config, protected_mcs=link.protected_mcs, key_mcs=link.key_mcs,
                              adapt=link.adapt, budget_symbols=link.budget_symbols, cbr=link.cbr,
                              plan_snr_db=link.snr_db if link.plan_snr_db is None else link.plan_snr_db)
        self.modulator, self.channel, self.demodulator = phy_chain(link, link.snr_db, link.noise_seed)
        self.rx = semantic_rx(output_path=output_path, config=config, timeout_s=rx_timeout_s)
        self.msg_connect((self.tx, "pdus"), (self.modulator, "in"))
        self.connect(self.modulator, self.channel, self.demodulator)
        self.msg_connect((self.demodulator, "out"), (self.rx, "pdus"))
        if link.adapt:   # an ideal return link: the receiver's per-header estimates steer the next image
            self.msg_connect((self.demodulator, "snr"), (self.tx, "snr"))


@dataclass
class LoopbackResult:
    encoded: Encoded | None
    reconstruction: Reconstruction | None
    pdus_sent: int
    bytes_sent: int
    channel_symbols: int
    rx_stats: dict = field(default_factory=dict)       # this image's share of the receiver's counters
    elapsed_s: float = 0.0
    protected_mcs: str = ""        # the MCS of header, text and sketch ("": the link's modulation/fec_code)
    key_mcs: str = ""              # the MCS of the key tiles
    snr_estimate_db: float | None = None   # the estimate the MCS pair was chosen for (adapt), else None
    plan: dict | None = None       # with a budget: what the planner chose (semantic_tx.budget_plan_report)


def run_loopback(image: np.ndarray, link: LinkConfig | None = None, config: PipelineConfig | None = None,
                 key_mask: np.ndarray | None = None, output_path: str = "", timeout_s: float = 120.0) -> LoopbackResult:
    """Send one image through the flowgraph; returns what came out (reconstruction None if nothing did).

    Raises ValueError when the transmitter refused the image (its message names the problem).
    """
    return run_loopback_frames([image], link, config, key_mask, output_path, timeout_s)[0]


def run_loopback_frames(images: list[np.ndarray], link: LinkConfig | None = None,
                        config: PipelineConfig | None = None, key_mask: np.ndarray | None = None,
                        output_path: str = "", timeout_s: float = 120.0) -> list[LoopbackResult]:
    """Send ``images`` one after another through one flowgraph, each once the previous came out or was
    given up (so with ``link.adapt`` each image's MCS follows the estimates of the PDUs before it)."""
    link = link or LinkConfig()
    config = config or PipelineConfig()
    tb = loopback_flowgraph(link, config, output_path)
    results: list[LoopbackResult] = []
    tb.start()
    try:
        for image in images:
            results.append(send_image(tb, image, link, config, key_mask, timeout_s))
    finally:
        tb.stop()
        tb.wait()
        release(tb)
    return results


def send_image(tb: loopback_flowgraph, image: np.ndarray, link: LinkConfig, config: PipelineConfig,
              key_mask: np.ndarray | None, timeout_s: float) -> LoopbackResult:
    """One image through the running ``tb``: wait until it comes out or is given up (DRAIN_S)."""
    started = time.monotonic()
    images_before, errors_before, sent_before = tb.rx.images_out, tb.tx.errors, tb.tx.images_sent
    stats_before = dict(tb.rx.stats)
    tb.tx.send(image, key_mask=key_mask)
    deadline = started + timeout_s
    idle_since = None   # when the TX had published every PDU (the drain is timed from then, not from
    #                     the start: encoding alone can take longer than DRAIN_S on a loaded machine)
    while time.monotonic() < deadline and tb.rx.images_out == images_before:
        if tb.tx.errors > errors_before:
            break
        idle_since = (idle_since or time.monotonic()) if tb.tx.idle.is_set() else None
        if idle_since is not None and tb.rx.assembler.open_frames == 0 \
                and time.monotonic() - max(tb.rx.last_pdu_s, idle_since) > DRAIN_S:
            break
        tb.rx.wait_for_images(images_before + 1, timeout_s=0.1)
    if tb.tx.images_sent == sent_before:
        raise ValueError(tb.tx.last_error or "the transmitter sent nothing")
    sent = tb.tx.recent_frames[-1]
    recon = next((r for i, r in reversed(tb.rx.reconstructions) if i == sent.image_id), None)
    symbols = channel_symbols(list(sent.pdus), [_mcs_named(name, link) for name in sent.pdu_mcs])
    stats = {k: v - stats_before.get(k, 0) if isinstance(v, (int, float)) else v for k, v in tb.rx.stats.items()}
    return LoopbackResult(sent.encoded, recon, len(sent.pdus), sum(map(len, sent.pdus)), symbols, stats,
                          time.monotonic() - started, sent.protected_mcs, sent.key_mcs, sent.snr_estimate_db,
                          sent.plan)


def _mcs_named(name: str, link: LinkConfig) -> Mcs:
    """The MCS a PDU went out on: the one named in its metadata, else the link's configured one."""
    return mcs_by_name(name) if name else Mcs(packet.mcs_name(link.modulation, link.fec_code),
                                              link.modulation, link.fec_code)
