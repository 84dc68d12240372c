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


def _real_pairs(shared_data) -> tuple[pl.DataFrame, list[str], list[str]]:
    """The real UltraFeedback and HH-RLHF pairs through their adapters, plus, for more pairs near the threshold,
    each chosen response against itself with one word in twenty changed and against the next row's chosen."""
    from alignmix.filters.normalize import final_turn

    frame = pl.concat([load_ultrafeedback(shared_data)[0], load_hh(shared_data)[0]])
    texts = frame.select(final_turn("chosen").alias("c"), final_turn("rejected").alias("r"))
    chosen, rejected = texts["c"].to_list(), texts["r"].to_list()
    edited = [" ".join("changed" if k % 20 == 7 else w for k, w in enumerate(c.split())) for c in chosen]
    return frame, chosen + chosen + chosen[:-1], rejected + edited + chosen[1:]


def test_bounded_similarity_is_difflib_wherever_a_pair_can_be_near_identical(shared_data):
    import difflib

    from alignmix.filters.consistency import pair_similarities, similarity_bound

    _, chosen, rejected = _real_pairs(shared_data)
    ratio = [response_similarity(a, b) for a, b in zip(chosen, rejected)]
    quick = [difflib.SequenceMatcher(None, a.casefold().split(), b.casefold().split()).quick_ratio()
             for a, b in zip(chosen, rejected)]
    assert [similarity_bound(a.casefold().split(), b.casefold().split()) for a, b in zip(chosen, rejected)] == quick
    assert pair_similarities(chosen, rejected, 0.9, exact=True) == ratio
    for threshold in (0.5, 0.9, 0.95):
        fast = pair_similarities(chosen, rejected, threshold)
        assert [f >= threshold for f in fast] == [r >= threshold for r in ratio]  # never a different decision
        exact = [i for i, q in enumerate(quick) if q >= threshold]
        assert [fast[i] for i in exact] == [ratio[i] for i in exact]  # the same float where it could matter
        assert all(fast[i] == quick[i] >= ratio[i] for i in set(range(len(ratio))) - set(exact))
    near = [i for i, r in enumerate(ratio) if r >= 0.9]
    assert len(ratio) == 3587 and len(near) == 1170  # 8 real pairs, 6 of them identical, and the edited copies


def test_stage_drops_the_same_pairs_bounded_or_exact_on_real_data(shared_data):
    real, chosen, rejected = _real_pairs(shared_data)
    n = real.height
    edits = zip(chosen[:n], rejected[n : 2 * n])
    edited = prefs(*[pref(f"edited-{i}", c, e, sc=9.0, sr=2.0) for i, (c, e) in enumerate(edits)])
    frame = pl.concat([real, edited], how="diagonal_relaxed")
    runs = {m: assert_stage_contract(PreferenceConsistency({"similarity": m}), frame) for m in ("bounded", "exact")}
    (kept_b, rej_b, stats_b), (kept_e, rej_e, stats_e) = runs["bounded"], runs["exact"]
    assert rej_b.select("id", "drop_reason", "drop_detail").equals(rej_e.select("id", "drop_reason", "drop_detail"))
    assert kept_b["id"].to_list() == kept_e["id"].to_list() and stats_b.dropped == stats_e.dropped
    # short responses (under 8 words) have no word changed: identical; 6 real pairs are identical too
    assert stats_b.dropped == {"identical_pair": 117, "near_identical_pair": 1052, "score_tie": 25}
    # every pair records difflib's ratio where the bound reaches 0.9 and the bound (below 0.9) elsewhere
    exact = PreferenceConsistency({"similarity": "exact"}).score(frame)["pair_similarity"]
    bounded = PreferenceConsistency().score(frame)["pair_similarity"]
    assert ((bounded >= 0.9) == (exact >= 0.9)).all() and (bounded >= exact).all()
    assert bounded.filter(exact >= 0.9).equals(exact.filter(exact >= 0.9))
