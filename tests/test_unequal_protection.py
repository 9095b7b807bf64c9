"""Per-segment MCS through one flowgraph (issue #14): semantic_tx tags each PDU with its segment's MCS,
packet_tx sends it on that MCS, one packet_rx reads it from the header; and the receiver's SNR estimates
steer the next image's MCS pair."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pmt
import pytest
from gnuradio import gr

from semcom.codec.frame import Segment, parse_pdu
from semcom.eval.channel import shipped_per_table
from semcom.eval.metrics import psnr_db
from semcom.radio.flowgraph import release
from semcom.radio.link_adaptation import ESTIMATE_MARGIN_DB, KEY_PDU_BYTES, KEY_TARGET_PER, segment_mcs_for_snr
from semcom.radio.loopback import LinkConfig, loopback_flowgraph, run_loopback_frames, send_image
from semcom.radio.mcs import MCS_TABLE
from semcom.radio.pdu import from_pdu, to_pdu
from semcom.radio.semantic_tx import semantic_tx


@pytest.fixture(scope="module")
def per_table():
    return shipped_per_table()


def test_segment_rule_puts_key_tiles_on_the_fastest_mcs_that_keeps_them_and_header_one_row_safer(per_table):
    order = [m.name for m in MCS_TABLE]
    previous = (0, 0)
    for snr in np.arange(-4.0, 26.0, 0.5):
        protected, key = segment_mcs_for_snr(float(snr), per_table)
        at = snr - ESTIMATE_MARGIN_DB
        kept = max(float(per_table.packet_error_rate(key.name, KEY_PDU_BYTES, s)) for s in np.arange(at, 26, 0.25))
        assert kept <= KEY_TARGET_PER or key is MCS_TABLE[0], (snr, key.name)
        faster = order[order.index(key.name) + 1:]
        assert all(float(per_table.packet_error_rate(m, KEY_PDU_BYTES, at)) > KEY_TARGET_PER
                   or max(per_table.packet_error_rate(m, KEY_PDU_BYTES, np.arange(at, 26, 0.5))) > KEY_TARGET_PER
                   for m in faster), (snr, key.name)
        assert order.index(protected.name) == max(order.index(key.name) - 1, 0), "one row more robust"
        now = (order.index(protected.name), order.index(key.name))
        assert now >= previous, f"the pair went more robust at a higher SNR ({snr} dB)"
        previous = now
    assert segment_mcs_for_snr(-4.0, per_table) == (MCS_TABLE[0], MCS_TABLE[0])
    assert segment_mcs_for_snr(25.0, per_table)[1].name.startswith("16qam")


class _pdu_tap(gr.basic_block):
    """Keeps (metadata, payload) of every PDU the demodulator put out."""

    def __init__(self):
        gr.basic_block.__init__(self, "pdu_tap", None, None)
        self.seen: list[tuple[dict, bytes]] = []
        self.message_port_register_in(pmt.intern("in"))
        self.set_msg_handler(pmt.intern("in"), self._on_pdu)

    def _on_pdu(self, msg):
        self.seen.append(from_pdu(msg))


def _send_tapped(link: LinkConfig, image: np.ndarray):
    """One image through the loopback with a tap on the demodulator: (result, tap, flowgraph)."""
    tb = loopback_flowgraph(link, _config())
    tap = _pdu_tap()
    tb.msg_connect((tb.demodulator, "out"), (tap, "in"))
    tb.start()
    try:
        result = send_image(tb, image, link, _config(), None, timeout_s=120)
    finally:
        tb.stop()
        tb.wait()
        release(tb)
    return result, tap, tb


@pytest.mark.slow
def test_mixed_mcs_frame_goes_through_one_flowgraph_each_pdu_on_its_segments_mcs(chelsea):
    link = LinkConfig(snr_db=20, protected_mcs="bpsk-r12", key_mcs="16qam-r12")
    result, tap, tb = _send_tapped(link, chelsea)
    assert result.reconstruction is not None and result.reconstruction.generated_share == 0
    assert psnr_db(chelsea, result.reconstruction.image, result.encoded.key_mask) > 30
    segments = {parse_pdu(payload).segment: meta["mcs"] for meta, payload in tap.seen}
    assert segments[Segment.HEADER] == segments[Segment.TEXT] == "bpsk-r12"
    assert segments[Segment.KEY] == "16qam-r12"
    assert {meta["mcs"] for meta, payload in tap.seen if parse_pdu(payload).segment == Segment.KEY} == {"16qam-r12"}
    # the symbols counted per PDU at its own MCS: fewer than all on bpsk-r12, more than all on 16qam-r12
    assert (result.protected_mcs, result.key_mcs) == ("bpsk-r12", "16qam-r12")
    one_mcs = [run_loopback_frames([chelsea], LinkConfig(snr_db=20, protected_mcs=m, key_mcs=m), _config())[0]
               for m in ("bpsk-r12", "16qam-r12")]
    assert one_mcs[1].channel_symbols < result.channel_symbols < one_mcs[0].channel_symbols


@pytest.mark.slow
@pytest.mark.parametrize("snr_db", [6.0, 20.0])
def test_adaptive_loopback_picks_the_next_images_mcs_from_the_receivers_estimates(chelsea, per_table, snr_db):
    """The first image goes on the configured qpsk-r12; the second on the pair the rule gives for the
    receiver's estimates of the first image's PDUs, which read within 1.5 dB of the channel's SNR."""
    first, second = run_loopback_frames([chelsea, chelsea], LinkConfig(snr_db=snr_db, adapt=True), _config())
    assert (first.protected_mcs, first.key_mcs) == ("", "") and first.snr_estimate_db is None
    assert second.snr_estimate_db is not None and abs(second.snr_estimate_db - snr_db) < 1.5
    expected = tuple(m.name for m in segment_mcs_for_snr(second.snr_estimate_db, per_table))
    assert (second.protected_mcs, second.key_mcs) == expected
    assert expected != ("qpsk-r12", "qpsk-r12"), "this SNR should move the link off the first image's MCS"
    # the rule allows 1% PER per key PDU (16qam-r12 at 20 dB loses 1 in ~70 in the table): at most one lost
    assert second.reconstruction is not None and second.reconstruction.generated_share < 0.1


@pytest.mark.slow
def test_a_link_whose_first_mcs_is_too_fast_still_learns_the_snr(chelsea, per_table):
    """At 5 dB every 16qam-r34 payload of the first image fails its CRC, so no PDU reaches the return link;
    packet_rx's ``snr`` port still reports each header's estimate, and the second image goes on the pair
    the rule gives for 5 dB and arrives."""
    first, second = run_loopback_frames([chelsea, chelsea], LinkConfig(
        snr_db=5.0, adapt=True, protected_mcs="16qam-r34", key_mcs="16qam-r34"), _config())
    assert first.reconstruction is None and first.rx_stats["pdus_accepted"] == 0, first.rx_stats
    assert second.snr_estimate_db is not None and abs(second.snr_estimate_db - 5.0) < 1.5
    assert (second.protected_mcs, second.key_mcs) == tuple(
        m.name for m in segment_mcs_for_snr(second.snr_estimate_db, per_table))
    assert second.reconstruction is not None


def test_semantic_tx_counts_snr_messages_it_cannot_use_and_refuses_unknown_mcs():
    tx = semantic_tx(adapt=True)
    good = [pmt.from_double(7.5), to_pdu(b"x", {"snr_db": 9.5}), to_pdu(b"x", {"snr_db_est": 8.5})]
    bad = [pmt.intern("7.5"), pmt.from_double(math.nan), pmt.from_double(1e9), to_pdu(b"x", {}),
           to_pdu(b"x", {"snr_db": "loud"}), pmt.PMT_NIL]
    for msg in good + bad:
        tx._handle_snr(msg)
    assert tx.snr_messages_ignored == len(bad)
    assert tx.snr_estimate_db() == pytest.approx(8.5)
    for _ in range(semantic_tx.SNR_WINDOW):
        tx._handle_snr(pmt.from_double(20.0))
    assert tx.snr_estimate_db() == 20.0, "only the last SNR_WINDOW estimates steer"
    with pytest.raises(ValueError, match="unknown MCS 'qpsk-r99'"):
        semantic_tx(key_mcs="qpsk-r99")


def _config():
    from semcom.codec.pipeline import PipelineConfig

    return PipelineConfig()


@pytest.mark.slow
def test_cli_loopback_reports_each_frames_mcs_and_estimate(tmp_path, chelsea):
    import json

    from semcom.cli import main
    from semcom.codec.imageio import save_png

    save_png(chelsea[:128, :192], tmp_path / "crop.png")
    out = tmp_path / "out"
    assert main(["loopback", "--image", str(tmp_path / "crop.png"), "--snr-db", "20", "--adapt", "--frames", "2",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    first, second = metrics["frames"]
    assert (first["protected_mcs"], first["key_mcs"], first["snr_estimate_db"]) == ("qpsk-r12", "qpsk-r12", None)
    assert abs(second["snr_estimate_db"] - 20) < 1.5 and second["key_mcs"].startswith("16qam")
    assert metrics["mcs"] == {"protected": second["protected_mcs"], "key": second["key_mcs"]}
    assert second["received"] and second["channel_symbols"] < first["channel_symbols"]
    assert main(["loopback", "--image", str(tmp_path / "crop.png"), "--frames", "0", "--out", str(out)]) != 0


def test_semantic_tx_keeps_a_bounded_record_of_its_mcs_choices(chelsea):
    tx = semantic_tx(protected_mcs="bpsk-r12", key_mcs="qpsk-r34")
    crop = np.ascontiguousarray(chelsea[:48, :64])
    for _ in range(semantic_tx.RECENT_IMAGES + 2):
        tx._encode_and_publish(crop, None)      # what the worker thread runs per image
    assert tx.images_sent == semantic_tx.RECENT_IMAGES + 2 and tx.errors == 0
    assert len(tx.recent_frames) == semantic_tx.RECENT_IMAGES
    last = tx.recent_frames[-1]
    assert (last.image_id, last.protected_mcs, last.key_mcs, last.snr_estimate_db, last.plan) == \
        (semantic_tx.RECENT_IMAGES + 1, "bpsk-r12", "qpsk-r34", None, None)
    assert last.pdu_mcs == tuple("qpsk-r34" if parse_pdu(p).segment == Segment.KEY else "bpsk-r12" for p in last.pdus)
    assert tx.pdus_sent == sum(len(f.pdus) for f in tx.recent_frames) + 2 * len(last.pdus)


# ---- a symbol budget planned inside semantic_tx (the eval's ours-adapt planner) ----

PLAN_SNR_DB = 12.0


@pytest.fixture(scope="module")
def crop(photos) -> np.ndarray:
    return np.ascontiguousarray(photos["chelsea"][:128, :192])


def _planned(crop, plan_snr_db=PLAN_SNR_DB, **options):
    tx = semantic_tx(first_image_id=7, plan_snr_db=plan_snr_db, **options)
    tx._encode_and_publish(crop, None)
    return tx


def test_budgeted_semantic_tx_sends_the_eval_planners_frame_under_its_own_image_id(crop, per_table):
    from semcom.eval.schemes import OursAdaptScheme
    from semcom.eval.sweep import budget_symbols
    from semcom.radio.link_adaptation import channel_symbols
    from semcom.radio.mcs import mcs_by_name

    budget = budget_symbols(Fraction(1, 12), *crop.shape[:2])
    tx = _planned(crop, cbr=1 / 12)
    assert tx.errors == 0 and tx.images_sent == 1, tx.last_error
    sent = tx.recent_frames[-1]
    planner = OursAdaptScheme(_config())
    expected = planner.prepare_at_snr(crop, planner.encoder.splitter.split(crop), budget, PLAN_SNR_DB, per_table)
    assert sent.pdu_mcs == tuple(expected.pdu_mcs)
    assert {parse_pdu(p).image_id for p in sent.pdus} == {7}
    assert list(map(len, sent.pdus)) == list(map(len, expected.pdus))
    symbols = channel_symbols(list(sent.pdus), [mcs_by_name(m) for m in sent.pdu_mcs])
    assert symbols == sent.plan["symbols"] == expected.channel_symbols <= budget == sent.plan["budget_symbols"]
    assert sent.plan["plan"] == expected.rate["mcs"] and sent.plan["key_region"] in ("whole", "shrunk")
    assert any(parse_pdu(p).segment == Segment.KEY for p in sent.pdus), "1/12 at 12 dB carries key tiles"


def test_budgets_that_shrink_or_drop_the_key_region_and_one_that_fits_nothing(crop):
    """Where the planner shrinks the key region, drops it (text only), or cannot send at all; the budgets
    are the text-only frame's symbols on one MCS (the shipped PER table decides the rest)."""
    from semcom.eval.schemes import OursAdaptScheme, text_only_pdus
    from semcom.radio.link_adaptation import channel_symbols
    from semcom.radio.mcs import mcs_by_name

    text_only = text_only_pdus(OursAdaptScheme(_config()), crop)

    def text_symbols(mcs: str) -> int:
        return channel_symbols(text_only, [mcs_by_name(mcs)] * len(text_only))

    # at -2 dB key tiles would be lost on any MCS that fits: text only, though 1.3x its symbols are there
    dropped = _planned(crop, plan_snr_db=-2.0, budget_symbols=text_symbols("bpsk-r14") * 13 // 10)
    plan = dropped.recent_frames[-1].plan
    assert dropped.errors == 0 and plan["key_region"] == "dropped" and plan["key_fraction"] == 0.0
    assert not any(parse_pdu(p).segment == Segment.KEY for p in dropped.recent_frames[-1].pdus)
    assert dropped.recent_frames[-1].key_mcs == "" and plan["mask_key_fraction"] > 0.3
    # at 30 dB with room for the text-only frame on 16qam-r12: the splitter re-run at a smaller key fraction
    shrunk = _planned(crop, plan_snr_db=30.0, budget_symbols=text_symbols("16qam-r12"))
    plan = shrunk.recent_frames[-1].plan
    assert shrunk.errors == 0 and plan["key_region"] == "shrunk"
    assert 0 < plan["key_fraction"] < plan["mask_key_fraction"] / 4
    assert any(parse_pdu(p).segment == Segment.KEY for p in shrunk.recent_frames[-1].pdus)
    # half the text-only frame on the fastest MCS: nothing is sent, and that is counted
    starved = _planned(crop, budget_symbols=text_symbols("16qam-r34") // 2)
    assert (starved.images_sent, starved.errors, starved.pdus_sent) == (0, 1, 0)
    assert "not sent" in starved.last_error and f"{text_symbols('16qam-r34') // 2} symbols" in starved.last_error


def test_budget_options_that_cannot_work_are_refused_when_the_block_is_built():
    with pytest.raises(ValueError, match="not both"):
        semantic_tx(budget_symbols=1000, cbr=0.1, plan_snr_db=10)
    with pytest.raises(ValueError, match="not both, and not negative"):
        semantic_tx(budget_symbols=-1, plan_snr_db=10)
    with pytest.raises(ValueError, match="plan_snr_db"):
        semantic_tx(budget_symbols=1000)
    with pytest.raises(ValueError, match="without endpoint"):
        semantic_tx(budget_symbols=1000, plan_snr_db=10, endpoint="tcp://127.0.0.1:5555")


@pytest.mark.slow
def test_budgeted_loopback_sends_each_pdu_on_its_planned_mcs_within_the_budget(crop):
    link = LinkConfig(snr_db=PLAN_SNR_DB, cbr=1 / 12)
    result, tap, tb = _send_tapped(link, crop)
    sent = tb.tx.recent_frames[-1]
    assert result.plan == sent.plan and result.channel_symbols == sent.plan["symbols"] <= sent.plan["budget_symbols"]
    planned = dict(zip(sent.pdus, sent.pdu_mcs))
    assert tap.seen and all(meta["mcs"] == planned[payload] for meta, payload in tap.seen)
    assert result.reconstruction is not None


@pytest.mark.slow
def test_cli_loopback_with_a_budget_reports_the_plan(tmp_path, crop):
    import json

    from semcom.cli import main
    from semcom.codec.imageio import save_png

    save_png(crop, tmp_path / "crop.png")
    out = tmp_path / "out"
    assert main(["loopback", "--image", str(tmp_path / "crop.png"), "--snr-db", "12", "--cbr", "1/12",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    plan = metrics["plan"]
    assert plan["budget_symbols"] == int(Fraction(1, 12) * 3 * 128 * 192) >= plan["symbols"] == metrics["channel_symbols"]
    assert plan["planned_snr_db"] == 12.0 and plan["key_region"] in ("whole", "shrunk", "dropped")
    assert metrics["key_share"] == plan["key_fraction"]
    image = ["loopback", "--image", str(tmp_path / "crop.png"), "--out", str(out)]
    for refused_by_argparse in (["--cbr", "0"], ["--cbr", "1/12", "--budget-symbols", "9"]):
        with pytest.raises(SystemExit):
            main(image + refused_by_argparse)
    assert main(image + ["--cbr", "1/12", "--key-quality", "50"]) != 0
