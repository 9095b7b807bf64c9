"""PDU channels for the evaluation: the real GNU Radio flowgraph, and a fast equivalent measured from it.

``measure_per_table`` sends PDUs of two lengths through one ``packet_tx -> channel_model -> packet_rx``
flowgraph run per (MCS, SNR) and records which came back (CRC passed): a packet error rate table,
PER(MCS, length, SNR), for every row of ``semcom.radio.mcs.MCS_TABLE`` at 0.5 dB steps. Points on the
steep part of a curve get at least ``PER_STEEP_PDUS`` PDUs per length. The table ships as
``gr-semcom/per_table.json`` and carries a hash of the PHY's source: a table measured on another modem
is stale, and loading it fails with the command that regenerates it (``python scripts/measure_per_table.py``)
instead of silently measuring again.

``FastChannel`` drops each PDU with the table's probability (seeded numpy generator), which is what the
flowgraph does to a PDU of that length at that SNR, without running it. ``FlowgraphChannel`` runs the
flowgraph for every transmission. ``tests/test_eval.py`` checks that the two agree where the curve is steep.

Between the two measured lengths the PER follows a header-plus-per-byte model: -ln(1 - PER) is linear in
the PDU length (a fixed chance to lose the burst, then independent byte errors); in SNR it is linear.

Rayleigh block fading (``fading="rayleigh"``): every PDU gets its own power gain g ~ Exp(1) (a complex
Gaussian amplitude, constant over the burst), i.e. a per-packet SNR of ``snr_db + 10 log10 g``, with an
ideal AGC (the burst is normalised and only its SNR changes); the PDU is dropped with the AWGN PER at its
own SNR. The flowgraph mode carries AWGN only.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# PDU lengths (bytes) the PER is measured at: a short header/text PDU and a full 1000-byte key or file PDU
# (PipelineConfig.pdu_bytes); between and beyond them the header-plus-per-byte model interpolates.
PER_LENGTHS = (64, 1000)
PER_SNR_GRID_DB = tuple(round(-5.0 + 0.5 * i, 1) for i in range(61))     # -5 .. 25 dB
PER_COARSE_PDUS = 40          # per length, every point
PER_STEEP_PDUS = 1000         # per length, where the coarse pass saw both losses and deliveries (and 1 dB around)
PER_TABLE_NAME = "per_table.json"
REGENERATE_COMMAND = "python scripts/measure_per_table.py"
VERIFY_COMMAND = "python scripts/measure_per_table.py --verify"
VERIFY_Z = 3.5      # a re-measured count further than this many standard errors from the table's has moved
# The PHY's behaviour is the code of these modules plus the PhyConfig values recorded in the table.
PHY_SOURCES = ("radio/packet.py", "radio/pdu_link.py")
FADINGS = ("awgn", "rayleigh")
CHANNEL_MODES = ("fast", "flowgraph")
_SEQUENCE_BYTES = 4
_MAX_SURVIVAL_EXPONENT = 30.0      # -ln(1 - PER) at PER = 1


class StalePerTable(RuntimeError):
    """The shipped PER table was measured on other PHY code or settings."""


def phy_source_sha256(package: Path | None = None) -> str:
    """Hash of the PHY's source files (of ``package``, a ``semcom`` source folder; default this one): any
    change to the modem or the simulated link changes it."""
    import semcom

    root = package or Path(semcom.__file__).parent
    digest = hashlib.sha256()
    for name in PHY_SOURCES:
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def phy_settings(phy) -> dict:
    """The PhyConfig fields that every MCS of the table shares (modulation and code vary per curve)."""
    settings = asdict(phy)
    settings.pop("modulation")
    settings.pop("fec_code")
    return settings


@dataclass
class PerCurve:
    """One MCS: ``per[i][j]`` at ``snr_db[i]`` for PDUs of ``lengths[j]`` bytes, out of ``sent[i][j]`` PDUs."""

    mcs: str
    modulation: str
    fec_code: str
    lengths: list[int]
    snr_db: list[float]
    per: list[list[float]]
    sent: list[list[int]]

    def packet_error_rate(self, length: int, snr_db: float | np.ndarray) -> np.ndarray:
        """PER of a ``length``-byte PDU at ``snr_db`` (scalar or array); held at the grid edges."""
        per = np.clip(np.asarray(self.per, float), 0.0, 1.0)
        exponent = np.minimum(-np.log(np.maximum(1.0 - per, 1e-300)), _MAX_SURVIVAL_EXPONENT)
        (l0, l1), snrs = self.lengths, np.asarray(self.snr_db, float)
        e0 = np.interp(snr_db, snrs, exponent[:, 0])
        e1 = np.interp(snr_db, snrs, exponent[:, 1])
        at_length = np.maximum(e0 + (e1 - e0) * (float(length) - l0) / (l1 - l0), 0.0)
        return 1.0 - np.exp(-at_length)


@dataclass
class PerTable:
    """PER curves of every MCS, measured on the flowgraph whose source hashes to ``phy_sha256``."""

    phy_sha256: str
    phy: dict
    curves: dict[str, PerCurve]
    seed: int = 2024
    elapsed_s: float = 0.0
    command: str = REGENERATE_COMMAND
    note: str = field(default="CRC-passed PDUs out of PDUs sent, one flowgraph run per (MCS, SNR) point")

    def curve(self, mcs: str) -> PerCurve:
        try:
            return self.curves[mcs]
        except KeyError:
            raise KeyError(f"the PER table has no curve for MCS {mcs!r} (has {sorted(self.curves)}); "
                           f"regenerate it: {REGENERATE_COMMAND}") from None

    def packet_error_rate(self, mcs: str, length: int, snr_db: float | np.ndarray) -> np.ndarray:
        return self.curve(mcs).packet_error_rate(length, snr_db)

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        Path(path).write_text(json.dumps(data, indent=None, separators=(",", ":")).replace('},"', '},\n"') + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PerTable:
        data = json.loads(Path(path).read_text())
        data["curves"] = {name: PerCurve(**curve) for name, curve in data["curves"].items()}
        return cls(**data)

    def stale_reason(self, phy=None) -> str | None:
        """Why this table does not describe the current PHY code (and ``phy``'s settings), or None."""
        from semcom.radio.mcs import MCS_TABLE
        from semcom.radio.pdu_link import PhyConfig

        if self.phy_sha256 != phy_source_sha256():
            return f"PHY source hash {phy_source_sha256()} differs from the table's {self.phy_sha256}"
        if self.phy != phy_settings(phy or PhyConfig()):
            return f"PHY settings {phy_settings(phy or PhyConfig())} differ from the table's {self.phy}"
        for mcs in MCS_TABLE:
            curve = self.curves.get(mcs.name)
            if curve is None or (curve.modulation, curve.fec_code) != (mcs.modulation, mcs.fec_code):
                return f"MCS {mcs.name} ({mcs.modulation}, {mcs.fec_code}) is not in the table as such"
        return None


def shipped_per_table_path() -> Path:
    from semcom.paths import data_dir

    return data_dir() / PER_TABLE_NAME


def shipped_per_table(phy=None) -> PerTable:
    """The shipped table; StalePerTable (naming the command that regenerates it) if the PHY changed."""
    path = shipped_per_table_path()
    if not path.is_file():
        raise StalePerTable(f"no PER table at {path}; measure it: {REGENERATE_COMMAND}")
    table = PerTable.load(path)
    reason = table.stale_reason(phy)
    if reason:
        raise StalePerTable(f"{path} is stale ({reason}); regenerate it: {REGENERATE_COMMAND} (or, for a "
                            f"change that should not move the PER, check that it did not: {VERIFY_COMMAND})")
    return table


def same_error_rate(lost_a: int, sent_a: int, lost_b: int, sent_b: int, z_max: float = VERIFY_Z) -> bool:
    """Whether two PER measurements agree: the two-proportion z statistic of their losses is at most
    ``z_max`` (pooled standard error; two points that both lost all or nothing agree)."""
    pooled = (lost_a + lost_b) / (sent_a + sent_b)
    error = math.sqrt(pooled * (1 - pooled) * (1 / sent_a + 1 / sent_b))
    difference = abs(lost_a / sent_a - lost_b / sent_b)
    return difference == 0 if error == 0 else difference / error <= z_max


def numbered_pdus(lengths: list[int], count: int, rng: np.random.Generator) -> list[bytes]:
    """``count`` random PDUs per length, interleaved; each starts with a unique sequence number."""
    pdus = []
    for _ in range(count):
        for length in lengths:
            seq = len(pdus).to_bytes(_SEQUENCE_BYTES, "big")
            pdus.append(seq + rng.integers(0, 256, length - _SEQUENCE_BYTES, dtype=np.uint8).tobytes())
    return pdus


def measure_point(phy, snr_db: float, lengths, count: int, seed: int) -> list[int]:
    """PDUs lost per length out of ``count`` per length, from one flowgraph run at ``snr_db``."""
    from semcom.radio.pdu_link import send_pdus

    rng = np.random.default_rng(seed)
    pdus = numbered_pdus(list(lengths), count, rng)
    result = send_pdus(pdus, snr_db, phy, noise_seed=int(rng.integers(1, 2**31 - 1)))
    received = set(result.received)
    return [count - sum(1 for p in pdus if len(p) == n and p in received) for n in lengths]


@dataclass
class Delivery:
    delivered: list[bytes]        # PDUs that passed the CRC, in the order sent
    sent: int
    lost: int


class FastChannel:
    """Drops each PDU independently with the measured PER of its MCS and length at its (per-packet) SNR."""

    mode = "fast"

    def __init__(self, table: PerTable, fading: str = "awgn"):
        if fading not in FADINGS:
            raise ValueError(f"unknown fading {fading!r}; choose one of {FADINGS}")
        self.table, self.fading = table, fading

    def packet_snr_db(self, snr_db: float, count: int, rng: np.random.Generator) -> np.ndarray:
        if self.fading == "awgn":
            return np.full(count, float(snr_db))
        gain = rng.exponential(1.0, count)              # |h|^2 of a unit-power complex Gaussian tap
        return snr_db + 10 * np.log10(np.maximum(gain, 1e-12))

    def transmit(self, pdus: list[bytes], mcs: str, snr_db: float, rng: np.random.Generator) -> Delivery:
        return self.transmit_each(pdus, [mcs] * len(pdus), snr_db, rng)

    def transmit_each(self, pdus: list[bytes], mcs: list[str], snr_db: float, rng: np.random.Generator) -> Delivery:
        """``pdus[i]`` on MCS ``mcs[i]``: each PDU is lost with the PER of its own MCS and length."""
        snrs = self.packet_snr_db(snr_db, len(pdus), rng)
        draws = rng.random(len(pdus))
        keep = [draws[i] >= self.table.curve(m).packet_error_rate(len(p), snrs[i])
                for i, (p, m) in enumerate(zip(pdus, mcs))]
        delivered = [p for p, k in zip(pdus, keep) if k]
        return Delivery(delivered, len(pdus), len(pdus) - len(delivered))


class FlowgraphChannel:
    """Every transmission through the GNU Radio flowgraph (AWGN, frequency and timing offset)."""

    mode = "flowgraph"

    def __init__(self, phy=None, fading: str = "awgn"):
        from semcom.radio.pdu_link import PhyConfig

        if fading != "awgn":
            raise ValueError("the flowgraph channel mode carries AWGN only; Rayleigh block fading is "
                             "modelled by the fast channel (see semcom.eval.channel)")
        self.phy = phy or PhyConfig()
        self.fading = fading

    def transmit(self, pdus: list[bytes], mcs: str, snr_db: float, rng: np.random.Generator) -> Delivery:
        return self.transmit_each(pdus, [mcs] * len(pdus), snr_db, rng)

    def transmit_each(self, pdus: list[bytes], mcs: list[str], snr_db: float, rng: np.random.Generator) -> Delivery:
        """``pdus[i]`` on MCS ``mcs[i]``, all in one flowgraph run (one receiver reads each burst's MCS from
        its header)."""
        from semcom.radio.pdu_link import send_pdus

        if not pdus:
            return Delivery([], 0, 0)
        result = send_pdus(pdus, snr_db, self.phy, noise_seed=int(rng.integers(1, 2**31 - 1)), mcs=mcs)
        # The CRC guarantees a PDU is exact or absent; identical copies (the header is sent twice) count apart.
        received = Counter(result.received)
        delivered = []
        for p in pdus:
            if received[p] > 0:
                received[p] -= 1
                delivered.append(p)
        return Delivery(delivered, len(pdus), len(pdus) - len(delivered))
