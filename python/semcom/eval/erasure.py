"""PDU erasure experiments: drop PDUs at random between encoder and receiver, measure what comes out.

The erasure channel sits where the packet layer's CRC would discard a damaged packet, so every PDU
(header copies included) is independently lost with probability ``rate``. No radio is involved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semcom.codec.frame import FrameAssembler, Segment, _parse_key_records, parse_pdu
from semcom.codec.pipeline import Encoded, SemanticDecoder
from semcom.eval.metrics import psnr_db


@dataclass
class ErasureTrial:
    """One image through one seeded erasure pattern. Quality fields are None when no image came out."""

    rate: float
    seed: int
    pdus_sent: int
    pdus_delivered: int
    header_arrived: bool
    text_delivered: bool
    tiles_delivered: int                 # key tiles carried by delivered KEY PDUs
    image_out: bool
    key_psnr_db: float | None = None
    generated_share: float | None = None
    tiles_expected: int | None = None
    tiles_received: int | None = None
    text_lost: bool | None = None


def erase(pdus: list[bytes], rate: float, seed: int) -> list[bytes]:
    """Each PDU independently lost with probability ``rate`` (numpy generator seeded with ``seed``)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"erasure rate {rate} outside 0..1")
    keep = np.random.default_rng(seed).random(len(pdus)) >= rate
    return [p for p, k in zip(pdus, keep) if k]


def erasure_trial(image: np.ndarray, encoded: Encoded, decoder: SemanticDecoder, rate: float, seed: int,
                  pdu_bytes: int | None = None) -> ErasureTrial:
    """image: the (H, W, 3) uint8 original of ``encoded``; decodes what the erased PDU stream gives."""
    pdus = encoded.to_pdus(pdu_bytes) if pdu_bytes else encoded.to_pdus()
    delivered = erase(pdus, rate, seed)
    parsed = [parse_pdu(p) for p in delivered]
    key_pdus = {p.index: p for p in parsed if p.segment == Segment.KEY}
    tiles = sum(len(_parse_key_records(p.payload)) for p in key_pdus.values())
    trial = ErasureTrial(rate, seed, len(pdus), len(delivered),
                         header_arrived=any(p.segment == Segment.HEADER for p in parsed),
                         text_delivered=any(p.segment == Segment.TEXT for p in parsed),
                         tiles_delivered=tiles, image_out=False)
    assembler = FrameAssembler()
    frames = [f for p in delivered for f in assembler.push(p)] + assembler.flush_all()
    if not frames:
        return trial
    (frame,) = frames
    recon = decoder.decode(frame)
    trial.image_out = True
    trial.generated_share = recon.generated_share
    trial.tiles_expected = recon.tiles_expected
    trial.tiles_received = recon.tiles_received
    trial.text_lost = recon.text_lost
    if encoded.key_mask.any():
        trial.key_psnr_db = psnr_db(image, recon.image, encoded.key_mask)
    return trial


@dataclass
class ErasureRow:
    rate: float
    frames_sent: int
    frames_out: int
    mean_key_psnr_db: float          # over the images that came out
    mean_generated_share: float      # over the images that came out
    text_lost_share: float           # over the images that came out


def summarise(trials: list[ErasureTrial]) -> list[ErasureRow]:
    rows = []
    for rate in sorted({t.rate for t in trials}):
        at = [t for t in trials if t.rate == rate]
        out = [t for t in at if t.image_out]
        psnrs = [t.key_psnr_db for t in out if t.key_psnr_db is not None]
        rows.append(ErasureRow(
            rate, len(at), len(out),
            float(np.mean(psnrs)) if psnrs else float("nan"),
            float(np.mean([t.generated_share for t in out])) if out else float("nan"),
            float(np.mean([t.text_lost for t in out])) if out else float("nan")))
    return rows


def markdown_table(rows: list[ErasureRow]) -> str:
    lines = ["| PDU erasure | frames out / sent | mean key PSNR (dB) | mean generated key share | text lost |",
             "|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.rate:.0%} | {r.frames_out} / {r.frames_sent} | {r.mean_key_psnr_db:.2f} | "
                     f"{r.mean_generated_share:.1%} | {r.text_lost_share:.1%} |")
    return "\n".join(lines)
