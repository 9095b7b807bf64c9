"""semcom eval: metrics sanity, the fast channel against the flowgraph, the sweep's CSV/plots and scheme behaviour.

Tiny images (two 96x96 crops) and two SNRs keep the file well under a minute and a half.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from semcom.codec.imageio import save_png
from semcom.eval import metrics
from semcom.eval.channel import FastChannel, FlowgraphChannel, PerTable, _numbered_pdus, measure_per
from semcom.eval.schemes import SCHEMES, default_schemes
from semcom.eval.sweep import SweepConfig, parse_snr_grid, run_sweep
from semcom.radio.pdu_link import PhyConfig


@pytest.fixture(scope="module")
def crops(photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("crops")
    paths = []
    for name, (y, x) in {"astronaut": (60, 180), "chelsea": (100, 150)}.items():
        path = folder / f"{name}.png"
        save_png(photos[name][y:y + 96, x:x + 96], path)
        paths.append(path)
    return paths


def synthetic_table() -> PerTable:
    """A PER curve shaped like the PHY's (long PDUs fail first), fixed so scheme behaviour is testable."""
    return PerTable(phy={}, lengths=[48, 250, 1000], snr_db=[-4.0, 0.0, 4.0, 8.0],
                    per=[[1.0, 1.0, 1.0], [0.3, 0.6, 0.9], [0.0, 0.0, 0.05], [0.0, 0.0, 0.0]],
                    pdus_per_point=0, seed=0)


# --- metrics ---------------------------------------------------------------------------------------
def test_metrics_identical_images(chelsea):
    mask = np.zeros(chelsea.shape[:2], bool)
    mask[80:200, 120:300] = True
    assert metrics.psnr_db(chelsea, chelsea) == metrics.PSNR_CEILING_DB
    assert metrics.ssim(chelsea, chelsea) == pytest.approx(1.0)
    assert metrics.ms_ssim(chelsea, chelsea) == pytest.approx(1.0)
    assert metrics.ms_ssim(chelsea, chelsea, mask) == pytest.approx(1.0)
    assert metrics.lpips(chelsea, chelsea) == pytest.approx(0.0, abs=1e-6)
    assert metrics.lpips(chelsea, chelsea, mask) == pytest.approx(0.0, abs=1e-6)
    assert metrics.lpips_model().name in ("lpips", "st-lpips")


def test_noise_worsens_every_metric(chelsea):
    rng = np.random.default_rng(0)
    mild, strong = (np.clip(chelsea + rng.normal(0, s, chelsea.shape), 0, 255).astype(np.uint8) for s in (5, 30))
    mask = np.zeros(chelsea.shape[:2], bool)
    mask[80:200, 120:300] = True
    assert metrics.lpips(chelsea, mild) < metrics.lpips(chelsea, strong)
    assert 0 < metrics.lpips(chelsea, mild, mask) < metrics.lpips(chelsea, strong, mask)
    assert 1 > metrics.ms_ssim(chelsea, mild) > metrics.ms_ssim(chelsea, strong)
    assert 1 > metrics.ms_ssim(chelsea, mild, mask) > metrics.ms_ssim(chelsea, strong, mask)


def test_ms_ssim_small_images_use_fewer_scales():
    assert metrics.ms_ssim_scales(512, 512) == 5
    assert metrics.ms_ssim_scales(96, 96) == 4
    with pytest.raises(ValueError):
        metrics.ms_ssim_scales(8, 8)


def test_snr_grid_parsing():
    assert parse_snr_grid("-4:14:2") == [-4, -2, 0, 2, 4, 6, 8, 10, 12, 14]
    assert parse_snr_grid("0,10") == [0, 10]
    with pytest.raises(ValueError):
        parse_snr_grid("3:1:1")


# --- channel ---------------------------------------------------------------------------------------
def test_fast_channel_agrees_with_flowgraph_on_per():
    """A PER table measured on the flowgraph predicts the flowgraph's losses on fresh packets."""
    phy = PhyConfig()
    snrs, lengths = (0.0, 8.0, 20.0), (48, 1000)
    table = measure_per(phy, snr_grid_db=snrs, lengths=lengths, count=60, seed=1)
    flowgraph = FlowgraphChannel(phy)
    rng = np.random.default_rng(7)
    for snr in snrs:
        pdus = _numbered_pdus(list(lengths), 60, rng)
        delivered = set(flowgraph.transmit(pdus, snr, rng).delivered)
        for length in lengths:
            sent = [p for p in pdus if len(p) == length]
            measured = 1 - sum(p in delivered for p in sent) / len(sent)
            predicted = float(table.packet_error_rate(length, snr))
            assert abs(measured - predicted) <= 0.25, (snr, length, measured, predicted)


def test_rayleigh_loses_more_at_high_snr_and_less_at_low_snr():
    table = synthetic_table()
    pdus = [bytes(1000)] * 4000
    awgn, rayleigh = FastChannel(table, "awgn"), FastChannel(table, "rayleigh")
    rng = np.random.default_rng(0)
    assert rayleigh.transmit(pdus, 8.0, rng).lost > awgn.transmit(pdus, 8.0, rng).lost == 0
    assert rayleigh.transmit(pdus, -4.0, rng).lost < awgn.transmit(pdus, -4.0, rng).lost == len(pdus)


# --- sweep -----------------------------------------------------------------------------------------
def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sweep_rows_plots_cliff_and_graceful_degradation(crops, tmp_path):
    cfg = SweepConfig(images=crops, snr_db=[0.0, 10.0], budget_symbols=30000, seeds=2, out=tmp_path,
                      progress=False, per_table=synthetic_table())
    rows = _rows(run_sweep(cfg))
    schemes = default_schemes()
    assert len(rows) == len(crops) * len(schemes) * 2 * 2
    assert {r["scheme"] for r in rows} == set(schemes)
    for name in ("curves.png", "frame_lost.png", "summary.md"):
        assert (tmp_path / name).stat().st_size > 0
    lpips_col = metrics.lpips_model().name.replace("-", "_")
    for column in ("psnr_db", "ssim", "ms_ssim", lpips_col, "key_psnr_db", "key_ssim", "key_ms_ssim",
                   f"key_{lpips_col}", "bytes", "channel_symbols", "pdus_sent", "pdus_lost", "frame_lost"):
        assert column in rows[0]
    assert all(int(r["channel_symbols"]) <= 30000 for r in rows)

    def lost(scheme, snr):
        return [int(r["frame_lost"]) for r in rows if r["scheme"] == scheme and float(r["snr_db"]) == snr]

    assert all(lost("jpeg+fec", 0.0)) and not any(lost("jpeg+fec", 10.0))       # cliff
    assert not all(lost("semcom", 0.0)) and not any(lost("semcom", 10.0))       # frames still come out
    ours_high = [float(r["key_psnr_db"]) for r in rows if r["scheme"] == "semcom" and float(r["snr_db"]) == 10.0]
    text_high = [float(r["key_psnr_db"]) for r in rows if r["scheme"] == "text-only" and float(r["snr_db"]) == 10.0]
    assert np.mean(ours_high) > np.mean(text_high) + 3

    def psnr(scheme, snr):
        return np.mean([float(r["psnr_db"]) for r in rows if r["scheme"] == scheme and float(r["snr_db"]) == snr])

    assert not any(lost("deepjscc", 0.0)) and not any(lost("deepjscc", 10.0))     # analog: no cliff
    assert psnr("deepjscc", 0.0) + 1 < psnr("deepjscc", 10.0)                       # ... but graceful decline
    assert psnr("deepjscc", 0.0) > psnr("jpeg+fec", 0.0) + 5                        # where separation is gone


def test_flowgraph_channel_mode_sweep(crops, tmp_path):
    cfg = SweepConfig(images=crops[:1], snr_db=[-4.0, 25.0], budget_symbols=30000, seeds=1, out=tmp_path,
                      progress=False, channel_mode="flowgraph", schemes=("semcom", "jpeg+fec"))
    rows = _rows(run_sweep(cfg))
    assert len(rows) == 4
    low = [r for r in rows if float(r["snr_db"]) == -4.0]
    assert all(int(r["pdus_lost"]) == int(r["pdus_sent"]) and r["frame_lost"] == "1" for r in low)
    assert any(int(r["pdus_lost"]) < int(r["pdus_sent"]) for r in rows if float(r["snr_db"]) == 25.0)


def test_scheme_registry_takes_one_class_per_scheme():
    for name in ("semcom", "jpeg+fec", "text-only"):
        cls = SCHEMES[name]
        assert all(hasattr(cls, m) for m in ("prepare", "transmit", "reconstruct"))


def test_semcom_shrinks_the_key_region_when_the_lowest_quality_does_not_fit(chelsea):
    from semcom.codec.pipeline import PipelineConfig
    from semcom.eval.sweep import evaluation_key_mask

    config = PipelineConfig()
    scheme = SCHEMES["semcom"](PhyConfig(), config)
    key_mask = evaluation_key_mask(chelsea, config)
    roomy = scheme.prepare(chelsea, 120_000, key_mask)
    tight = scheme.prepare(chelsea, 20_000, key_mask)
    assert roomy.rate["quality"] > 1 and roomy.channel_symbols <= 120_000
    assert tight.channel_symbols <= 20_000
    assert tight.rate["key_fraction"] < roomy.rate["key_fraction"]
