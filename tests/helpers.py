"""Small helpers shared by test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import time


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    """Poll ``condition()`` until it is true or ``timeout_s`` passed; flowgraphs run in other threads."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def stepped_per_table(step_db: float):
    """A synthetic PER table: MCS number i works from ``step_db`` x i dB, with PER 0.1 (64 B) / 0.5 (1000 B)
    at that knee, none from 1 dB above and nearly all lost 1 dB below (long PDUs fail first), so scheme
    and planner choices do not move when the shipped table is remeasured."""
    from semcom.eval.channel import PER_LENGTHS, PerCurve, PerTable
    from semcom.radio.mcs import MCS_TABLE

    curves = {}
    for i, m in enumerate(MCS_TABLE):
        knee = step_db * i
        grid = [-10.0, knee - 1, knee, knee + 1, 30.0]
        per = [[1.0, 1.0], [0.6, 0.95], [0.1, 0.5], [0.0, 0.0], [0.0, 0.0]]
        curves[m.name] = PerCurve(m.name, m.modulation, m.fec_code, list(PER_LENGTHS), grid, per, [[0, 0]] * 5)
    return PerTable("synthetic", {}, curves)
