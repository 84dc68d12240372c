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
