"""The modulation-and-coding table: every MCS is a stock constellation and a gr-fec code of packet.py.

A link-adapting radio picks one row per SNR; the evaluation scores every scheme at every row and reports
each at its best one (``semcom eval``), or at one forced row (``--mcs NAME``). Rows are ordered from the
most robust to the fastest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mcs:
    name: str
    modulation: str     # packet.MODULATIONS
    fec_code: str       # packet.FEC_CODES

    @property
    def payload_bits_per_symbol(self) -> float:
        """Information bits per payload channel symbol (before CRC, header and ramps)."""
        from semcom.radio.packet import FEC_CODE_RATES, bits_per_symbol

        return bits_per_symbol(self.modulation) * FEC_CODE_RATES[self.fec_code]


MCS_TABLE: tuple[Mcs, ...] = (
    Mcs("bpsk-r14", "bpsk", "cc14"),
    Mcs("bpsk-r12", "bpsk", "cc"),
    Mcs("qpsk-r12", "qpsk", "cc"),
    Mcs("qpsk-r34", "qpsk", "cc34"),
    Mcs("16qam-r12", "16qam", "cc"),
    Mcs("16qam-r34", "16qam", "cc34"),
)
MCS_NAMES = tuple(m.name for m in MCS_TABLE)


def mcs_by_name(name: str) -> Mcs:
    for mcs in MCS_TABLE:
        if mcs.name == name:
            return mcs
    raise ValueError(f"unknown MCS {name!r}; choose one of {', '.join(MCS_NAMES)}")
