"""Preference consistency: one designed row per rule, and the real UltraFeedback and HH-RLHF samples."""

import polars as pl

from alignmix.filters.consistency import PreferenceConsistency, looks_truncated, response_similarity
from alignmix.pipeline.pairwise import pairwise_record, verdict
from tests.filters.rows import by_source_id, jsonl, load_hh, load_ultrafeedback, pref, prefs
from tests.stage_contract import assert_stage_contract

LONG_A = "Paris is the capital of France and its largest city, on the Seine river in the north of the country."
LONG_B = "Paris is the capital of France and its largest city, on the Seine river in the north of the nation."


def designed() -> pl.DataFrame:
    # The judge's own record (alignmix.pipeline.pairwise), and the bare verdict list an outside source may carry.
    pairwise_flip = {"pairwise": pairwise_record([verdict("chosen", "A", "A"), verdict("rejected", "A", "A")])}
    pairwise_same = {"pairwise": [{"first": "chosen", "winner": "chosen"}, {"first": "rejected", "winner": "chosen"}]}
    return prefs(
        pref("keep", "A clear, correct answer.", "A wrong answer.", sc=8.0, sr=3.0, meta=pairwise_same),
        pref("tie", "Answer one.", "Answer two.", sc=7.5, sr=7.5),
        pref("margin", "Answer one.", "Answer two.", sc=7.5, sr=7.0),
        pref("identical", "The  Same answer.", "the same ANSWER.", sc=9.0, sr=2.0),
        pref("near", LONG_A, LONG_B, sc=9.0, sr=2.0),
        pref("truncated", "Fine.", "Cut off", sc=9.0, sr=2.0, meta={"finish_reason": {"chosen": "stop", "rejected": "length"}}),
        pref("position", "Answer one.", "Answer two.", sc=9.0, sr=2.0, meta=pairwise_flip),
        pref("noscores", "Answer one.", "Answer two."),
    )


def test_each_rule_drops_its_row_with_reason_and_detail():
    frame = designed()
    kept, rejected, stats = assert_stage_contract(PreferenceConsistency({"min_margin": 1.0}), frame)
    assert by_source_id(rejected) == {
        "tie": ("score_tie", "7.5 == 7.5"),
        "margin": ("low_margin", "0.5 < 1.0"),
        "identical": ("identical_pair", "1.0"),
        "near": ("near_identical_pair", str(round(response_similarity(LONG_A, LONG_B), 4))),
        "truncated": ("truncated_response", "rejected: finish_reason=length"),
        "position": ("position_inconsistent", "chosen first: chosen; rejected first: rejected"),
    }
    assert sorted(kept["source_id"]) == ["keep", "noscores"]
    assert kept.filter(pl.col("source_id") == "keep")["position_consistent"].to_list() == [True]
    assert stats.dropped["score_tie"] == 1


def test_rules_can_be_switched_off():
    frame = designed()
    stage = PreferenceConsistency(
        {"drop_ties": False, "near_identical": None, "check_truncated": False, "check_position": False}
    )
    _, rejected, _ = assert_stage_contract(stage, frame)
    assert by_source_id(rejected) == {"identical": ("identical_pair", "1.0")}


def test_empty_response_and_truncation_heuristic():
    frame = prefs(pref(0, "Fine answer.", "Ends in the middle of a", sc=5.0, sr=1.0), pref(1, "Good.", "Bad.", sc=5.0, sr=1.0))
    # An empty final turn cannot pass the row builders, so make one the way a broken upstream stage would.
    frame = frame.with_columns(
        pl.when(pl.col("source_id") == "1")
        .then(pl.col("chosen").list.eval(pl.struct(role=pl.element().struct.field("role"), content=pl.lit(" "))))
        .otherwise(pl.col("chosen"))
        .alias("chosen")
    )
    _, rejected, _ = assert_stage_contract(PreferenceConsistency({"truncation_heuristic": True}), frame)
    assert by_source_id(rejected) == {"0": ("truncated_response", "rejected: ends mid-sentence"), "1": ("empty_response", "chosen")}
    assert looks_truncated("```python\nprint(1)\n") and not looks_truncated("Done.")


def test_ultrafeedback_score_ties_are_counted_exactly(shared_data):
    frame, errors = load_ultrafeedback(shared_data)
    assert errors == {} and frame.height == 200
    raw = jsonl(shared_data / "ultrafeedback" / "eval_clean.jsonl")
    ties = {str(i) for i, r in enumerate(raw) if r["metadata"]["score_chosen"] == r["metadata"]["score_rejected"]}
    assert len(ties) == 25
    _, rejected, stats = assert_stage_contract(PreferenceConsistency(), frame)
    assert stats.dropped["score_tie"] == 25
    assert set(rejected.filter(pl.col("drop_reason") == "score_tie")["source_id"]) == ties


def test_hh_rlhf_identical_pairs(shared_data):
    frame, errors = load_hh(shared_data)
    raw = jsonl(shared_data / "hh_rlhf" / "test_prefs.jsonl")
    same = {str(i) for i, r in enumerate(raw) if r["chosen"] == r["rejected"]}
    assert len(same) == 6 and not same & {str(i) for i in errors}
    _, rejected, stats = assert_stage_contract(PreferenceConsistency(), frame)
    assert stats.dropped["identical_pair"] == 6
    assert set(rejected.filter(pl.col("drop_reason") == "identical_pair")["source_id"]) == same
