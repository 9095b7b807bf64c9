"""Hybrid digital-analog mode: header and text as coded BPSK, key tiles as DeepJSCC symbols, all in analog frames
through one channel."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import stepped_per_table

from semcom.cli import main
from semcom.codec import jscc
from semcom.codec.frame import FrameAssembler, Segment, parse_pdu
from semcom.codec.pipeline import PipelineConfig, SemanticDecoder, SemanticEncoder
from semcom.eval.channel import shipped_per_table
from semcom.eval.metrics import quality_report
from semcom.radio import protected_frames
from semcom.radio.analog import combine_copies
from semcom.radio.hybrid import (MAX_COPIES, HybridLinkConfig, _copies_within, decode_analog_tiles,
                                 digital_key_floor_db, plan_hybrid, run_hybrid_loopback, use_hybrid)

BUDGET = 60_000     # channel symbols for chelsea (451x300): header and text, every key frame once, some twice


@pytest.fixture(scope="module")
def model():
    return jscc.load_model()


@pytest.fixture(scope="module")
def at_0_db(chelsea):
    return run_hybrid_loopback(chelsea, HybridLinkConfig(snr_db=0.0, noise_seed=3, budget_symbols=BUDGET))


@pytest.fixture(scope="module")
def at_minus_3_db(chelsea):
    return run_hybrid_loopback(chelsea, HybridLinkConfig(snr_db=-3.0, noise_seed=3, budget_symbols=BUDGET))


# --- through the flowgraph --------------------------------------------------------------------------

def test_at_0_db_every_frame_decodes_and_the_image_is_drawn(chelsea, at_0_db):
    plan, recon = at_0_db.plan, at_0_db.reconstruction
    assert plan.channel_symbols <= BUDGET
    assert at_0_db.pdus_received == len(plan.pdus) and recon is not None and not recon.text_lost
    assert at_0_db.analog_frames_received == sum(plan.copies) and at_0_db.rx_counts["analog_refused"] == 0
    assert at_0_db.rx_counts["protected"] == {"failed": 0, "incomplete": 0}
    assert recon.tiles_received == sum(len(range(i * 4, min(i * 4 + 4, len(plan.tile_indices))))
                                       for i, n in enumerate(plan.copies) if n)
    assert recon.image.shape == chelsea.shape
    quality = quality_report(chelsea, recon.image, recon.key_mask)
    assert quality["key_ssim"] > 0.45 and quality["key_psnr_db"] > 18.0


def test_at_minus_3_db_header_and_text_arrive_and_losses_are_counted(at_minus_3_db):
    sent, counts = len(at_minus_3_db.plan.bursts()), at_minus_3_db.rx_counts["analog"]
    # a frame whose header fails its CRC is counted, not delivered
    assert counts["frames"] + counts["bad_header"] + counts["truncated"] == sent
    assert counts["frames"] >= 0.9 * sent
    recon = at_minus_3_db.reconstruction
    assert recon is not None and not recon.text_lost and at_minus_3_db.report()["header_received"]
    assert recon.image.shape[:2] == recon.key_mask.shape and recon.tiles_received > 0


# --- the plan ----------------------------------------------------------------------------------------

def test_plan_keeps_to_the_budget_and_spends_spare_symbols_on_copies(chelsea, model):
    once = plan_hybrid(chelsea, HybridLinkConfig(), model=model)
    assert once.copies == [1] * len(once.symbol_frames) and once.pdu_copies == [2, 1, 1]
    assert not once.frame.key_tiles         # the key tiles go analog, never as packets
    assert [parse_pdu(p).segment for p in once.pdus] == [Segment.HEADER, Segment.SKETCH, Segment.TEXT]
    assert [position for position, _ in once.fragments] == [0, 1, 1, 2]    # the sketch in two fragments
    big = plan_hybrid(chelsea, HybridLinkConfig(snr_db=-3.0, budget_symbols=3 * once.channel_symbols), model=model)
    assert big.pdu_copies == [2, 1, 2]                    # the text twice below -1 dB
    assert big.channel_symbols <= 3 * once.channel_symbols and min(big.copies) >= 2
    indices = [i for i, _ in big.bursts()]
    assert len(indices) == sum(big.copies) + sum(big.pdu_copies[p] for p, _ in big.fragments)
    first_round = list(range(192, 192 + len(big.fragments))) + list(range(len(big.copies)))
    assert indices[:len(first_round)] == first_round      # every frame once before any repeat
    assert indices[len(first_round):len(first_round) + 2] == [192, 195]     # header and text again, apart
    assert big.digital_symbols == sum(n * protected_frames.channel_symbols(p)
                                      for p, n in zip(big.pdus, big.pdu_copies))


def test_text_copies_follow_the_snr_unless_set():
    assert [HybridLinkConfig(snr_db=snr).text_copies_at_snr() for snr in (-3.0, -1.5, -1.0, 0.0)] == [2, 2, 1, 1]
    assert HybridLinkConfig(snr_db=10.0, text_copies=3).text_copies_at_snr() == 3


def test_a_tight_budget_drops_the_sketch_then_the_least_important_frames(chelsea, model):
    plan = plan_hybrid(chelsea, HybridLinkConfig(budget_symbols=30_000), model=model)
    assert plan.sketch_dropped and plan.frame.sketch is None
    assert plan.channel_symbols <= 30_000 and 0 in plan.copies and 1 in plan.copies
    with pytest.raises(ValueError, match="header and text alone"):
        plan_hybrid(chelsea, HybridLinkConfig(budget_symbols=5_000), model=model)
    with pytest.raises(ValueError, match="tile_px"):
        plan_hybrid(chelsea, HybridLinkConfig(), PipelineConfig(tile_px=32), model=model)
    with pytest.raises(ValueError, match="copies at least 1"):
        plan_hybrid(chelsea, HybridLinkConfig(header_copies=0), model=model)


def test_copies_go_to_the_most_important_frames_first():
    assert _copies_within(25, [10, 10, 10], [1.0, 3.0, 2.0]) == [0, 1, 1]
    assert _copies_within(15, [20, 10], [5.0, 1.0]) == [0, 1]       # a smaller frame still fits
    assert _copies_within(10_000, [10, 10], [1.0, 1.0]) == [MAX_COPIES, MAX_COPIES]
    assert _copies_within(0, [10], [1.0]) == [0]


def test_the_switch_point_comes_from_the_per_table():
    assert digital_key_floor_db(shipped_per_table()) == 2.5
    assert use_hybrid(0.0, shipped_per_table()) and not use_hybrid(5.0, shipped_per_table())
    # the synthetic table's most robust MCS works from 0 dB (PER 0 from 1 dB, 0.5 for 1000 B at 0 dB)
    assert digital_key_floor_db(stepped_per_table(2.0)) == 1.0


# --- the receiver's parts ------------------------------------------------------------------------------

def test_copies_combine_by_snr_weights():
    rng = np.random.default_rng(0)
    clean = np.exp(2j * np.pi * rng.random(20_000)).astype(np.complex64)
    copies = []
    for snr_db in (0.0, 0.0, 6.0):
        noise = (rng.standard_normal(clean.size) + 1j * rng.standard_normal(clean.size)) * math.sqrt(0.5 / 10 ** (snr_db / 10))
        copies.append(((clean + noise).astype(np.complex64), {"snr_db_est": snr_db}))
    combined, snr_db = combine_copies(copies)
    assert snr_db == pytest.approx(10 * math.log10(1 + 1 + 10 ** 0.6))
    measured = 10 * math.log10(1 / np.mean(np.abs(combined - clean) ** 2))
    assert measured == pytest.approx(snr_db, abs=0.2)


def test_analog_frames_of_another_image_index_or_length_are_refused(chelsea, model):
    plan = plan_hybrid(chelsea, HybridLinkConfig(snr_db=20.0), model=model)
    good = plan.symbol_frames[0]
    received = [(good, {"image_id": 0, "frame_index": 0, "snr_db_est": 20.0}),
                (good, {"image_id": 7, "frame_index": 0, "snr_db_est": 20.0}),
                (good, {"image_id": 0, "frame_index": len(plan.symbol_frames), "snr_db_est": 20.0}),
                (good[:-1], {"image_id": 0, "frame_index": 0, "snr_db_est": 20.0}),
                (good, {"image_id": 0, "snr_db_est": 20.0})]
    pixels, refused = decode_analog_tiles(received, plan.frame, 0, model)
    assert refused == 4
    assert sorted(pixels) == sorted(plan.tile_indices[:4])
    assert all(p.shape == (jscc.TILE_PX, jscc.TILE_PX, 3) for p in pixels.values())


def test_decoder_counts_tiles_that_came_outside_the_frame(chelsea, model):
    plan = plan_hybrid(chelsea, HybridLinkConfig(snr_db=20.0), model=model)
    pixels, _ = decode_analog_tiles([(plan.symbol_frames[0], {"image_id": 0, "frame_index": 0, "snr_db_est": 20.0})],
                                    plan.frame, 0, model)
    recon = SemanticDecoder().decode(plan.frame, key_pixels=pixels)
    assert recon.tiles_received == len(pixels) == 4 and recon.tiles_expected == len(plan.tile_indices)
    y0, x0, y1, x1 = plan.frame.tile_box(plan.tile_indices[0])
    assert recon.received_mask[y0:y1, x0:x1].any()
    assert not SemanticDecoder().decode(plan.frame).received_mask.any()
    with pytest.raises(ValueError, match="needs at least"):
        SemanticDecoder().decode(plan.frame, key_pixels={plan.tile_indices[0]: np.zeros((8, 8, 3), np.uint8)})


def test_text_copies_are_identical_and_kept_once(chelsea):
    frame = SemanticEncoder().encode(chelsea, 5, code_key_tiles=False).frame
    pdus = frame.to_pdus(header_repeats=2, text_repeats=3)
    assert sum(parse_pdu(p).segment == Segment.TEXT for p in pdus) == 3
    assembler = FrameAssembler()
    frames = [f for p in pdus for f in assembler.push(p)] + assembler.flush_all()
    assert len(frames) == 1 and frames[0].text == frame.text and not frames[0].key_tiles


# --- the CLI -------------------------------------------------------------------------------------------

def test_cli_hybrid_writes_its_plan_and_counts(tmp_path, capsys):
    """A budget without --mode means --mode auto, the hybrid at 0 dB."""
    assert main(["loopback", "--snr-db", "0", "--budget-symbols", str(BUDGET),
                 "--out", str(tmp_path)]) == 0
    assert "--mode auto: hybrid at 0 dB" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["mode"] == "hybrid" and metrics["received"]
    assert metrics["hybrid"]["channel_symbols"] <= BUDGET
    assert metrics["hybrid"]["analog_frames_received"] == metrics["hybrid"]["analog_frames_sent"]
    assert {"key_ssim", "ssim"} <= set(metrics["quality"]) and (tmp_path / "side_by_side.png").exists()


@pytest.mark.parametrize("extra", [["--mcs", "qpsk-r12"], ["--protected-mcs", "bpsk-r14"], ["--adapt"], ["--frames", "2"], ["--key-quality", "30"]])
def test_cli_hybrid_refuses_digital_only_options(tmp_path, capsys, extra):
    assert main(["loopback", "--mode", "hybrid", "--out", str(tmp_path), *extra]) == 2
    assert "--mode hybrid" in capsys.readouterr().err


# --- the eval scheme -------------------------------------------------------------------------------------

def test_eval_hybrid_scheme_sends_within_the_budget_at_low_snr_and_nothing_when_header_and_text_do_not_fit(
        chelsea, tmp_path):
    import csv
    from fractions import Fraction

    from semcom.codec.imageio import save_png
    from semcom.eval.sweep import SweepConfig, run_sweep

    save_png(chelsea[40:232, 120:376], tmp_path / "crop.png")
    cfg = SweepConfig(images=[tmp_path / "crop.png"], snr_db=[-3.0, 0.0], cbr=[Fraction(1, 6), Fraction(1, 96)],
                      seeds=2, out=tmp_path / "out", progress=False, schemes=("hybrid", "deepjscc"))
    with open(run_sweep(cfg)) as f:
        rows = [r for r in csv.DictReader(f) if r["scheme"] == "hybrid"]
    assert len(rows) == 2 * 2 * 2 and {r["mcs"] for r in rows} == {"hybrid"}
    assert all(0 < int(r["symbols"]) <= int(r["budget_symbols"]) and r["delivered"] == "1"
               for r in rows if r["cbr"] == "1/6")
    assert np.mean([float(r["key_ssim"]) for r in rows if r["cbr"] == "1/6"]) > 0.4
    # 1/96 of 256 x 192 x 3 is 1536 symbols: less than one protected frame
    assert all(r["symbols"] == "0" and r["delivered"] == "0" for r in rows if r["cbr"] == "1/96")


def test_eval_fast_channel_models_equalised_frames_per_burst():
    from semcom.eval.schemes import equalised_frames

    rng = np.random.default_rng(0)
    bursts = [(192, np.ones(20_000, np.complex64)), (0, np.ones(20_000, np.complex64))]
    awgn = equalised_frames(bursts, 3.0, rng, image_id=7)
    assert [m["frame_index"] for _, m in awgn] == [192, 0] and {m["image_id"] for _, m in awgn} == {7}
    assert all(m["snr_db_est"] == 3.0 for _, m in awgn)
    assert 10 * math.log10(1 / np.mean(np.abs(awgn[0][0] - 1) ** 2)) == pytest.approx(3.0, abs=0.1)
    faded = equalised_frames(bursts * 20, 3.0, rng, "rayleigh")
    assert len({m["snr_db_est"] for _, m in faded}) == 40      # a gain per burst


def test_eval_hybrid_scheme_through_the_flowgraph_channel(chelsea):
    from semcom.eval.channel import FlowgraphChannel
    from semcom.eval.schemes import HybridScheme

    scheme, crop = HybridScheme(), chelsea[40:232, 120:376]
    payload = scheme.prepare_at_snr(crop, np.ones(crop.shape[:2], bool), 60_000, 0.0)
    delivery = scheme.transmit(payload, FlowgraphChannel(), None, 0.0, np.random.default_rng(1))
    assert delivery.sent == len(payload.state[1].bursts()) and delivery.lost == 0
    outcome = scheme.reconstruct(payload, delivery)
    assert not outcome.frame_lost and outcome.image.shape == crop.shape
    assert quality_report(crop, outcome.image, np.ones(crop.shape[:2], bool))["key_ssim"] > 0.5


def test_eval_ours_adapt_switches_to_the_hybrid_below_the_digital_floor(chelsea, tmp_path):
    """The rule of ``semcom loopback --mode auto``: with a table whose most robust MCS works from 0 dB, ours-adapt
    sends the hybrid frame at -2 dB (and it arrives) and a digital plan at 6 dB; semantic_tx's planner,
    which has only the packet PHY, never switches."""
    import csv
    from fractions import Fraction

    from semcom.codec.imageio import save_png
    from semcom.eval.schemes import OursAdaptScheme
    from semcom.eval.sweep import SweepConfig, budget_symbols, evaluation_key_mask, run_sweep

    table = stepped_per_table(4.0)
    crop = chelsea[40:232, 120:376]
    save_png(crop, tmp_path / "crop.png")
    cfg = SweepConfig(images=[tmp_path / "crop.png"], snr_db=[-2.0, 6.0], cbr=[Fraction(1, 6)], seeds=2,
                      out=tmp_path / "out", progress=False, per_table=table, schemes=("ours-adapt",))
    with open(run_sweep(cfg)) as f:
        rows = {(float(r["snr_db"]), int(r["seed"])): r for r in csv.DictReader(f)}
    assert {rows[-2.0, s]["mcs"] for s in (0, 1)} == {"hybrid"}
    assert all(rows[-2.0, s]["delivered"] == "1" and float(rows[-2.0, s]["key_ssim"]) > 0.4 for s in (0, 1))
    assert rows[6.0, 0]["mcs"].startswith("hdr ")
    assert all(int(r["symbols"]) <= int(r["budget_symbols"]) for r in rows.values())

    digital_only = OursAdaptScheme(PipelineConfig(), hybrid_below_floor=False)
    key_mask = evaluation_key_mask(crop, digital_only.config)
    planned = digital_only.prepare_at_snr(crop, key_mask, budget_symbols(Fraction(1, 6), *crop.shape[:2]), -2.0, table)
    assert planned.rate["mcs"] != "hybrid"
