"""The row schemas and the stage contract, on tiny designed rows."""

from __future__ import annotations

import hashlib
import unicodedata

import orjson
import polars as pl
import pytest
from pydantic import ValidationError

from alignmix.pipeline.schema import (
    PREFERENCE_SCHEMA,
    RowError,
    check_frame,
    normalize_text,
    preference_row,
    sft_row,
    to_arrow,
    to_frame,
)
from alignmix.pipeline.stage import Stage, StageConfig, decide, keep_all
from tests.stage_contract import assert_stage_contract

HI = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def test_content_id_follows_its_documented_recipe():
    row = sft_row([{"role": "user", "content": "Cafe\u0301 "}, {"role": "assistant", "content": "Oui"}],
                  source="s", source_id="0")
    key = {"messages": [["user", unicodedata.normalize("NFC", "Cafe\u0301")], ["assistant", "Oui"]]}
    expected = hashlib.blake2b(orjson.dumps(key, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()
    assert row["id"] == expected
    # lineage and scores are not content
    assert sft_row(HI, source="a", source_id="1")["id"] == sft_row(HI, source="b", source_id="9", meta={"x": 1})["id"]
    p1 = preference_row("Hi", HI, HI[:1] + [{"role": "assistant", "content": "no"}], score_chosen=1, source="a", source_id="0")
    p2 = preference_row("Hi", HI, HI[:1] + [{"role": "assistant", "content": "no"}], score_chosen=9, source="b", source_id="5")
    assert p1["id"] == p2["id"] != sft_row(HI, source="a", source_id="0")["id"]


@pytest.mark.parametrize(
    ("messages", "reason", "field"),
    [
        (None, "missing_field", "messages"),
        ("text", "bad_type", "messages"),
        ([], "empty_turn", "messages"),
        ([{"role": "bot", "content": "x"}], "bad_role", "messages[0].role"),
        ([{"role": "user", "content": 3}], "bad_type", "messages[0].content"),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " \n"}], "empty_turn", "messages[1].content"),
        ([{"role": "user", "content": "Hi"}], "not_ending_with_assistant", "messages"),
        ([{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}], "bad_role", "messages"),
    ],
)
def test_each_invalid_conversation_has_its_reason(messages, reason, field):
    with pytest.raises(RowError) as err:
        sft_row(messages, source="s", source_id="0")
    assert (err.value.reason, err.value.field) == (reason, field)


def test_preference_scores_must_be_numbers():
    with pytest.raises(RowError) as err:
        preference_row("Hi", HI, HI, score_chosen="9", source="s", source_id="0")
    assert (err.value.reason, err.value.field) == ("bad_type", "score_chosen")
    assert preference_row("Hi", HI, HI, score_chosen=9, source="s", source_id="0")["score_chosen"] == 9.0


def test_frames_have_the_exact_schema_even_when_empty():
    row = preference_row("Hi", HI, HI, source="s", source_id="0")
    assert to_arrow(to_frame([row], "preference")).schema == PREFERENCE_SCHEMA
    assert to_arrow(to_frame([], "preference")).schema == PREFERENCE_SCHEMA
    assert check_frame(to_frame([row], "preference")) == "preference"
    assert normalize_text("  Hello\u00a0  WORLD\n") == "hello world"


class MaxWordsConfig(StageConfig):
    max_words: int = 3


class MaxWords(Stage[MaxWordsConfig]):
    """A toy stage: drop conversations whose last turn has more than `max_words` words."""

    name = "max_words"
    config_class = MaxWordsConfig

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        words = pl.col("messages").list.last().struct.field("content").str.split(" ").list.len()
        scored = keep_all(frame).with_columns(words.alias("words"))
        return decide(scored, pl.col("words") > self.config.max_words, "too_long", pl.col("words"))


def test_stage_contract_on_a_toy_stage():
    rows = [sft_row([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": " ".join(["w"] * i)}],
                    source="s", source_id=str(i)) for i in range(1, 6)]
    kept, rejected, stats = assert_stage_contract(MaxWords({"max_words": 3}), to_frame(rows, "sft"))
    assert kept["source_id"].to_list() == ["1", "2", "3"]
    assert rejected.select("source_id", "drop_reason", "drop_detail").rows() == [("4", "too_long", "4"),
                                                                                ("5", "too_long", "5")]
    assert stats.dropped == {"too_long": 2} and stats.config == {"max_words": 3}
    with pytest.raises(ValidationError, match="max_wrds"):
        MaxWords({"max_wrds": 3})  # a typo in a recipe never passes silently


def test_row_errors_survive_pickling_with_all_fields():
    import pickle

    err = pickle.loads(pickle.dumps(RowError("empty_turn", "messages[1].content", "the assistant turn is empty")))
    assert (err.reason, err.field, err.detail()) == ("empty_turn", "messages[1].content",
                                                     "messages[1].content: the assistant turn is empty")
