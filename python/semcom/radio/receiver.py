"""semantic_receiver: the receive chain every RX flowgraph shares (AGC -> packet_rx -> semantic_rx)."""

from __future__ import annotations

from gnuradio import analog, blocks, gr

from semcom.codec.pipeline import PipelineConfig
from semcom.radio import acquisition, packet
from semcom.radio.semantic_rx import semantic_rx

# packet_rx's access-code correlator has an absolute threshold: it expects bursts at the level
# packet_tx emits them (about unit RMS per sample). AGC3 brings a radio's arbitrary level there. The
# rates are asymmetric on purpose: the gain falls fast when a burst starts (attack) and rises slowly
# in the noise between bursts (decay), so it is still about right when the next burst comes.
# Measured (QPSK, CC, bursts separated by 1 ms .. 30 ms of noise, input level -26 dB .. +12 dB,
# 10 and 20 dB Es/N0): every PDU through; a 10x faster decay lost 5 of 29 PDUs at 20 dB. Where it
# loses: sparse traffic. benchmarks/stream_throughput.py's recording (97% noise) delivered 17 of 30
# PDUs with it and 30 without in one run at ffc2d62 (docs/ota.md, "Keeping up with the radio").
# What it cannot take (issue #15): a stretch of perfectly silent input (no noise at all, e.g. a ZeroMQ
# link without a channel model). agc3 then raises its gain far beyond set_max_gain (36000x measured
# with a limit of 100), the first burst after the silence arrives thousands of times too strong, the
# absolute-threshold correlator fires hundreds of times on it and the receiver crawls. A radio's own
# noise keeps the gain bounded; examples/zmq_rx turns the AGC off. benchmarks/rx_impairments.py: every
# PDU through at -40, -20, 0 and +10 dBFS (20 dB Es/N0, random gaps of noise).
AGC_ATTACK_RATE = 1e-2
AGC_DECAY_RATE = 1e-5
AGC_REFERENCE = 1.0
AGC_MAX_GAIN = 65536.0


class semantic_receiver(gr.hier_block2):
    """Complex baseband in -> images out: AGC3, [coarse frequency search], packet_rx (correlator, clock
    recovery, Costas, header/CRC/FEC) and semantic_rx.

    ``coarse_cfo``: search each burst's carrier offset up to +-``acquisition.MAX_OFFSET`` cycles/sample
    (``semcom.radio.acquisition``) before packet_rx, whose own range ends near 1e-3. A real radio pair
    needs it unless its oscillators are locked or calibrated; it costs CPU (a Python block, about 0.6x packet_rx's:
    benchmarks/rx_impairments.py), so simulated links without a frequency offset leave it off. Off by default.

    Stream outputs (optional): 0 = the input after the AGC (for a spectrum / time display),
    1 = symbols after clock recovery and the Costas loop (for a constellation display).
    Message outputs: ``image`` and ``info`` of semantic_rx; ``pdus``, the PDUs that passed the CRC
    (for an image display); ``snr``, packet_rx's estimate of every header (for semantic_tx's ``snr`` over
    a return link). The parts stay reachable as ``agc``, ``demodulator`` (packet_rx) and
    ``rx`` (semantic_rx) for counters.
    """

    def __init__(self, modulation: str = "qpsk", fec_code: str = "cc", samples_per_symbol: int = 2,
                 excess_bw: float = 0.35, mtu_bytes: int = 1500, output_path: str = "",
                 config: PipelineConfig | str | None = None, timeout_s: float = 1.0, agc: bool = True,
                 endpoint: str = "", coarse_cfo: bool = False):
        gr.hier_block2.__init__(self, "semcom_semantic_receiver", gr.io_signature(1, 1, gr.sizeof_gr_complex),
                                gr.io_signature(2, 2, gr.sizeof_gr_complex))
        self.message_port_register_hier_out("image")
        self.message_port_register_hier_out("info")
        self.message_port_register_hier_out("pdus")
        self.message_port_register_hier_out("snr")
        self.agc = analog.agc3_cc(AGC_ATTACK_RATE, AGC_DECAY_RATE, AGC_REFERENCE, 1.0, 1)
        if hasattr(self.agc, "set_max_gain"):
            self.agc.set_max_gain(AGC_MAX_GAIN)
        self.demodulator = packet.packet_rx(modulation=modulation, fec_code=fec_code,
                                            samples_per_symbol=samples_per_symbol, excess_bw=excess_bw,
                                            mtu_bytes=mtu_bytes)
        self.rx = semantic_rx(output_path=output_path, config=config, timeout_s=timeout_s, endpoint=endpoint)
        front = self.agc if agc else blocks.copy(gr.sizeof_gr_complex)
        self.connect(self, front)
        self.connect(front, (self, 0))
        if coarse_cfo:
            self.coarse_cfo = acquisition.coarse_frequency_correction(modulation, fec_code, samples_per_symbol,
                                                                      excess_bw)
            self.connect(front, self.coarse_cfo, self.demodulator)
        else:
            self.connect(front, self.demodulator)
        # The Costas loop's output is the constellation a user wants to see.
        self.connect(self.demodulator.costas, (self, 1))
        self.msg_connect(self.demodulator, "out", self.rx, "pdus")
        self.msg_connect(self.rx, "image", self, "image")
        self.msg_connect(self.rx, "info", self, "info")
        self.msg_connect(self.demodulator, "out", self, "pdus")     # for displays (semcom_image_sink) and loggers
        self.msg_connect(self.demodulator, "snr", self, "snr")

    @property
    def stats(self) -> dict:
        """semantic_rx's counters plus the packet layer's."""
        return {**self.rx.stats, "headers_detected": self.demodulator.headers_detected(),
                "packets_ok": self.demodulator.packets_ok(),
                "packets_failed_crc": self.demodulator.packets_failed_crc()}
