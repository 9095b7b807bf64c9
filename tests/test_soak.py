"""A reduced soak: ~150 small images through one long-running loopback flowgraph at mixed SNRs.

No image may get stuck (each comes out or is accounted lost within a timeout), no decode may fail,
and RSS must stay flat after warm-up. ``benchmarks/soak.py --images 1000`` is the full run.

It runs in a process of its own: inside the multi-GB test process, allocator noise from earlier tests
moved RSS by up to ~10 MB and made the leak bound flaky.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz_counts import record

pytest_plugins = ["fuzz_counts"]

SOAK_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"
IMAGES = 150
RSS_GROWTH_LIMIT_MB = 8.0       # 150 images: a leak of ~70 kB per image or more fails (8 intervals of 15 images after warm-up)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_soak_one_flowgraph_many_images(tmp_path):
    out = tmp_path / "soak.json"
    run = subprocess.run([sys.executable, str(SOAK_SCRIPT), "--images", str(IMAGES), "--snr-db", "20", "10", "6", "2",
                          "--rss-every", "15", "--per-snr", "10", "--json", str(out)],
                         capture_output=True, text=True, timeout=170)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    summary = json.loads(out.read_text())
    outcomes = {k: 0 for k in ("out_complete", "out_partial", "header_lost", "nothing_arrived", "stuck", "decode_error")}
    outcomes.update(summary["outcomes"])
    print({k: summary[k] for k in ("outcomes", "by_snr", "rss_mb", "rss_growth_after_warmup_mb", "elapsed_s")})
    record("soak images through one flowgraph", sum(outcomes.values()))
    assert sum(outcomes.values()) == IMAGES
    assert outcomes["stuck"] == 0 and outcomes["decode_error"] == 0, outcomes
    # The mix really exercised the loss paths, and the clean SNR really delivered.
    clean = summary["by_snr"]["20.0"]
    assert clean.get("out_complete", 0) >= 0.8 * sum(clean.values())
    assert outcomes["out_partial"] > 0
    assert outcomes["header_lost"] + outcomes["nothing_arrived"] > 0
    rx = summary["rx_stats"]
    assert rx["images_out"] == outcomes["out_complete"] + outcomes["out_partial"]
    assert summary["rss_growth_after_warmup_mb"] < RSS_GROWTH_LIMIT_MB, summary["rss_mb"]
