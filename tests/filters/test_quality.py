"""Quality heuristics: one designed row per rule, on preference and SFT rows."""

import polars as pl

from alignmix.filters.quality import QualityFilter, refusal, repeated_ngram_ratio
from tests.filters.rows import by_source_id, pref, prefs, sft, sfts
from tests.stage_contract import assert_stage_contract

GOOD = "Here is a clear answer that explains the idea in a few plain sentences, with an example to make it concrete."
LOOP = " ".join(["I like trains and"] * 12)
CODE_OPEN = "Here is the code:\n```python\nprint('hi')\n"
CODE_CLOSED = "Here is the code:\n```python\nprint('hi')\n```\nDone."


def _blank_turn(frame: pl.DataFrame, source_id: str, column: str, turn: int) -> pl.DataFrame:
    # Row builders reject empty turns, so make one the way a broken upstream step would.
    blank = pl.col(column).list.eval(
        pl.struct(
            role=pl.element().struct.field("role"),
            content=pl.when(pl.int_range(pl.len()) == turn).then(pl.lit("   ")).otherwise(pl.element().struct.field("content")),
        )
    )
    return frame.with_columns(pl.when(pl.col("source_id") == source_id).then(blank).otherwise(pl.col(column)).alias(column))


def test_each_rule_drops_its_row_with_reason_and_detail():
    frame = prefs(
        pref("good", GOOD, "A worse answer."),
        pref("empty", GOOD, "A worse answer."),
        pref("loop", LOOP, "A worse answer."),
        pref("refusal", "I'm sorry, but I can't help with that.", "Sure, here it is."),
        pref("fence", CODE_OPEN, "No code."),
        pref("fence_ok", CODE_CLOSED, "No code."),
        pref("rejected_loop", GOOD, LOOP),
    )
    frame = _blank_turn(frame, "empty", "rejected", 1)
    kept, rejected, stats = assert_stage_contract(QualityFilter(), frame)
    assert by_source_id(rejected) == {
        "empty": ("empty_turn", "rejected[1]"),
        "loop": ("repeated_ngrams", f"chosen: {repeated_ngram_ratio(LOOP, 3)} > 0.3 (3-grams)"),
        "refusal": ("refusal_only", "chosen: i'm sorry"),
        "fence": ("unclosed_code_fence", "chosen: 1 fences"),
    }
    assert sorted(kept["source_id"]) == ["fence_ok", "good", "rejected_loop"]
    assert kept.filter(pl.col("source_id") == "fence_ok")["code_fences"].to_list() == [2]
    # Checking both responses also catches the rejected one's loop.
    _, rejected, _ = assert_stage_contract(QualityFilter({"responses": "both"}), frame)
    assert by_source_id(rejected)["rejected_loop"][0] == "repeated_ngrams"


def test_sft_rows_and_switches():
    frame = sfts(sft(0, "Question?", GOOD), sft(1, "Question?", "I apologize, I cannot do that."), sft(2, "Q?", LOOP))
    _, rejected, _ = assert_stage_contract(QualityFilter(), frame)
    assert by_source_id(rejected) == {
        "1": ("refusal_only", "response: i apologize"),
        "2": ("repeated_ngrams", f"response: {repeated_ngram_ratio(LOOP, 3)} > 0.3 (3-grams)"),
    }
    _, rejected, _ = assert_stage_contract(QualityFilter({"refusal_max_words": None, "max_repeated_ngram_ratio": None}), frame)
    assert rejected.height == 0


def test_helpers():
    assert repeated_ngram_ratio("a b c a b c a b c", 3) == 0.571429
    assert repeated_ngram_ratio("a b", 3) == 0.0
    assert refusal("As an AI language model, I cannot browse the web.", 40) == "as an ai language model, i cannot"
    assert refusal("Sure. I cannot wait to help!", 40) is None  # a refusal must open the response
    assert refusal("I'm sorry " + "word " * 50, 40) is None  # long answers that start with an apology still answer


def test_repeated_ngrams_and_refusals_on_real_responses_match_the_per_text_rules(shared_data):
    """The stage counts words once per response (case folded); the per-text functions split the text themselves:
    the same ratios, refusals and drops on every real UltraFeedback and HH-RLHF response and on loops of them."""
    from alignmix.filters.quality import words_repeated_ngram_ratio
    from tests.filters.rows import jsonl

    raw = jsonl(shared_data / "ultrafeedback" / "eval_clean.jsonl")
    raw += jsonl(shared_data / "hh_rlhf" / "test_prefs.jsonl")
    texts = [r[side] for r in raw for side in ("chosen", "rejected") if r[side].strip()]
    texts += [" ".join([t.split(".")[0] + "."] * 8) for t in texts[:400]]  # loops of real sentences

    def by_tuples(text: str, n: int) -> float:  # the rule as first written
        w = text.casefold().split()
        total = len(w) - n + 1
        return 0.0 if total <= 0 else round(1.0 - len({tuple(w[i : i + n]) for i in range(total)}) / total, 6)

    for n in (1, 2, 3, 5):
        assert [words_repeated_ngram_ratio(t.casefold().split(), n) for t in texts] == [by_tuples(t, n) for t in texts]
    assert [refusal(t, 40, len(t.casefold().split())) for t in texts] == [refusal(t, 40) for t in texts]
    frame = prefs(*[pref(i, t, "A worse answer.") for i, t in enumerate(texts)])
    kept, rejected, stats = assert_stage_contract(QualityFilter(), frame)
    looping = sum(len(t.split()) >= 20 and by_tuples(t, 3) > 0.3 for t in texts)
    assert stats.dropped["repeated_ngrams"] == looping == 360
    kept_ids = set(kept["source_id"])
    assert kept["repeated_ngram_ratio"].to_list() == [
        by_tuples(t, 3) if len(t.split()) >= 20 else 0.0 for i, t in enumerate(texts) if str(i) in kept_ids]
