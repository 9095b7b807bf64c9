#!/usr/bin/env python3
"""Measure the packet error rate of every MCS on the real flowgraph and ship it as gr-semcom/per_table.json.

    python scripts/measure_per_table.py [--jobs 2] [--mcs qpsk-r12,...] [--out FILE]

Every MCS of semcom.radio.mcs.MCS_TABLE at every 0.5 dB from -5 to 25 dB Es/N0, for PDUs of 64 and 1000
bytes, through packet_tx -> channel_model (AWGN, the loopback's frequency and timing offsets) ->
packet_rx. A coarse pass sends 40 PDUs per length per point; every point where it saw both losses and
deliveries, and the points within 1 dB of it, get 1000 PDUs per length in all. The table records the
hash of the PHY's source; `bash .ci/run` fails when the PHY changed and this was not rerun.
"""

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from semcom.eval.channel import (PER_COARSE_PDUS, PER_LENGTHS, PER_SNR_GRID_DB, PER_STEEP_PDUS,  # noqa: E402
                                 PerCurve, PerTable, measure_point, phy_settings, phy_source_sha256,
                                 shipped_per_table_path)
from semcom.radio.mcs import MCS_NAMES, mcs_by_name  # noqa: E402
from semcom.radio.pdu_link import PhyConfig  # noqa: E402

STEEP_NEIGHBOURS = 2        # grid points (0.5 dB each) on either side of a mixed point that are refined too
SEED = 2024
TASKS_PER_WORKER = 20


def _run(task):
    mcs_name, snr_db, count, seed = task
    mcs = mcs_by_name(mcs_name)
    phy = PhyConfig(modulation=mcs.modulation, fec_code=mcs.fec_code)
    return task, measure_point(phy, snr_db, PER_LENGTHS, count, seed)


def _relative_cost(task):
    """Channel symbols the task sends, so the longest tasks start first."""
    from semcom.radio.packet import channel_symbols_for

    mcs = mcs_by_name(task[0])
    return task[2] * sum(channel_symbols_for(n, mcs.modulation, mcs.fec_code) for n in PER_LENGTHS)


def _measure(tasks, pool, bar, lost, sent, grid_db):
    for (mcs_name, snr_db, count, _), losses in pool.imap_unordered(_run, sorted(tasks, key=_relative_cost,
                                                                                 reverse=True)):
        i = grid_db.index(snr_db)
        for j, n_lost in enumerate(losses):
            lost[mcs_name][i][j] += n_lost
            sent[mcs_name][i][j] += count
        bar.update(_relative_cost((mcs_name, snr_db, count)) / 1e6)


def main() -> int:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="flowgraphs run in parallel (processes)")
    parser.add_argument("--mcs", default=",".join(MCS_NAMES), help="comma list of MCS names")
    parser.add_argument("--snr-db", help="comma list of Es/N0 points instead of the full grid (quick checks)")
    parser.add_argument("--coarse-pdus", type=int, default=PER_COARSE_PDUS, help="PDUs per length, every point")
    parser.add_argument("--steep-pdus", type=int, default=PER_STEEP_PDUS, help="PDUs per length on the steep part")
    parser.add_argument("--out", help=f"output JSON (default: {shipped_per_table_path()})")
    args = parser.parse_args()
    names = [mcs_by_name(n).name for n in args.mcs.split(",") if n]
    grid_db = [float(v) for v in args.snr_db.split(",")] if args.snr_db else list(PER_SNR_GRID_DB)
    started = time.monotonic()
    grid = range(len(grid_db))
    lost = {n: [[0] * len(PER_LENGTHS) for _ in grid] for n in names}
    sent = {n: [[0] * len(PER_LENGTHS) for _ in grid] for n in names}
    coarse = [(n, grid_db[i], args.coarse_pdus, SEED + 1000 * k + i) for k, n in enumerate(names) for i in grid]
    # Each flowgraph run leaves a few of GNU Radio's shared-memory buffer segments mapped until its process
    # ends; hundreds of runs in one process exhaust the system's segments (shmmni), so workers are renewed.
    with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=TASKS_PER_WORKER) as pool:
        total = sum(map(_relative_cost, coarse)) / 1e6
        with tqdm(total=total, unit="M sym", desc="coarse pass", dynamic_ncols=True) as bar:
            _measure(coarse, pool, bar, lost, sent, grid_db)
        steep = []
        for k, n in enumerate(names):
            mixed = [i for i in grid if any(0 < lost[n][i][j] < sent[n][i][j] for j in range(len(PER_LENGTHS)))]
            # also where the curve jumps from all-lost to none-lost between neighbours
            mixed += [i for i in grid[:-1] if any(lost[n][i][j] == sent[n][i][j] for j in range(len(PER_LENGTHS)))
                      and any(lost[n][i + 1][j] < sent[n][i + 1][j] for j in range(len(PER_LENGTHS)))]
            refine = sorted({i + d for i in mixed for d in range(-STEEP_NEIGHBOURS, STEEP_NEIGHBOURS + 1)} & set(grid))
            steep += [(n, grid_db[i], args.steep_pdus - args.coarse_pdus, SEED + 500_000 + 1000 * k + i)
                      for i in refine]
        total = sum(map(_relative_cost, steep)) / 1e6
        with tqdm(total=total, unit="M sym", desc=f"steep part ({len(steep)} points)", dynamic_ncols=True) as bar:
            _measure(steep, pool, bar, lost, sent, grid_db)
    curves = {}
    for n in names:
        mcs = mcs_by_name(n)
        per = [[round(lost[n][i][j] / sent[n][i][j], 5) for j in range(len(PER_LENGTHS))] for i in grid]
        curves[n] = PerCurve(n, mcs.modulation, mcs.fec_code, list(PER_LENGTHS), grid_db, per, sent[n])
    table = PerTable(phy_source_sha256(), phy_settings(PhyConfig()), curves, SEED,
                     round(time.monotonic() - started, 1))
    out = Path(args.out) if args.out else shipped_per_table_path()
    if names != list(MCS_NAMES):
        print(f"note: only {names} measured; the evaluation needs all of {list(MCS_NAMES)}")
    table.save(out)
    print(f"wrote {out} ({table.elapsed_s} s)")
    for n in names:
        curve = curves[n]
        for length_index, length in enumerate(PER_LENGTHS):
            good = [p[length_index] <= 0.01 for p in curve.per]
            onset = next((curve.snr_db[i] for i in range(len(good)) if all(good[i:])), "never")
            print(f"{n:10s} {length:5d} B: PER <= 1% from {onset} dB on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
