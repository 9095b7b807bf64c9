"""PDU channels for the evaluation: the real GNU Radio flowgraph, and a fast equivalent measured from it.

``measure_per`` sends many PDUs of a few lengths through one long-running ``packet_tx ->
channel_model -> packet_rx`` flowgraph per SNR and records which came back (CRC passed): a packet
error rate table, PER(length, SNR), saved as JSON. ``FastChannel`` then drops each PDU with the
table's probability (seeded numpy generator), which is what the flowgraph does to a PDU of that
length at that SNR, without running it. ``FlowgraphChannel`` runs the flowgraph for every
transmission. ``tests/test_eval.py`` checks that the two agree on PER.

Rayleigh block fading (``fading="rayleigh"``): every PDU gets its own power gain g ~ Exp(1) (a complex
Gaussian amplitude, constant over the burst), i.e. a per-packet SNR of ``snr_db + 10 log10 g``. The
receiver's correlator uses an absolute threshold that assumes unit gain, so we model an ideal AGC:
the burst is normalised and only its SNR changes. The PDU is then dropped with the AWGN PER at its
own SNR. This is the AWGN table averaged over the per-packet SNR distribution, drawn packet by packet.
The flowgraph mode carries AWGN only.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# PDU lengths (bytes) the PER is measured at; between them PER is interpolated linearly in length.
# They span what the schemes send: header/text PDUs (30-80 bytes), tails of segments, full 1000-byte PDUs.
PER_LENGTHS = (48, 250, 1000)
PER_SNR_GRID_DB = tuple(float(s) for s in range(-8, 21))     # beyond it PER is held at the edge values
PER_PDUS_PER_POINT = 120
FADINGS = ("awgn", "rayleigh")
CHANNEL_MODES = ("fast", "flowgraph")
_SEQUENCE_BYTES = 4


@dataclass
class PerTable:
    """Packet error rate of the real PHY: ``per[i][j]`` at ``snr_db[i]`` for PDUs of ``lengths[j]`` bytes."""

    phy: dict
    lengths: list[int]
    snr_db: list[float]
    per: list[list[float]]
    pdus_per_point: int
    seed: int
    elapsed_s: float = 0.0
    note: str = field(default="CRC-passed PDUs out of PDUs sent, one flowgraph run per SNR (semcom.eval.channel)")

    def packet_error_rate(self, length: int, snr_db: float | np.ndarray) -> np.ndarray:
        """PER of a ``length``-byte PDU at ``snr_db`` (scalar or array), interpolated; held at the grid edges."""
        per = np.asarray(self.per, float)
        snrs = np.asarray(self.snr_db, float)
        lengths = np.asarray(self.lengths, float)
        at_snr = np.stack([np.interp(snr_db, snrs, per[:, j]) for j in range(len(lengths))], axis=-1)
        length = float(np.clip(length, lengths[0], lengths[-1]))
        j = int(np.clip(np.searchsorted(lengths, length) - 1, 0, len(lengths) - 2))
        t = (length - lengths[j]) / (lengths[j + 1] - lengths[j])
        return (1 - t) * at_snr[..., j] + t * at_snr[..., j + 1]

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PerTable:
        return cls(**json.loads(Path(path).read_text()))

    def matches(self, phy) -> bool:
        return self.phy == phy_description(phy)


def phy_description(phy) -> dict:
    """The PHY config plus a hash of the modem's source: a table measured on another modem is stale."""
    import hashlib

    from semcom.radio import packet

    source = Path(packet.__file__).read_bytes()
    return {**asdict(phy), "packet_py_sha256": hashlib.sha256(source).hexdigest()[:16]}


def _numbered_pdus(lengths: list[int], count: int, rng: np.random.Generator) -> list[bytes]:
    """``count`` random PDUs per length, interleaved; each starts with a unique sequence number."""
    pdus = []
    for i in range(count):
        for length in lengths:
            seq = len(pdus).to_bytes(_SEQUENCE_BYTES, "big")
            pdus.append(seq + rng.integers(0, 256, length - _SEQUENCE_BYTES, dtype=np.uint8).tobytes())
    return pdus


def measure_point(snr_db: float, lengths, count: int, phy, seed: int) -> list[float]:
    """PER per length at one SNR from one flowgraph run of ``count`` PDUs per length."""
    from semcom.radio.pdu_link import send_pdus

    rng = np.random.default_rng(seed)
    pdus = _numbered_pdus(list(lengths), count, rng)
    result = send_pdus(pdus, snr_db, phy, noise_seed=int(rng.integers(1, 2**31 - 1)))
    received = set(result.received)
    return [1.0 - sum(1 for p in pdus if len(p) == n and p in received) / count for n in lengths]


def measure_per(phy=None, snr_grid_db=PER_SNR_GRID_DB, lengths=PER_LENGTHS, count: int = PER_PDUS_PER_POINT,
                seed: int = 2024, progress=None) -> PerTable:
    """Measure the PER table with the real flowgraph (about 4 s per SNR point for the defaults on one core)."""
    from semcom.radio.pdu_link import PhyConfig

    phy = phy or PhyConfig()
    started = time.monotonic()
    per = []
    for i, snr in enumerate(snr_grid_db):
        per.append(measure_point(snr, lengths, count, phy, seed + i))
        if progress:
            progress(snr, per[-1])
    return PerTable(phy_description(phy), list(lengths), [float(s) for s in snr_grid_db], per, count, seed,
                    round(time.monotonic() - started, 1))


def shipped_per_table_path(phy) -> Path:
    from semcom.paths import data_dir

    return data_dir() / "presets" / f"per_table_{phy.key()}.json"


def per_table_for(phy, cache_dir: str | Path | None = None, progress=None) -> PerTable:
    """The shipped table when it was measured with this PHY (and this modem source), else one cached in
    ``cache_dir``, measured on demand (about 2 minutes)."""
    try:
        shipped = shipped_per_table_path(phy)
        if shipped.is_file() and PerTable.load(shipped).matches(phy):
            return PerTable.load(shipped)
    except FileNotFoundError:
        pass
    if cache_dir is None:
        raise FileNotFoundError(f"no shipped PER table for {phy}; give a cache directory to measure one")
    cached = Path(cache_dir) / f"per_table_{phy.key()}.json"
    if cached.is_file() and PerTable.load(cached).matches(phy):
        return PerTable.load(cached)
    table = measure_per(phy, progress=progress)
    table.save(cached)
    return table


@dataclass
class Delivery:
    delivered: list[bytes]        # PDUs that passed the CRC, in the order sent
    sent: int
    lost: int


class FastChannel:
    """Drops each PDU independently with the measured PER of its length at its (per-packet) SNR."""

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

    def transmit(self, pdus: list[bytes], snr_db: float, rng: np.random.Generator) -> Delivery:
        snrs = self.packet_snr_db(snr_db, len(pdus), rng)
        draws = rng.random(len(pdus))
        keep = [draws[i] >= self.table.packet_error_rate(len(p), snrs[i]) for i, p in enumerate(pdus)]
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

    def transmit(self, pdus: list[bytes], snr_db: float, rng: np.random.Generator) -> Delivery:
        from semcom.radio.pdu_link import send_pdus

        if not pdus:
            return Delivery([], 0, 0)
        result = send_pdus(pdus, snr_db, self.phy, noise_seed=int(rng.integers(1, 2**31 - 1)))
        # The CRC guarantees a PDU is exact or absent; identical copies (the header is sent twice) count apart.
        received = Counter(result.received)
        delivered = []
        for p in pdus:
            if received[p] > 0:
                received[p] -= 1
                delivered.append(p)
        return Delivery(delivered, len(pdus), len(pdus) - len(delivered))
