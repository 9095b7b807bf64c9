"""Link adaptation (semcom.radio.link_adaptation, the ``ours-adapt`` scheme): the planner's choice of a
protected MCS, a key MCS and a key quality per SNR and budget; a channel that drops each PDU by its own MCS;
and an ``ours-adapt`` sweep whose rows record each SNR's own plan.

Frames are built from hand-made PDUs and the PER table is synthetic, so the choices do not move when the
shipped table is remeasured; only the sweep encodes a real (cropped) photo.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from helpers import stepped_per_table

from semcom.codec.frame import PDU_HEADER, Segment, parse_pdu
from semcom.codec.imageio import save_png
from semcom.constants import DEFAULT_KEY_FRACTION, PDU_MAGIC, WIRE_VERSION
from semcom.eval.channel import FastChannel, FlowgraphChannel, PerTable
from semcom.radio.link_adaptation import (PROTECTED_SEGMENTS, channel_symbols, plan_frame, plan_protected_only,
                                          usable_bytes)
from semcom.radio.mcs import MCS_NAMES, MCS_TABLE, mcs_by_name
from semcom.radio.packet import channel_symbols_for

KEY_BYTES_PER_LEVEL = 300
MAX_LEVEL = 40


def knee_table() -> PerTable:
    """MCS number i works from 4 i dB (0, 4, ..., 20)."""
    return stepped_per_table(4.0)


def pdu(segment: Segment, index: int, count: int, payload_bytes: int) -> bytes:
    return PDU_HEADER.pack(PDU_MAGIC, WIRE_VERSION, 0, 7, segment, index, count) + bytes(payload_bytes)


def frame_at(level: int) -> list[bytes]:
    """Two header copies, key tiles of ``KEY_BYTES_PER_LEVEL * level`` bytes in PDUs of up to 990, the text."""
    total = KEY_BYTES_PER_LEVEL * level
    sizes = [990] * (total // 990) + ([total % 990] if total % 990 else [])
    header = pdu(Segment.HEADER, 0, 1, 50)
    keys = [pdu(Segment.KEY, i, len(sizes), n) for i, n in enumerate(sizes)]
    return [header, header, *keys, pdu(Segment.TEXT, 0, 1, 80)]


def rank(mcs) -> int:
    return MCS_NAMES.index(mcs.name)


def test_low_snr_protects_header_and_text_more_than_key_tiles_and_high_snr_sends_faster_key_tiles():
    """At 50 000 symbols. Header and text on bpsk-r12 instead of qpsk-r12 cost 1536 symbols, about one
    300-byte key level: whether that level is lost depends on where the budget falls between levels
    (since every MCS's header is repeated 9 times, at 20 000 symbols it is, and qpsk-r12 for all wins by
    expected bytes; at 15 000 and 50 000 it is not)."""
    table = knee_table()
    low = plan_frame(frame_at, MAX_LEVEL, 8.0, 50_000, table)       # qpsk-r12 at its knee, bpsk-r12 clean
    high = plan_frame(frame_at, MAX_LEVEL, 21.0, 50_000, table)     # every MCS clean
    assert low.summary() == "hdr bpsk-r12, key qpsk-r12"
    assert rank(low.protected_mcs) < rank(low.key_mcs)
    assert high.key_mcs.name == "16qam-r34" and high.level > low.level


@pytest.mark.parametrize("snr_db", [2.0, 8.0, 12.5, 16.0, 21.0])
def test_the_plan_is_worth_at_least_every_one_mcs_frame(snr_db):
    """``ours`` on any single MCS is one of the candidates: the plan's value is never below it."""
    table = knee_table()
    plan = plan_frame(frame_at, MAX_LEVEL, snr_db, 20_000, table)
    for m in MCS_TABLE:
        one = plan_frame(frame_at, MAX_LEVEL, snr_db, 20_000, table, mcs_table=(m,))
        if one is not None:
            assert plan.value >= one.value - 1e-9, (m.name, plan.summary())


@pytest.mark.parametrize("budget", [12_000, 20_000, 40_000, 100_000])
def test_plans_fit_the_budget_and_count_symbols_per_pdu_at_its_mcs(budget):
    table = knee_table()
    for snr_db in (0.0, 4.5, 8.0, 13.0, 21.0):
        plan = plan_frame(frame_at, MAX_LEVEL, snr_db, budget, table)
        assert plan is not None and plan.pdus == frame_at(plan.level)
        assert plan.symbols <= budget
        assert plan.symbols == sum(channel_symbols_for(len(p), m.modulation, m.fec_code)
                                   for p, m in zip(plan.pdus, plan.mcs))
        for p, m in zip(plan.pdus, plan.mcs):
            protected = parse_pdu(p).segment in PROTECTED_SEGMENTS
            assert m == (plan.protected_mcs if protected else plan.key_mcs)
        if plan.level < MAX_LEVEL:      # the largest level that fits on the chosen pair
            bigger = frame_at(plan.level + 1)
            on_pair = [plan.protected_mcs if parse_pdu(p).segment in PROTECTED_SEGMENTS else plan.key_mcs
                       for p in bigger]
            assert channel_symbols(bigger, on_pair) > budget


def test_nothing_fits_a_budget_below_header_and_text():
    text_only = frame_at(0)
    cheapest = sum(channel_symbols_for(len(p), "16qam", "cc34") for p in text_only)
    assert plan_protected_only(text_only, 10.0, cheapest - 1, knee_table()) is None
    assert plan_frame(frame_at, MAX_LEVEL, 10.0, cheapest, knee_table()) is None    # one key PDU does not fit
    fits = plan_protected_only(text_only, 10.0, 10 * cheapest, knee_table())
    assert fits.symbols <= 10 * cheapest and fits.key_mcs is None and fits.level == 0


def test_the_value_needs_the_header():
    table = knee_table()
    frame = frame_at(3)
    on = [mcs_by_name("bpsk-r14")] * len(frame)
    assert usable_bytes(frame[2:], on[2:], 21.0, table) == 0.0          # no header copy sent
    assert usable_bytes(frame, on, -20.0, table) == pytest.approx(0.0, abs=1e-6)     # every copy lost
    assert usable_bytes(frame, on, 21.0, table) == pytest.approx(50 + 3 * KEY_BYTES_PER_LEVEL + 80)


def test_fast_channel_drops_each_pdu_by_its_own_mcs():
    pdus = [i.to_bytes(4, "big") + bytes(996) for i in range(400)]
    mcs = ["bpsk-r14" if i % 2 else "16qam-r34" for i in range(400)]     # 8 dB: clean / all lost
    delivery = FastChannel(knee_table()).transmit_each(pdus, mcs, 8.0, np.random.default_rng(0))
    assert delivery.delivered == pdus[1::2]
    assert (delivery.sent, delivery.lost) == (400, 200)


def test_flowgraph_channel_sends_each_pdu_on_its_own_mcs(monkeypatch):
    """Through the real flowgraph at 10 dB, in one run: bpsk-r14 arrives, 16qam-r34 (clean only from about
    20 dB) does not."""
    from semcom.radio import pdu_link

    runs = []
    real = pdu_link.send_pdus
    monkeypatch.setattr(pdu_link, "send_pdus", lambda *a, **k: runs.append(k["mcs"]) or real(*a, **k))
    pdus = [i.to_bytes(4, "big") + bytes(60) for i in range(6)]
    mcs = ["bpsk-r14", "16qam-r34"] * 3
    delivery = FlowgraphChannel().transmit_each(pdus, mcs, 10.0, np.random.default_rng(1))
    assert delivery.delivered == pdus[0::2] and delivery.lost == 3
    assert runs == [mcs]


def test_flowgraph_channel_counts_copies_apart(monkeypatch):
    """The header goes twice: one copy arriving must not deliver both."""
    from semcom.radio import pdu_link

    header, key = pdu(Segment.HEADER, 0, 1, 50), pdu(Segment.KEY, 0, 1, 500)
    monkeypatch.setattr(pdu_link, "send_pdus", lambda *a, **k: pdu_link.PduLinkResult([key, header], 4, 2, 0, 0.0))
    delivery = FlowgraphChannel().transmit_each([header, header, key, key], ["bpsk-r12", "bpsk-r12", "qpsk-r12",
                                                                             "qpsk-r12"], 5.0, np.random.default_rng(0))
    assert delivery.delivered == [header, key] and delivery.lost == 2


def test_rows_of_a_scheme_with_its_own_plan_per_image_are_not_split_by_plan():
    from semcom.eval.sweep import best_mcs_rows

    def row(image, scheme, mcs, key):
        return {"image": image, "scheme": scheme, "snr_db": 5.0, "cbr": "1/24", "mcs": mcs, "seed": 0,
                "key_ssim": key, "whole_ssim": key, "delivered": 1}

    rows = [row("a", "ours-adapt", "hdr bpsk-r12, key qpsk-r12", 0.9), row("b", "ours-adapt", "hdr qpsk-r12", 0.2),
            row("a", "ours", "qpsk-r12", 0.9), row("b", "ours", "qpsk-r12", 0.1),
            row("a", "ours", "bpsk-r12", 0.3), row("b", "ours", "bpsk-r12", 0.3)]
    best = best_mcs_rows(rows, "mean_ssim")
    assert {(r["scheme"], r["image"], r["mcs"]) for r in best} == {
        ("ours-adapt", "a", "hdr bpsk-r12, key qpsk-r12"), ("ours-adapt", "b", "hdr qpsk-r12"),
        ("ours", "a", "qpsk-r12"), ("ours", "b", "qpsk-r12")}


def test_ours_adapt_sweep_rows_record_each_snrs_own_plan(photos, tmp_path):
    from semcom.codec.pipeline import PipelineConfig
    from semcom.eval.schemes import SCHEMES
    from semcom.eval.sweep import SweepConfig, budget_symbols, evaluation_key_mask, run_sweep

    crop = photos["chelsea"][40:232, 120:376]
    save_png(crop, tmp_path / "chelsea.png")
    table = knee_table()
    cfg = SweepConfig(images=[tmp_path / "chelsea.png"], snr_db=[5.0, 21.0], cbr=[Fraction(1, 6)], seeds=1,
                      out=tmp_path / "out", progress=False, per_table=table, schemes=("ours-adapt",))
    with open(run_sweep(cfg)) as f:
        rows = {float(r["snr_db"]): r for r in csv.DictReader(f)}
    assert set(rows) == {5.0, 21.0} and {r["scheme"] for r in rows.values()} == {"ours-adapt"}

    scheme = SCHEMES["ours-adapt"](PipelineConfig())
    key_mask = evaluation_key_mask(crop, scheme.config)
    budget = budget_symbols(Fraction(1, 6), *crop.shape[:2])
    for snr_db, row in rows.items():
        planned = scheme.prepare_at_snr(crop, key_mask, budget, snr_db, table)
        assert row["mcs"] == planned.rate["mcs"] and row["mcs"].startswith("hdr ")
        assert (int(row["symbols"]), int(row["bytes"]), int(row["quality"])) == (
            planned.channel_symbols, planned.bytes, planned.rate["quality"])
        assert int(row["symbols"]) <= int(row["budget_symbols"]) == budget
        assert int(row["pdus_sent"]) == len(planned.pdus)
    assert int(rows[21.0]["quality"]) > int(rows[5.0]["quality"]) > 0
    assert rows[21.0]["delivered"] == "1"


def test_ranked_by_key_quality_a_lossy_fast_key_mcs_loses_to_a_clean_slow_one():
    """At 8 dB (knee table) qpsk-r12 loses half of every 1000-byte key PDU, bpsk-r12 none. Usable bytes
    prefer the fast lossy key MCS (more bytes arrive); the key-quality value sees that every lost tile is
    generated: with a poor generated tile the clean slow frame wins, with a generator as good as the
    tiles the fast one may still win, and the choice follows the score, not the byte count."""
    from semcom.radio.link_adaptation import KeyQuality, expected_key_quality

    table = knee_table()
    by_bytes = plan_frame(frame_at, MAX_LEVEL, 8.0, 20_000, table)
    assert by_bytes.key_mcs.name == "qpsk-r12"
    poor_generator = KeyQuality(at_level=lambda level: 0.5 + level / (2 * MAX_LEVEL), tiles_lost=0.2, frame_lost=0.1)
    by_quality = plan_frame(frame_at, MAX_LEVEL, 8.0, 20_000, table, quality=poor_generator)
    assert by_quality.key_mcs.name == "bpsk-r12"
    value = expected_key_quality(by_quality.pdus, by_quality.mcs, by_quality.level, 8.0, table, poor_generator)
    assert value == pytest.approx(by_quality.value) and value == pytest.approx(poor_generator.at_level(by_quality.level))
    # Next to nothing arrives at -5 dB on any MCS: every plan is worth about what a lost frame shows.
    lost = plan_protected_only(frame_at(0)[:2] + frame_at(0)[-1:], -5.0, 20_000, table, quality=poor_generator)
    assert lost.value == pytest.approx(poor_generator.frame_lost, abs=1e-3)


def test_the_sketch_gives_way_only_where_it_keeps_every_key_tile_off_the_air(photos):
    """A budget that holds the sketchless frame at key level 1 on the fastest MCS but not the frame with its
    sketch: ours-adapt sends key tiles without the sketch. With room for both, the sketch stays."""
    from semcom.codec.pipeline import PipelineConfig
    from semcom.eval.schemes import SCHEMES
    from semcom.eval.sweep import evaluation_key_mask

    crop = photos["chelsea"][40:232, 120:376]
    table = knee_table()
    scheme = SCHEMES["ours-adapt"](PipelineConfig())
    key_mask = evaluation_key_mask(crop, scheme.config)
    fastest = MCS_TABLE[-1]
    sketchless = scheme._sketchless._pdus(crop, key_mask, 1, DEFAULT_KEY_FRACTION)[1]
    assert not any(parse_pdu(p).segment == Segment.SKETCH for p in sketchless)
    tight = channel_symbols(sketchless, [fastest] * len(sketchless))
    planned = scheme.prepare_at_snr(crop, key_mask, tight, 21.0, table)
    assert planned.rate["quality"] >= 1 and planned.rate["mcs"].endswith(", no sketch")
    assert not any(parse_pdu(p).segment == Segment.SKETCH for p in planned.pdus)
    assert planned.channel_symbols <= tight

    roomy = scheme.prepare_at_snr(crop, key_mask, 20 * tight, 21.0, table)
    assert roomy.rate["quality"] >= 1 and "no sketch" not in roomy.rate["mcs"]
    assert any(parse_pdu(p).segment == Segment.SKETCH for p in roomy.pdus)


@pytest.mark.parametrize("shared", [True, False])
def test_ours_adapt_meets_ours_channel_draws_so_the_same_frame_loses_the_same_pdus(photos, tmp_path, shared):
    """Common random numbers: a scheme with ``channel_stream = "ours"`` that sends ours' frame on ours' MCS
    loses the same PDUs in every seed (qpsk-r12 at its knee: half of the long PDUs lost); on a stream of its
    own it does not."""
    from semcom.eval.schemes import SCHEMES, SemcomScheme
    from semcom.eval.sweep import SweepConfig, run_sweep

    class SameFrame(SemcomScheme):
        digital = False
        adapts_to_snr = True
        channel_stream = "ours" if shared else None

        def prepare_at_snr(self, image, key_mask, budget_symbols, snr_db, per_table):
            payload = self.prepare(image, key_mask, budget_symbols, mcs_by_name("qpsk-r12"))
            return replace(payload, pdu_mcs=["qpsk-r12"] * len(payload.pdus), rate={**payload.rate, "mcs": "same"})

        def transmit(self, payload, channel, mcs, snr_db, rng):
            return channel.transmit_each(payload.pdus, payload.pdu_mcs, snr_db, rng)

    SameFrame.name = "same-frame"
    SCHEMES["same-frame"] = SameFrame
    try:
        save_png(photos["chelsea"][40:232, 120:376], tmp_path / "chelsea.png")
        cfg = SweepConfig(images=[tmp_path / "chelsea.png"], snr_db=[8.0], cbr=[Fraction(1, 3)], seeds=6,
                          mcs="qpsk-r12", out=tmp_path / "out", progress=False, per_table=knee_table(),
                          schemes=("ours", "same-frame"))
        with open(run_sweep(cfg)) as f:
            rows = list(csv.DictReader(f))
    finally:
        del SCHEMES["same-frame"]
    ours = [(r["pdus_lost"], r["key_ssim"]) for r in rows if r["scheme"] == "ours"]
    same = [(r["pdus_lost"], r["key_ssim"]) for r in rows if r["scheme"] == "same-frame"]
    assert len(ours) == len(same) == 6 and any(lost != "0" for lost, _ in ours)
    assert (ours == same) is shared


def test_a_protected_mcs_that_loses_text_or_sketch_is_worth_what_the_header_alone_shows():
    """The key-quality value counts the text and sketch: tiles that do not arrive are generated from them, and
    from the header alone when they are lost too. At 8 dB on the knee table qpsk-r12 loses about a third of
    500-byte PDUs: with a poor header-only picture the planner keeps the sketch on a clean MCS."""
    from semcom.radio.link_adaptation import KeyQuality, expected_key_quality

    table = knee_table()

    def with_sketch(level: int) -> list[bytes]:
        return frame_at(level)[:2] + [pdu(Segment.SKETCH, 0, 1, 480)] * 2 + frame_at(level)[2:]

    def per(m, n):
        return float(table.packet_error_rate(m.name, n, 8.0))

    score = KeyQuality(at_level=lambda level: 0.5 + level / (2 * MAX_LEVEL), tiles_lost=0.4, frame_lost=0.1,
                       background_lost=0.15)
    pdus = with_sketch(0)
    m = mcs_by_name("qpsk-r12")
    header = 1 - per(m, len(pdus[0])) ** 2
    background = (1 - per(m, len(pdus[2])) ** 2) * (1 - per(m, len(pdus[-1])))
    assert 0.2 < background < 0.95
    assert expected_key_quality(pdus, [m] * len(pdus), 0, 8.0, table, score) == pytest.approx(
        header * (background * 0.4 + (1 - background) * 0.15) + (1 - header) * 0.1)
    blind = KeyQuality(score.at_level, score.tiles_lost, score.frame_lost)
    assert expected_key_quality(pdus, [m] * len(pdus), 0, 8.0, table, blind) > \
        expected_key_quality(pdus, [m] * len(pdus), 0, 8.0, table, score)

    plan = plan_frame(with_sketch, MAX_LEVEL, 8.0, 30_000, table, quality=score)
    sketch_mcs = {m.name for p, m in zip(plan.pdus, plan.mcs) if parse_pdu(p).segment == Segment.SKETCH}
    assert all(per(mcs_by_name(name), 500) < 0.01 for name in sketch_mcs)
