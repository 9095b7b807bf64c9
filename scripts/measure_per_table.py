#!/usr/bin/env python3
"""Measure the packet error rate of every MCS on the real flowgraph and ship it as gr-semcom/per_table.json.

    python scripts/measure_per_table.py [--jobs 2] [--mcs qpsk-r12,...] [--out FILE]
    python scripts/measure_per_table.py --verify [--reference REV] [--jobs 2]

Every MCS of semcom.radio.mcs.MCS_TABLE at every 0.5 dB from -5 to 25 dB Es/N0, for PDUs of 64 and 1000
bytes, through packet_tx -> channel_model (AWGN, the loopback's frequency and timing offsets) ->
packet_rx. A coarse pass sends 40 PDUs per length per point; every point where it saw both losses and
deliveries, and the points within 1 dB of it, get 1000 PDUs per length in all. The table records the
hash of the PHY's source; `bash .ci/run` fails when the PHY changed and this was not rerun.

``--verify`` is for a PHY change that should not move the PER (a new message port, a counter): it
re-measures the shipped table's steepest points, VERIFY_POINTS per MCS (where a small shift moves the PER
the most), with the table's own seeds and counts, so that what differs is the code, not the draw (runs of
one point with other seeds differ by more than binomial noise near the acquisition limit). If every count agrees with the table's (``channel.same_error_rate``: within
VERIFY_Z standard errors), the table gets the current PHY hash and a line in its note saying so; otherwise
it names the points that moved and leaves the table stale. With ``--reference REV`` (the revision whose
PHY measured the table), those points are also run on REV's PHY with the same seeds: where REV gives what
the current PHY gives, the table's count does not reproduce even on its own code (a run near the acquisition
limit; why is not established: elsewhere runs of the same seeds agree within a few PDUs), and the point
says nothing against the change.
"""

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from semcom.eval.channel import (PER_COARSE_PDUS, PER_LENGTHS, PER_SNR_GRID_DB, PER_STEEP_PDUS,  # noqa: E402
                                 VERIFY_Z, PerCurve, PerTable, measure_point, phy_settings, phy_source_sha256,
                                 same_error_rate, shipped_per_table_path)
from semcom.radio.mcs import MCS_NAMES, mcs_by_name  # noqa: E402
from semcom.radio.pdu_link import PhyConfig  # noqa: E402

STEEP_NEIGHBOURS = 2        # grid points (0.5 dB each) on either side of a mixed point that are refined too
SEED = 2024
TASKS_PER_WORKER = 20
VERIFY_POINTS = 2           # per MCS


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


def steepest_points(curve: PerCurve, count: int) -> list[int]:
    """Grid indices of the ``count`` points where the long PDUs' PER changes most between neighbours."""
    long = [p[-1] for p in curve.per]
    slope = [abs(long[min(i + 1, len(long) - 1)] - long[max(i - 1, 0)]) for i in range(len(long))]
    return sorted(sorted(range(len(long)), key=lambda i: -slope[i])[:count])


def verify(jobs: int, reference: str | None) -> int:
    """``--verify``: the shipped table's steepest points re-measured; the table re-stamped if none moved."""
    path = shipped_per_table_path()
    table = PerTable.load(path)
    tasks = []
    for k, (name, curve) in enumerate(table.curves.items()):
        for i in steepest_points(curve, VERIFY_POINTS):
            coarse_seed, steep_seed = _seeds(k, i)
            steep = curve.sent[i][-1] - PER_COARSE_PDUS
            tasks += [(name, curve.snr_db[i], PER_COARSE_PDUS, coarse_seed)] + \
                [(name, curve.snr_db[i], steep, steep_seed)] * (steep > 0)
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=TASKS_PER_WORKER) as pool:
        now = _point_losses(pool.imap_unordered(_run, sorted(tasks, key=_relative_cost, reverse=True)))
    sent = {(name, snr_db): table.curves[name].sent[table.curves[name].snr_db.index(snr_db)] for name, snr_db in now}
    table_losses = {point: [round(p * n) for p, n in zip(table.curves[point[0]].per[
        table.curves[point[0]].snr_db.index(point[1])], sent[point])] for point in now}
    moved = [point for point in sorted(now) if not _agree(table_losses[point], now[point], sent[point])]
    before = {}
    if moved and reference:
        before = _losses_on_revision(reference, table.phy_sha256, [t for t in tasks if t[:2] in moved])
    for point in sorted(now):
        name, snr_db = point
        for j, length in enumerate(PER_LENGTHS):
            n = sent[point][j]
            note = "" if point not in moved else "  MOVED" if point not in before else \
                f"  {reference}: {before[point][j]}/{n}"
            print(f"{name:10s} {snr_db:5.1f} dB {length:5d} B: table {table_losses[point][j]}/{n}, "
                  f"now {now[point][j]}/{n}{note}")
    # A point where the table's own PHY, run now, gives what the current PHY gives does not reproduce the
    # table (its run went otherwise), and says nothing against the change.
    unreproduced = [point for point in moved if point in before and _agree(before[point], now[point], sent[point])]
    moved = [point for point in moved if point not in unreproduced]
    elapsed = round(time.monotonic() - started, 1)
    if moved:
        print(f"the PER moved at {', '.join(f'{n} {s} dB' for n, s in moved)}: the table stays stale; remeasure it"
              f"{'' if reference else ', or compare those points with the PHY that measured it (--reference REV)'}"
              f" ({elapsed} s)")
        return 1
    old, new = table.phy_sha256, phy_source_sha256()
    table.phy_sha256 = new
    table.note += (f"; PHY hash {new} (was {old}) stamped by --verify: {len(now)} steep points re-measured with the "
                   f"table's seeds agree within {VERIFY_Z} standard errors" +
                   (f" (with the table's PHY, {reference}, where the table itself does not reproduce: "
                    f"{', '.join(f'{n} {s} dB' for n, s in unreproduced)})" if unreproduced else ""))
    table.save(path)
    print(f"every point agrees: {path} now carries PHY hash {new} ({elapsed} s)")
    return 0


def _point_losses(results) -> dict[tuple[str, float], list[int]]:
    """(MCS, SNR) -> PDUs lost per length, summed over the point's tasks."""
    lost = defaultdict(lambda: [0] * len(PER_LENGTHS))
    for (name, snr_db, _, _), losses in results:
        lost[name, snr_db] = [a + b for a, b in zip(lost[name, snr_db], losses)]
    return dict(lost)


def _agree(lost_a: list[int], lost_b: list[int], sent: list[int]) -> bool:
    """Two measurements of one point, each with ``sent[j]`` PDUs of length j, agree at every length."""
    return all(same_error_rate(a, n, b, n) for a, b, n in zip(lost_a, lost_b, sent))


# Runs in the reference revision's tree (its semcom, not this checkout's): measure_point of each task.
_REFERENCE_RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from semcom.eval.channel import PER_LENGTHS, measure_point
from semcom.radio.mcs import mcs_by_name
from semcom.radio.pdu_link import PhyConfig
for name, snr_db, count, seed in json.loads(sys.argv[2]):
    mcs = mcs_by_name(name)
    losses = measure_point(PhyConfig(modulation=mcs.modulation, fec_code=mcs.fec_code), snr_db, PER_LENGTHS, count, seed)
    print(json.dumps([[name, snr_db, count, seed], losses]), flush=True)
"""


def _losses_on_revision(revision: str, table_sha256: str, tasks: list) -> dict[tuple[str, float], list[int]]:
    """``tasks`` measured on the PHY of git ``revision`` (a detached worktree), which must be the PHY the
    table was measured on."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="semcom-per-reference-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), revision], cwd=repo, check=True)
        try:
            if phy_source_sha256(tree / "python" / "semcom") != table_sha256:
                raise SystemExit(f"{revision}'s PHY is not the one the table was measured on ({table_sha256})")
            out = subprocess.run([sys.executable, "-c", _REFERENCE_RUNNER, str(tree / "python"), json.dumps(tasks)],
                                 cwd=scratch, check=True, capture_output=True, text=True).stdout
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo, check=True)
    return _point_losses((tuple(task), losses) for task, losses in map(json.loads, out.splitlines()))


def _seeds(k: int, i: int) -> tuple[int, int]:
    """The coarse and steep passes' seeds of MCS ``k`` (its place in the run) at grid point ``i``."""
    return SEED + 1000 * k + i, SEED + 500_000 + 1000 * k + i


def main() -> int:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="flowgraphs run in parallel (processes)")
    parser.add_argument("--mcs", default=",".join(MCS_NAMES), help="comma list of MCS names")
    parser.add_argument("--snr-db", help="comma list of Es/N0 points instead of the full grid (quick checks)")
    parser.add_argument("--coarse-pdus", type=int, default=PER_COARSE_PDUS, help="PDUs per length, every point")
    parser.add_argument("--steep-pdus", type=int, default=PER_STEEP_PDUS, help="PDUs per length on the steep part")
    parser.add_argument("--out", help=f"output JSON (default: {shipped_per_table_path()})")
    parser.add_argument("--verify", action="store_true",
                        help="check the shipped table against the current PHY at its steepest points (see above)")
    parser.add_argument("--reference", metavar="REV",
                        help="with --verify: the git revision whose PHY measured the table, run where the table "
                             "and the current PHY disagree")
    args = parser.parse_args()
    if args.verify:
        return verify(args.jobs, args.reference)
    names = [mcs_by_name(n).name for n in args.mcs.split(",") if n]
    grid_db = [float(v) for v in args.snr_db.split(",")] if args.snr_db else list(PER_SNR_GRID_DB)
    started = time.monotonic()
    grid = range(len(grid_db))
    lost = {n: [[0] * len(PER_LENGTHS) for _ in grid] for n in names}
    sent = {n: [[0] * len(PER_LENGTHS) for _ in grid] for n in names}
    coarse = [(n, grid_db[i], args.coarse_pdus, _seeds(k, i)[0]) for k, n in enumerate(names) for i in grid]
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
            steep += [(n, grid_db[i], args.steep_pdus - args.coarse_pdus, _seeds(k, i)[1]) for i in refine]
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
