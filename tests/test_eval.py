"""semcom eval: metrics, the shipped PER table (fresh, fine, agreeing with the flowgraph), the best-MCS rule,
the rivals at equal symbols, and the CLI's CSV.

Small crops of the bundled chelsea and coffee (evaluation photos that ship with the module, so the tests do
not need scripts/eval_photos.sh) keep the file at about two minutes.
"""

from __future__ import annotations

import csv
import math
from fractions import Fraction

import numpy as np
import pytest
from helpers import stepped_per_table

from semcom.codec.imageio import save_png
from semcom.eval import metrics
from semcom.eval.channel import (PER_SNR_GRID_DB, PER_STEEP_PDUS, FastChannel, FlowgraphChannel, PerTable, StalePerTable,
                                 numbered_pdus, shipped_per_table)
from semcom.eval.schemes import SCHEMES, default_schemes
from semcom.eval.sweep import (COLUMNS, SweepConfig, best_mcs_rows, budget_symbols, parse_cbrs, parse_snr_grid,
                               run_sweep)
from semcom.radio.mcs import MCS_NAMES, MCS_TABLE, mcs_by_name

REQUIRED_COLUMNS = ("image, scheme, snr_db, cbr, seed, mcs, symbols, delivered, key_psnr, key_ssim, key_stlpips, "
                    "whole_psnr, whole_ssim, whole_msssim, whole_stlpips, bg_stlpips, label_agree").split(", ")


@pytest.fixture(scope="module")
def crops(photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("crops")
    paths = []
    for name, (y, x) in {"chelsea": (40, 120), "coffee": (60, 150)}.items():
        path = folder / f"{name}.png"
        save_png(photos[name][y:y + 192, x:x + 256], path)
        paths.append(path)
    return paths


def synthetic_table() -> PerTable:
    """Every MCS works 3 dB above the one before it: scheme behaviour made testable."""
    return stepped_per_table(3.0)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


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


def test_ssim_is_wangs_gaussian_window(chelsea):
    """SSIM uses Wang et al.'s 11x11 Gaussian (sigma 1.5) with population covariances, not skimage's default."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    noisy = np.clip(chelsea + rng.normal(0, 12, chelsea.shape), 0, 255).astype(np.uint8)
    wang = structural_similarity(chelsea, noisy, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    default = structural_similarity(chelsea, noisy, channel_axis=2, data_range=255)
    assert metrics.ssim(chelsea, noisy) == pytest.approx(wang, abs=1e-9)
    assert abs(wang - default) > 1e-3
    odd = (slice(3, 200), slice(1, 290))          # odd sizes: the border handling must match too
    _, skimage_map = structural_similarity(chelsea[odd], noisy[odd], channel_axis=2, data_range=255, full=True,
                                           **metrics.SSIM_OPTIONS)
    np.testing.assert_allclose(metrics.ssim_map(chelsea[odd], noisy[odd])[1], skimage_map.mean(axis=2), atol=1e-9)


def test_stlpips_layers_compute_what_stlpips_defines():
    """The max-pool and the fused first layer give what nn.MaxPool2d(3, stride=1) and the 11x11 convolution
    followed by the blur give (up to float rounding)."""
    import torch
    import torch.nn.functional as F

    backbone = metrics.lpips_model().net
    x = torch.randn(1, 64, 37, 52, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(backbone.slice2[0](x), F.max_pool2d(x, 3, stride=1), rtol=0, atol=0)
    for height, width in ((342, 512), (341, 511), (40, 25)):       # even, odd, a small one
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            unfused = backbone.slice1[1](F.conv2d(x, backbone.slice1[0].weight, backbone.slice1[0].bias, padding=2))
            torch.testing.assert_close(backbone.first_layer(x), unfused, rtol=0, atol=2e-5)


def test_ms_ssim_small_images_use_fewer_scales():
    assert metrics.ms_ssim_scales(512, 512) == 5
    assert metrics.ms_ssim_scales(96, 96) == 4
    with pytest.raises(ValueError):
        metrics.ms_ssim_scales(8, 8)


def test_grid_and_bandwidth_parsing():
    assert parse_snr_grid("-4:14:2") == [-4, -2, 0, 2, 4, 6, 8, 10, 12, 14]
    assert parse_snr_grid("0,10") == [0, 10]
    with pytest.raises(ValueError):
        parse_snr_grid("3:1:1")
    assert parse_cbrs("1/96,1/12,0.25") == [Fraction(1, 96), Fraction(1, 12), Fraction(1, 4)]
    for bad in ("0", "2", "x"):
        with pytest.raises(ValueError):
            parse_cbrs(bad)
    assert budget_symbols(Fraction(1, 24), 320, 512) == 20480           # the issue's 512x320 example


# --- the packet error rate table ---------------------------------------------------------------------
def test_shipped_per_table_is_fresh_and_fine():
    """CI fails here when the PHY code changed and scripts/measure_per_table.py was not rerun."""
    table = shipped_per_table()
    assert set(table.curves) == set(MCS_NAMES)
    for curve in table.curves.values():
        assert curve.snr_db == list(PER_SNR_GRID_DB) and curve.snr_db[1] - curve.snr_db[0] == 0.5
        assert curve.snr_db[0] <= -5 and curve.snr_db[-1] >= 25
        for per, sent in zip(curve.per, curve.sent):
            for p, n in zip(per, sent):
                if 0.001 < p < 0.99:
                    assert n >= PER_STEEP_PDUS, (curve.mcs, p, n)


def test_stale_table_is_refused_with_the_command_that_regenerates_it(monkeypatch):
    from semcom.eval import channel

    monkeypatch.setattr(channel, "phy_source_sha256", lambda: "0123456789abcdef")
    with pytest.raises(StalePerTable, match="python scripts/measure_per_table.py"):
        shipped_per_table()


def test_per_verification_tells_measurement_noise_from_a_moved_curve():
    """``measure_per_table.py --verify`` re-stamps the table only where every re-measured count agrees."""
    from semcom.eval.channel import same_error_rate

    assert same_error_rate(545, 1000, 548, 1000)        # qpsk-r12 at 3.5 dB, 1000 B, measured twice
    assert not same_error_rate(545, 1000, 450, 1000)    # the curve ~0.15 dB to the right
    assert not same_error_rate(545, 1000, 178, 1000)    # its neighbour 0.5 dB up
    assert same_error_rate(0, 40, 0, 1000) and same_error_rate(40, 40, 1000, 1000)
    assert not same_error_rate(0, 1000, 20, 1000)


def test_every_mcs_is_monotone_and_ordered_by_sensitivity():
    """PER falls with SNR (within sampling noise) and each faster MCS needs more SNR than the one before."""
    table = shipped_per_table()
    onsets = []
    for mcs in MCS_TABLE:
        curve = table.curve(mcs.name)
        long = np.array([p[1] for p in curve.per])
        assert np.all(np.diff(long) <= 0.1), (mcs.name, long)
        clean = [s for s, p in zip(curve.snr_db, long) if p <= 0.01]
        onsets.append(min(clean) if clean else math.inf)
    assert onsets == sorted(onsets), dict(zip(MCS_NAMES, onsets))
    assert math.isfinite(onsets[-1])
    robust = table.curve(MCS_NAMES[0])
    assert float(robust.packet_error_rate(1000, 0.0)) <= 0.6       # the most robust MCS still works at 0 dB


def _steep_points(curve, length_index, count=2):
    """Two SNRs where the measured PER is well inside (0.1, 0.9): where fast and flowgraph could disagree."""
    steep = [(s, p[length_index]) for s, p in zip(curve.snr_db, curve.per) if 0.1 < p[length_index] < 0.9]
    assert len(steep) >= count, (curve.mcs, curve.per)
    return [steep[0], steep[-1]] if count == 2 else steep[:count]


def test_fast_channel_agrees_with_the_flowgraph_on_the_steep_part():
    """The table predicts the flowgraph's losses on fresh 1000-byte PDUs at two SNRs of the waterfall, within
    4 standard deviations of the two binomial estimates (the table's and this run's packet counts)."""
    table = shipped_per_table()
    mcs = mcs_by_name("qpsk-r12")
    curve = table.curve(mcs.name)
    flowgraph = FlowgraphChannel()
    fast = FastChannel(table)
    rng = np.random.default_rng(7)
    sent = 300
    for snr, _ in _steep_points(curve, 1):
        pdus = [p for p in numbered_pdus([1000], sent, rng)]
        measured = flowgraph.transmit(pdus, mcs.name, snr, rng).lost / sent
        predicted = float(curve.packet_error_rate(1000, snr))
        table_count = curve.sent[curve.snr_db.index(snr)][1]
        sigma = math.sqrt(predicted * (1 - predicted) * (1 / sent + 1 / table_count))
        assert abs(measured - predicted) <= 4 * sigma + 1e-9, (snr, measured, predicted, sigma)
        simulated = fast.transmit(pdus, mcs.name, snr, rng).lost / sent
        assert abs(simulated - predicted) <= 4 * math.sqrt(predicted * (1 - predicted) / sent)


def test_per_model_interpolates_length_between_the_measured_ones():
    curve = synthetic_table().curve("qpsk-r12")
    snr = 6.0       # knee of qpsk-r12: PER 0.1 at 64 bytes, 0.5 at 1000
    per = [float(curve.packet_error_rate(n, snr)) for n in (64, 300, 1000, 1400)]
    assert per[0] == pytest.approx(0.1) and per[2] == pytest.approx(0.5)
    assert per[0] < per[1] < per[2] < per[3] < 1


def test_rayleigh_loses_more_at_high_snr_and_less_at_low_snr():
    table = synthetic_table()
    pdus = [bytes(1000)] * 4000
    awgn, rayleigh = FastChannel(table, "awgn"), FastChannel(table, "rayleigh")
    rng = np.random.default_rng(0)
    assert rayleigh.transmit(pdus, "qpsk-r12", 20.0, rng).lost > awgn.transmit(pdus, "qpsk-r12", 20.0, rng).lost == 0
    assert rayleigh.transmit(pdus, "qpsk-r12", 2.0, rng).lost < awgn.transmit(pdus, "qpsk-r12", 2.0, rng).lost


# --- schemes and the best-MCS rule ---------------------------------------------------------------------
def test_best_mcs_is_the_highest_mean_over_images_and_seeds_and_the_most_robust_on_ties():
    def row(mcs, seed, key, whole, image="a", delivered=1):
        return {"image": image, "scheme": "s", "snr_db": 5.0, "cbr": "1/24", "mcs": mcs, "seed": seed,
                "key_ssim": key, "whole_ssim": whole, "delivered": delivered}

    rows = [row("qpsk-r12", 0, 0.9, 0.7), row("qpsk-r12", 1, 0.5, 0.7),       # mean 0.7
            row("bpsk-r12", 0, 0.7, 0.6), row("bpsk-r12", 1, 0.7, 0.6),       # mean 0.65
            row("qpsk-r34", 0, 0.7, 0.7), row("qpsk-r34", 1, 0.7, 0.7)]       # mean 0.7, tie with qpsk-r12
    assert {r["mcs"] for r in best_mcs_rows(rows, "mean_ssim")} == {"qpsk-r12"}
    assert {r["mcs"] for r in best_mcs_rows(rows, "whole_ssim")} == {"qpsk-r12"}
    assert {r["mcs"] for r in best_mcs_rows(rows, "key_ssim")} == {"bpsk-r12"}
    # One MCS for every image: image b's lucky qpsk-r34 draw does not get it its own choice.
    pooled = [row("bpsk-r12", 0, 0.6, 0.6, "a"), row("bpsk-r12", 0, 0.6, 0.6, "b"),
              row("qpsk-r34", 0, 0.3, 0.3, "a"), row("qpsk-r34", 0, 0.8, 0.8, "b")]
    assert {(r["image"], r["mcs"]) for r in best_mcs_rows(pooled, "mean_ssim")} == {("a", "bpsk-r12"),
                                                                                   ("b", "bpsk-r12")}


def test_a_lost_frame_counts_zero_when_choosing_the_mcs():
    """Scored as mid-grey, a lost frame can beat a scheme's own poor background; it must not win the MCS."""
    rows = [{"image": "a", "scheme": "s", "snr_db": 5.0, "cbr": "1/24", "mcs": "bpsk-r12", "seed": 0,
             "key_ssim": 0.2, "whole_ssim": 0.2, "delivered": 1},
            {"image": "a", "scheme": "s", "snr_db": 5.0, "cbr": "1/24", "mcs": "qpsk-r12", "seed": 0,
             "key_ssim": 0.3, "whole_ssim": 0.3, "delivered": 0}]
    assert {r["mcs"] for r in best_mcs_rows(rows, "mean_ssim")} == {"bpsk-r12"}


def test_every_digital_scheme_fits_the_budget_at_every_mcs(photos):
    from semcom.codec.pipeline import PipelineConfig
    from semcom.eval.sweep import evaluation_key_mask

    image = photos["coffee"][40:232, 100:356]
    config = PipelineConfig()
    key_mask = evaluation_key_mask(image, config)
    budget = budget_symbols(Fraction(1, 12), *image.shape[:2])
    for name in default_schemes():
        scheme = SCHEMES[name](config)
        for mcs in (MCS_TABLE if scheme.digital else [None]):
            payload = scheme.prepare(image, key_mask, budget, mcs)
            assert payload.channel_symbols <= budget, (name, mcs)
            if scheme.digital:
                from semcom.eval.schemes import symbols_of

                assert symbols_of(payload.pdus, mcs) == payload.channel_symbols
    jscc = SCHEMES["deepjscc"](config).prepare(image, key_mask, 8 * budget, None)
    assert jscc.rate["repeats"] >= 2 and jscc.channel_symbols <= 8 * budget       # uses the whole budget


def test_sweep_picks_different_mcs_at_different_snrs_and_writes_the_columns(crops, tmp_path):
    cfg = SweepConfig(images=crops, snr_db=[0.0, 16.0], cbr=[Fraction(1, 12)], seeds=1, out=tmp_path,
                      progress=False, per_table=synthetic_table(), schemes=("ours", "webp", "roi-webp", "deepjscc"))
    rows = _rows(run_sweep(cfg))
    assert list(rows[0]) == list(COLUMNS) and set(REQUIRED_COLUMNS) <= set(rows[0])
    assert len(rows) == len(crops) * 4 * 2 * 1
    for name in ("curves_snr.png", "curves_cbr.png", "summary.md", "results_all_mcs.csv"):
        assert (tmp_path / name).stat().st_size > 0
    assert all(int(r["symbols"]) <= int(r["budget_symbols"]) for r in rows)
    for scheme in ("ours", "webp", "roi-webp"):
        chosen = {float(r["snr_db"]): r["mcs"] for r in rows if r["scheme"] == scheme}
        assert MCS_NAMES.index(chosen[16.0]) > MCS_NAMES.index(chosen[0.0]), (scheme, chosen)
    assert {r["mcs"] for r in rows if r["scheme"] == "deepjscc"} == {"analog"}
    ours_high = [r for r in rows if r["scheme"] == "ours" and r["snr_db"] == "16.0"]
    assert all(r["delivered"] == "1" for r in ours_high)
    assert np.mean([float(r["key_ssim"]) for r in ours_high]) > 0.5


def test_lost_frames_are_scored_as_grey_and_counted(crops, tmp_path):
    cfg = SweepConfig(images=crops[:1], snr_db=[-10.0], cbr=[Fraction(1, 12)], seeds=1, out=tmp_path,
                      progress=False, per_table=synthetic_table(), schemes=("ours", "jpeg"))
    rows = _rows(run_sweep(cfg))
    assert {r["delivered"] for r in rows} == {"0"}
    assert all(float(r["whole_psnr"]) < 20 for r in rows)
    assert "(0%" in (tmp_path / "summary.md").read_text()


def test_flowgraph_channel_mode_sweep(crops, tmp_path):
    cfg = SweepConfig(images=crops[:1], snr_db=[-4.0, 25.0], cbr=[Fraction(1, 6)], seeds=1, out=tmp_path,
                      progress=False, channel_mode="flowgraph", schemes=("ours", "jpeg"), mcs="qpsk-r12")
    rows = _rows(run_sweep(cfg))
    assert len(rows) == 4 and {r["mcs"] for r in rows} == {"qpsk-r12"}
    low = [r for r in rows if float(r["snr_db"]) == -4.0]
    assert all(int(r["pdus_lost"]) == int(r["pdus_sent"]) and r["delivered"] == "0" for r in low)
    assert all(r["delivered"] == "1" for r in rows if float(r["snr_db"]) == 25.0)


def test_eval_cli_on_a_folder_writes_results_with_the_issue_columns(crops, tmp_path):
    """`semcom eval --images DIR --snr-db 0,5,10 --cbr 1/24 --out OUT` over the shipped PER table."""
    from semcom.cli import main

    out = tmp_path / "out"
    assert main(["eval", "--images", str(crops[0].parent), "--snr-db", "0,5,10", "--cbr", "1/24", "--seeds", "1",
                 "--jobs", "1", "--schemes", "ours,webp,text-only", "--out", str(out), "--no-progress"]) == 0
    rows = _rows(out / "results.csv")
    assert set(REQUIRED_COLUMNS) <= set(rows[0])
    assert {r["scheme"] for r in rows} == {"ours", "webp", "text-only"}
    chosen = {(r["image"], float(r["snr_db"])): r["mcs"] for r in rows if r["scheme"] == "webp"}
    assert len({chosen[("chelsea.png", s)] for s in (0.0, 5.0, 10.0)}) >= 2, chosen


def test_a_worker_that_cannot_start_reports_instead_of_respawning(tmp_path):
    """multiprocessing.Pool restarts a worker whose initializer raises, forever: the failure must reach the
    first task instead."""
    from semcom.eval import sweep

    cfg = SweepConfig(images=[tmp_path / "a.png"], snr_db=[5.0], cbr=[Fraction(1, 12)], schemes=("no-such-scheme",),
                      per_table=synthetic_table())
    sweep._init_worker(cfg, cfg.per_table)
    try:
        with pytest.raises(RuntimeError, match="could not start"):
            sweep._fidelity_in_worker((0, tmp_path / "a.png", tmp_path))
    finally:
        sweep._WORKER = None


def test_every_analog_transmission_is_its_own_outcome():
    """DeepJSCC's outcome key once was ``id(delivery)``: CPython hands a freed delivery's address to the next
    one, so the sweep scored a later SNR with an earlier SNR's image."""
    from semcom.eval.schemes import AnalogDelivery, DeepJsccScheme

    scheme = DeepJsccScheme()
    keys = [scheme.outcome_key(None, AnalogDelivery(None)) for _ in range(50)]
    assert len(set(keys)) == len(keys)
