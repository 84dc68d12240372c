"""Length limits, the cut of abnormal pairs, the corpus picture and the balancing of length buckets: designed
rows that trip each rule, and the default stage on the real UltraFeedback and HH-RLHF samples after the default
consistency stage, as a curation runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from alignmix.filters.apply import run_stage
from alignmix.filters.consistency import PreferenceConsistency
from alignmix.filters.length import LengthFilter, balance_mask, bucket_count, length_picture
from alignmix.pipeline.ingest import read_rows
from alignmix.pipeline.recipe import SourceSpec
from tests.filters.rows import by_source_id, pref, prefs, sft, sfts
from tests.stage_contract import assert_stage_contract

NO_BALANCE = {"balance": False}


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_each_limit_and_the_abnormal_pair_cut_drop_their_row():
    frame = prefs(
        pref("ok", words(10), words(8), prompt=words(5)),
        pref("short_prompt", words(10), words(8), prompt=words(1)),
        pref("long_prompt", words(10), words(8), prompt=words(40)),
        pref("short_resp", words(10), words(2), prompt=words(5)),
        pref("long_resp", words(600), words(500), prompt=words(5)),
        pref("ratio_hi", words(400), words(20), prompt=words(5)),
        pref("ratio_lo", words(3), words(60), prompt=words(5)),
        pref("short_both", words(3), words(32), prompt=words(5)),  # 10.7x, but only 29 words apart: a normal pair
        pref("ratio_9", words(90), words(10), prompt=words(5)),  # 9x: long-winded, not abnormal
    )
    stage = LengthFilter({"min_prompt": 2, "max_prompt": 30, "min_response": 3, "max_response": 550, **NO_BALANCE})
    kept, rejected, stats = assert_stage_contract(stage, frame)
    assert by_source_id(rejected) == {
        "short_prompt": ("prompt_too_short", "prompt: 1 < 2"),
        "long_prompt": ("prompt_too_long", "prompt: 40 > 30"),
        "short_resp": ("response_too_short", "rejected: 2 < 3"),
        "long_resp": ("response_too_long", "chosen: 600 > 550"),
        "ratio_hi": ("length_ratio", "20.0 (chosen 400, rejected 20)"),
        "ratio_lo": ("length_ratio", "0.05 (chosen 3, rejected 60)"),
    }
    assert kept["source_id"].to_list() == ["ok", "short_both", "ratio_9"]
    bias = stats.distributions["length_bias"]
    assert bias["before"]["pairs"] == 9 and bias["after"]["pairs"] == 3
    assert bias["before"]["chosen_longer"] == 7 and bias["before"]["chosen_shorter"] == 2  # ratio_lo, short_both
    assert bias["after"]["mean_chosen_len"] == round(103 / 3, 3) and bias["after"]["mean_rejected_len"] == 16.667
    assert bias["min_length_gap"] == 30 and bias["max_length_ratio"] == 10.0
    assert stats.distributions["len_ratio_before"]["n"] == 9


def test_the_ratio_and_the_gap_are_inclusive_thresholds_in_each_unit():
    frame = prefs(
        pref("at_10x", words(100), words(10)),  # exactly 10x: kept
        pref("over_10x", words(101), words(10)),
        pref("gap_30", words(33), words(3)),  # 11x and exactly 30 words longer: dropped
        pref("gap_29", words(32), words(3)),  # 10.7x but 29 words longer: kept
    )
    _, rejected, _ = assert_stage_contract(LengthFilter(NO_BALANCE), frame)
    assert by_source_id(rejected) == {"over_10x": ("length_ratio", "10.1 (chosen 101, rejected 10)"),
                                      "gap_30": ("length_ratio", "11.0 (chosen 33, rejected 3)")}
    # Without the gap the ratio alone decides; the old default (2x, no gap) drops all four.
    assert by_source_id(LengthFilter({"min_length_gap": 0, **NO_BALANCE}).run(frame).rejected).keys() == {
        "over_10x", "gap_30", "gap_29"}
    assert LengthFilter({"max_length_ratio": 2.0, "min_length_gap": 0, **NO_BALANCE}).run(frame).stats.dropped == {
        "length_ratio": 4}
    # In characters the default gap is 150: "abcdefghijk" against "a" is 11x but 10 characters apart.
    chars = prefs(pref(0, "abcdefghijk", "a"), pref(1, "x" * 170, "y" * 16))
    _, rejected, stats = assert_stage_contract(LengthFilter({"unit": "chars", **NO_BALANCE}), chars)
    assert by_source_id(rejected) == {"1": ("length_ratio", "10.625 (chosen 170, rejected 16)")}
    assert stats.distributions["length_bias"]["min_length_gap"] == 150


def test_sft_rows_have_prompt_and_response_lengths():
    frame = sfts(sft(0, words(3), words(4)), sft(1, words(3), words(100)))
    kept, rejected, stats = assert_stage_contract(LengthFilter({"max_response": 50}), frame)
    assert by_source_id(rejected) == {"1": ("response_too_long", "response: 100 > 50")}
    assert kept["response_len"].to_list() == [4] and "len_ratio" not in kept.columns
    assert "length_bias" not in stats.distributions


def test_prompt_rows_are_measured_by_their_prompt_alone(monkeypatch):
    import alignmix.filters.length as length

    # Prompt rows (messages ending with a user turn) are another session's work in schema.row_kind; the stage's
    # branch for them is exercised here through the kind it will report.
    frame = sfts(sft(0, words(3), words(4)), sft(1, words(12), words(4))).with_columns(
        pl.col("messages").list.head(1))
    monkeypatch.setattr(length, "row_kind", lambda f: "prompt")
    kept, rejected, stats = assert_stage_contract(LengthFilter({"max_prompt": 10, "min_response": 5}), frame)
    assert by_source_id(rejected) == {"1": ("prompt_too_long", "prompt: 12 > 10")}
    assert "response_len" not in kept.columns and set(stats.distributions) == {"prompt_len"}


def test_the_picture_counts_ties_apart_and_takes_three_means_of_the_pair_ratio():
    c, r = np.array([5, 12, 40, 3, 300]), np.array([5, 6, 50, 1, 1])
    pic = length_picture(c, r, np.array([0, 0, 1, 1, 1]), [8.0])
    assert (pic["pairs"], pic["chosen_longer"], pic["chosen_shorter"], pic["ties"]) == (5, 3, 1, 1)
    assert pic["share_chosen_longer"] == 0.75  # 3 of the 4 pairs whose lengths differ
    assert pic["ratio_of_means"] == round(360 / 63, 4)
    ratios = np.array([1, 2, 0.8, 3, 300])
    assert pic["pair_ratio"] == {"pairs": 5, "mean": round(ratios.mean(), 4), "median": 2.0,
                                 "geometric_mean": round(float(np.exp(np.log(ratios).mean())), 4)}
    assert [(b["label"], b["pairs"], b["ties"], b["share_chosen_longer"]) for b in pic["buckets"]] == [
        ("under 8", 2, 1, 1.0), ("8 and over", 3, 0, 0.6667)]
    assert length_picture(np.array([]), np.array([]), np.array([]), []) == {"pairs": 0}


def test_balance_brings_a_bucket_to_the_band_edge_and_leaves_ties_and_balanced_buckets_alone():
    rows = [pref(f"L{i}", words(12 + i % 3), words(10)) for i in range(12)]  # short bucket: chosen longer 12
    rows += [pref(f"S{i}", words(9), words(10)) for i in range(9)]  # chosen shorter 9: share 12/21 = 0.571
    rows += [pref(f"E{i}", words(10), words(10)) for i in range(3)]  # ties: never dropped
    rows += [pref(f"l{i}", words(200 + i), words(190)) for i in range(12)]  # long bucket: 12 vs 12, share 0.5
    rows += [pref(f"s{i}", words(190), words(200 + i)) for i in range(12)]
    frame = prefs(*rows)
    config = {"balance_buckets": 2, "min_bucket_pairs": 10}
    kept, rejected, stats = assert_stage_contract(LengthFilter(config), frame)
    # The band 0.45-0.55 allows floor(9 * 0.55 / 0.45) = 11 longer against 9 shorter: one pair goes.
    assert stats.dropped == {"length_balance": 1}
    (sid, reason, detail), = rejected.select("source_id", "drop_reason", "drop_detail").iter_rows()
    assert sid.startswith("L") and reason == "length_balance"
    assert detail == "bucket 0 of 2 (mean length under 103.5): chosen longer in 12, shorter in 9"
    bias = stats.distributions["length_bias"]
    assert bias["bucket_edges"] == [103.5]  # the median of the pairs' mean lengths, between the two groups
    assert [b["share_chosen_longer"] for b in bias["before"]["buckets"]] == [0.5714, 0.5]
    assert [b["share_chosen_longer"] for b in bias["after"]["buckets"]] == [0.55, 0.5]
    assert bias["after"]["buckets"][0]["ties"] == 3 and kept["len_bucket"].to_list().count(1) == 24
    # Tolerance 0 is exact halves in every bucket (the old `balance: true`): 3 pairs go.
    exact = LengthFilter({**config, "balance_tolerance": 0}).run(frame)
    assert exact.stats.dropped == {"length_balance": 3}
    assert bucket_shares(exact.stats.distributions["length_bias"]["after"]) == [0.5, 0.5]


def test_balance_is_seeded_and_does_not_depend_on_the_row_order():
    rows = [pref(f"L{i}", words(12), words(10)) for i in range(30)]
    rows += [pref(f"S{i}", words(9), words(10)) for i in range(10)]
    frame = prefs(*rows)
    dropped = lambda f, seed: set(LengthFilter({"seed": seed}).run(f).rejected["source_id"])  # noqa: E731
    first = dropped(frame, 0)
    assert len(first) == 30 - 12  # floor(10 * 0.55 / 0.45) = 12 longer kept
    assert dropped(frame.sample(fraction=1.0, shuffle=True, seed=3), 0) == first
    assert dropped(frame, 1) != first


def test_bucket_count_shrinks_with_the_sample_and_a_fully_biased_bucket_empties():
    assert [bucket_count(n, 5, 30) for n in (0, 29, 60, 149, 150, 10_000)] == [1, 1, 2, 4, 5, 5]
    # One bucket where chosen is always the longer: the label is length alone, and balancing removes it all...
    frame = prefs(*[pref(i, words(20 + i % 5), words(10)) for i in range(30)])
    assert LengthFilter().run(frame).stats.dropped == {"length_balance": 30}
    # ...but fewer pairs than `min_bucket_pairs` cannot tell a bias from chance: measured, not balanced.
    few = LengthFilter().run(frame.head(29)).stats
    assert few.dropped == {} and few.distributions["length_bias"]["after"]["share_chosen_longer"] == 1.0
    assert few.distributions["length_bias"]["balanced"] is False
    drop, _ = balance_mask(np.array([3, 3]), np.array([1, 1]), np.zeros(2, int), np.array([True, False]), [], 0.05, 0)
    assert drop.tolist() == [True, False]  # a pair an earlier rule dropped is not counted or dropped again


def test_sharded_scoring_then_one_balancing_equals_the_whole_run():
    """The curation engine scores a row-local stage per shard and decides once: balancing happens there."""
    rows = [pref(f"L{i}", words(12 + i), words(10)) for i in range(40)] + [pref(f"S{i}", words(9), words(10 + i))
                                                                            for i in range(20)]
    frame = prefs(*rows)
    stage = LengthFilter()
    assert stage.row_local
    whole = stage.run(frame)
    sharded = run_stage(stage, frame, shard_rows=7)
    assert whole.stats.dropped == sharded.stats.dropped and whole.stats.dropped["length_balance"] > 0
    assert sharded.kept.equals(whole.kept) and sharded.rejected.equals(whole.rejected)


def test_tokens_need_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        LengthFilter({"unit": "tokens"})


def test_words_split_on_any_whitespace_and_chars_count_every_character():
    frame = prefs(pref(0, "a \n\n b\tc", "d e f"))
    assert LengthFilter().run(frame).kept["chosen_len"].to_list() == [3]
    assert LengthFilter({"unit": "chars"}).run(frame).kept["chosen_len"].to_list() == [8]


# --- the real samples --------------------------------------------------------------------------------------------


def curated(shared_data: Path, name: str, path: str) -> tuple[int, pl.DataFrame]:
    """The rows ingest reads from a real file, through the default consistency stage: what `length` sees."""
    rows = read_rows(SourceSpec(name=name, path=str(shared_data / path)))
    return rows.height, PreferenceConsistency().run(rows).kept


def bucket_shares(picture: dict) -> list[float]:
    return [b["share_chosen_longer"] for b in picture["buckets"]]


def test_default_stage_on_real_ultrafeedback(shared_data: Path):
    rows_in, frame = curated(shared_data, "uf", "ultrafeedback/eval_clean.jsonl")
    assert (rows_in, frame.height) == (200, 175)  # consistency: score_tie 25
    kept, rejected, stats = assert_stage_contract(LengthFilter(), frame)
    assert stats.dropped == {"length_ratio": 17, "length_balance": 16}
    assert rejected.height / frame.height <= 0.20 and kept.height == 142
    bias = stats.distributions["length_bias"]
    before, after = bias["before"], bias["after"]
    assert bias["bucket_edges"] == [38.4, 85.1, 178.1, 303.9]
    assert (before["ratio_of_means"], before["pair_ratio"]["geometric_mean"], before["share_chosen_longer"]) == (
        1.0374, 0.9134, 0.4615)
    assert bucket_shares(before) == [0.3448, 0.4286, 0.4571, 0.6286, 0.4286]
    assert bucket_shares(after) == [0.4706, 0.52, 0.4545, 0.5357, 0.4545]
    assert all(0.45 <= s <= 0.55 for s in bucket_shares(after))
    assert (after["ratio_of_means"], after["share_chosen_longer"], after["ties"]) == (0.9988, 0.4853, 6)
    # The abnormal pairs are the one-word answers against paragraphs, e.g. "yes" against 143 words.
    ratio = rejected.filter(pl.col("drop_reason") == "length_ratio")
    assert "0.007 (chosen 1, rejected 143)" in ratio["drop_detail"].to_list()


def test_default_stage_on_real_hh_rlhf(shared_data: Path):
    rows_in, frame = curated(shared_data, "hh", "hh_rlhf/test_prefs.jsonl")
    assert (rows_in, frame.height) == (996, 989)  # consistency: identical_pair 6, near_identical_pair 1
    kept, _, stats = assert_stage_contract(LengthFilter(), frame)
    assert stats.dropped == {"length_ratio": 35, "length_balance": 2} and kept.height == 952
    before, after = stats.distributions["length_bias"]["before"], stats.distributions["length_bias"]["after"]
    assert (before["ratio_of_means"], before["share_chosen_longer"], before["ties"]) == (1.0272, 0.5254, 24)
    assert bucket_shares(before) == [0.5116, 0.53, 0.5381, 0.5505, 0.4949]  # only bucket 3 is outside the band
    assert all(0.45 <= s <= 0.55 for s in bucket_shares(after))
    # Exact halves (tolerance 0) would cost 54 pairs instead of 2; the old 2x cut cost 454 (46%).
    assert LengthFilter({"balance_tolerance": 0}).run(frame).stats.dropped == {"length_ratio": 35, "length_balance": 54}
    old = LengthFilter({"max_length_ratio": 2.0, "min_length_gap": 0, "balance": False}).run(frame)
    assert old.stats.dropped == {"length_ratio": 454}
