#!/usr/bin/env python3
"""Measure the packet error rate table of the real flowgraph and ship it as gr-semcom/presets/per_table_*.json.

    python scripts/measure_per_table.py [--modulation qpsk --fec cc --count 120]

The evaluation's fast channel (semcom.eval.channel.FastChannel) drops PDUs with these probabilities.
Rerun after changing the PHY (semcom.radio.packet): the sweep refuses a table whose PHY differs.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from semcom.eval.channel import PER_PDUS_PER_POINT, measure_per, shipped_per_table_path  # noqa: E402
from semcom.radio.packet import FEC_CODES, MODULATIONS  # noqa: E402
from semcom.radio.pdu_link import PhyConfig  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modulation", choices=MODULATIONS, default="qpsk")
    parser.add_argument("--fec", choices=FEC_CODES, default="cc")
    parser.add_argument("--count", type=int, default=PER_PDUS_PER_POINT, help="PDUs per length per SNR")
    parser.add_argument("--out", help="output JSON (default: the shipped preset)")
    args = parser.parse_args()
    phy = PhyConfig(modulation=args.modulation, fec_code=args.fec)
    table = measure_per(phy, count=args.count,
                        progress=lambda snr, per: print(f"{snr:+5.1f} dB  PER {per}", flush=True))
    out = Path(args.out) if args.out else shipped_per_table_path(phy)
    table.save(out)
    print(f"wrote {out} ({table.elapsed_s} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
