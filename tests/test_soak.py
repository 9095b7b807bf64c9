"""A reduced soak: ~150 small images through one long-running loopback flowgraph at mixed SNRs.

No image may get stuck (each comes out or is accounted lost within a timeout), no decode may fail,
and RSS must stay flat after warm-up. ``benchmarks/soak.py --images 1000`` is the full run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from fuzz_counts import record

pytest_plugins = ["fuzz_counts"]

SOAK_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"
IMAGES = 150
RSS_GROWTH_LIMIT_MB = 8.0       # 150 images: a leak of 50 kB per image would show


def load_soak():
    spec = importlib.util.spec_from_file_location("semcom_soak", SOAK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module         # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_soak_one_flowgraph_many_images():
    soak = load_soak()
    result = soak.soak(IMAGES, snrs_db=(20.0, 10.0, 6.0, 4.0), rss_every=15, per_snr=10)
    summary = result.summary()
    print({k: summary[k] for k in ("outcomes", "by_snr", "rss_mb", "rss_growth_after_warmup_mb", "elapsed_s")})
    record("soak images through one flowgraph", sum(result.outcomes.values()))
    assert sum(result.outcomes.values()) == IMAGES
    assert result.outcomes["stuck"] == 0 and result.outcomes["decode_error"] == 0, result.outcomes
    # The mix really exercised the loss paths, and the clean SNR really delivered.
    assert result.by_snr[20.0]["out_complete"] >= 0.8 * sum(result.by_snr[20.0].values())
    assert result.outcomes["out_partial"] > 0
    assert result.outcomes["header_lost"] + result.outcomes["nothing_arrived"] > 0
    rx = result.rx_stats
    assert rx["images_out"] == result.outcomes["out_complete"] + result.outcomes["out_partial"]
    assert result.rss_growth_mb() < RSS_GROWTH_LIMIT_MB, summary["rss_mb"]
