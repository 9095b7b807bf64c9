"""A list of PDUs through the real PHY: ``pdu_source -> packet_tx -> channel_model -> packet_rx -> sink``.

Used by the evaluation for two things: measuring packet error rate vs SNR (many PDUs through one
long-running flowgraph per SNR) and, in ``--channel-mode flowgraph``, carrying every transmission.
Unlike ``loopback.py`` there are no semantic blocks and no receiver timeouts: the run ends when every
PDU came back, or when neither the transmitter nor the receiver moved a sample for ``settle_s``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pmt
from gnuradio import channels, gr

from semcom.constants import LOOPBACK_FREQUENCY_OFFSET, LOOPBACK_TIMING_OFFSET
from semcom.radio import packet
from semcom.radio.flowgraph import release
from semcom.radio.pdu import from_pdu, pdu_list_source, to_pdu

# The run is over when no block moved a sample for this long (every burst carries its own silent
# tail that pushes it through the receiver, so nothing is left inside once the counts stand still).
SETTLE_S = 0.6
POLL_S = 0.05


@dataclass
class PhyConfig:
    """The packet PHY: modem, code and the channel's offsets. ``loopback.LinkConfig`` extends it with the SNR."""

    modulation: str = "qpsk"
    fec_code: str = "cc"
    samples_per_symbol: int = 2
    frequency_offset: float = LOOPBACK_FREQUENCY_OFFSET   # cycles per sample
    timing_offset: float = LOOPBACK_TIMING_OFFSET         # sample-clock ratio (channel_model epsilon)
    mtu_bytes: int = 1500

    def key(self) -> str:
        return f"{self.modulation}_{self.fec_code}"


def phy_chain(phy: PhyConfig, snr_db: float, noise_seed: int):
    """(packet_tx, channel_model, packet_rx) for ``phy`` at ``snr_db`` (Es/N0): the chain every simulated link runs."""
    tx = packet.packet_tx(modulation=phy.modulation, fec_code=phy.fec_code,
                          samples_per_symbol=phy.samples_per_symbol, mtu_bytes=phy.mtu_bytes)
    noise_voltage = packet.noise_voltage_for_snr(snr_db, phy.modulation, phy.samples_per_symbol)
    channel = channels.channel_model(noise_voltage=noise_voltage, frequency_offset=phy.frequency_offset,
                                     epsilon=phy.timing_offset, taps=[1.0 + 0j], noise_seed=noise_seed,
                                     block_tags=False)
    rx = packet.packet_rx(modulation=phy.modulation, fec_code=phy.fec_code,
                          samples_per_symbol=phy.samples_per_symbol, mtu_bytes=phy.mtu_bytes)
    return tx, channel, rx


class _pdu_collector(gr.basic_block):
    """Keeps the payloads of the PDUs that passed the receiver's CRC, in arrival order."""

    def __init__(self):
        gr.basic_block.__init__(self, "semcom_pdu_collector", None, None)
        self.received: list[bytes] = []
        self.changed = threading.Event()
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._on_pdu)

    def _on_pdu(self, msg):
        try:
            self.received.append(from_pdu(msg)[1])
        except ValueError:
            return
        self.changed.set()


class pdu_link_flowgraph(gr.top_block):
    def __init__(self, pdus: list[bytes], snr_db: float, phy: PhyConfig, noise_seed: int = 42,
                 mcs: list[str] | None = None):
        gr.top_block.__init__(self, "semcom pdu link")
        self.source = pdu_list_source(pdus if mcs is None else
                                      [to_pdu(p, {packet.MCS_KEY: m}) for p, m in zip(pdus, mcs, strict=True)])
        self.tx, self.channel, self.rx = phy_chain(phy, snr_db, noise_seed)
        self.sink = _pdu_collector()
        self.msg_connect((self.source, "out"), (self.tx, "in"))
        self.connect(self.tx, self.channel, self.rx)
        self.msg_connect((self.rx, "out"), (self.sink, "in"))


@dataclass
class PduLinkResult:
    received: list[bytes]          # payloads that passed the CRC, in arrival order
    headers_detected: int
    failed_crc: int
    samples: int                   # complex samples the channel produced
    elapsed_s: float


def send_pdus(pdus: list[bytes], snr_db: float, phy: PhyConfig | None = None, noise_seed: int = 42,
              timeout_s: float = 600.0, settle_s: float = SETTLE_S, mcs: list[str] | None = None) -> PduLinkResult:
    """Send ``pdus`` (each at most ``phy.mtu_bytes``) through one flowgraph run at ``snr_db`` (Es/N0), each
    on ``phy``'s MCS or, given ``mcs``, on ``mcs[i]`` (a name of ``semcom.radio.mcs``: packet_tx reads it
    from the PDU's metadata, packet_rx from the burst's header)."""
    phy = phy or PhyConfig()
    too_long = [len(p) for p in pdus if len(p) > phy.mtu_bytes]
    if too_long:
        raise ValueError(f"PDUs of {too_long[:3]} bytes exceed the {phy.mtu_bytes}-byte MTU")
    tb = pdu_link_flowgraph(list(pdus), snr_db, phy, noise_seed, mcs)
    started = time.monotonic()
    tb.start()
    try:
        last, still_since = None, time.monotonic()
        while time.monotonic() - started < timeout_s and len(tb.sink.received) < len(pdus):
            tb.sink.changed.wait(POLL_S)
            tb.sink.changed.clear()
            now = (tb.tx.burst_length.nitems_written(0), tb.rx.correlator.nitems_read(0), len(tb.sink.received))
            if now != last:
                last, still_since = now, time.monotonic()
            elif now[0] > 0 and time.monotonic() - still_since > settle_s:
                break
    finally:
        tb.stop()
        tb.wait()
    result = PduLinkResult(list(tb.sink.received), tb.rx.headers_detected(), tb.rx.packets_failed_crc(),
                           int(tb.rx.correlator.nitems_read(0)), time.monotonic() - started)
    release(tb)
    return result
